"""The docs are tested: every ```python block runs, and the site builds with --strict.

Each fenced block whose info string starts with ``python`` in ``docs/**/*.md`` and in
``README.md`` is one test (id ``docs/page.md:line``). The blocks of one page run in order in
one fresh namespace, so a block may use names defined by the blocks above it; running a
single block (``-k``) first runs the blocks above it on its page. Tracebacks point at the
Markdown file and line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IN_CI = bool(os.environ.get("CI"))
# A snippet importing one of these is skipped locally when it is not installed (and fails in
# CI, like conftest.require). Anything else missing, e.g. masked_losses.torch, is a failure.
FRAMEWORKS = {"torch", "jax", "jaxlib", "tensorflow", "keras", "optax"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the first code line in the Markdown file
    index: int  # position among the page's python blocks
    source: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def extract_blocks(page: Path) -> list[Block]:
    """The ```python blocks of ``page``, dedented, in order (indented fences included)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = m["info"].strip().split(" ", 1)[0].lstrip("{.").rstrip("}") if m["info"] else ""
        close = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: unclosed code fence")
        if lang == "python":
            code = textwrap.dedent("\n".join(lines[i + 1 : j]))
            blocks.append(Block(page, i + 2, len(blocks), code))
        i = j + 1
    return blocks


# The README's examples are docs too: they run like a page.
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
BLOCKS = [b for page in PAGES for b in extract_blocks(page)]


@dataclasses.dataclass
class _PageRun:
    namespace: dict[str, Any]
    done: int = 0  # number of blocks run so far
    failed: str | None = None  # id of the first block that failed


_RUNS: dict[Path, _PageRun] = {}


def _exec(block: Block, namespace: dict[str, Any]) -> None:
    # Pad with blank lines so that tracebacks name the Markdown file and its line numbers.
    code = compile("\n" * (block.line - 1) + block.source, str(block.page), "exec")
    error: Exception | None = None
    try:
        exec(code, namespace)
    except Exception as exc:
        error = exc
    if error is None:
        return
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    if missing and not IN_CI and missing.split(".")[0] in FRAMEWORKS:
        pytest.skip(f"{missing} is not installed")
    _fail(block, error)


def _fail(block: Block, exc: Exception) -> None:
    # The traceback from the snippet's first line on (linecache shows the Markdown lines);
    # pytest's own rendering would print the whole page above the failing line.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(block.page):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    pytest.fail(f"docs snippet {block.id} failed:\n{text}", pytrace=False)


def _run_through(block: Block) -> None:
    run = _RUNS.get(block.page)
    if run is None:
        run = _RUNS[block.page] = _PageRun({"__name__": f"docs_{block.page.stem}"})
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    while run.done <= block.index:
        current = page_blocks[run.done]
        if run.failed is not None:
            pytest.fail(f"an earlier block on this page failed ({run.failed})", pytrace=False)
        run.done += 1
        try:
            _exec(current, run.namespace)
        except BaseException:
            run.failed = current.id
            raise


def test_docs_have_snippets():
    assert len(BLOCKS) >= 10, [b.id for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_snippet(block: Block):
    _run_through(block)


# ---- the API reference covers the package -------------------------------------------------

_DIRECTIVE = re.compile(r"^::: (masked_losses(?:\.\w+)*)\s*$", re.MULTILINE)


def _documented_modules() -> set[str]:
    return {m for page in (DOCS / "api").glob("*.md") for m in _DIRECTIVE.findall(page.read_text())}


def test_api_reference_names_every_public_module():
    public = {"masked_losses"} | {
        f"masked_losses.{p.stem}"
        for p in (ROOT / "masked_losses").glob("*.py")
        if not p.stem.startswith("_")
    }
    missing = public - _documented_modules()
    assert not missing, f"public modules without an API page (add one to docs/api/): {missing}"


def test_api_reference_covers_every_top_level_name():
    import masked_losses

    core = (DOCS / "api" / "core.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+- (\w+)\s*$", core, re.MULTILINE))
    documented = _documented_modules()
    missing = [
        name
        for name in masked_losses.__all__
        if name != "__version__"
        and name not in listed
        and getattr(masked_losses, name).__module__ not in documented
    ]
    assert not missing, f"top-level names missing from docs/api/core.md: {missing}"


def test_api_reference_modules_exist():
    # docs/_hooks.py turns a missing module into a notice so the site still builds; here it is
    # an error, because the published reference must not show that notice.
    missing = {
        m
        for m in _documented_modules()
        if not (
            ROOT.joinpath(*m.split(".")).with_suffix(".py").is_file()
            or ROOT.joinpath(*m.split("."), "__init__.py").is_file()
        )
    }
    assert not missing, f"the API reference names modules that do not exist: {missing}"


# ---- the experiment page quotes the experiment's results -----------------------------------

EXPERIMENT_DIR = DOCS / "assets" / "experiment"


METRICS = ("accuracy", "head2_rmse", "head3_rmse", "head3_bias")  # the table's columns
_CELL = re.compile(r"([-+\u2212]?\d+\.\d+)\s*±\s*(\d+\.\d+)")


def _page_table(page: str) -> dict[str, list[tuple[float, float]]]:
    """``strategy -> [(mean, std) per metric]`` from the page's Markdown table rows."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(METRICS) and all(_CELL.search(c) for c in cells[1:]):
            values = [_CELL.search(c).groups() for c in cells[1:]]  # type: ignore[union-attr]
            rows[cells[0].strip("`* ")] = [
                (float(m.replace("\u2212", "-")), float(sd)) for m, sd in values
            ]
    return rows


def test_experiment_page_quotes_the_results_of_a_full_run():
    page = (DOCS / "experiment.md").read_text(encoding="utf-8")
    results = EXPERIMENT_DIR / "results.json"
    if not results.is_file():
        pytest.fail(
            "docs/assets/experiment/results.json is missing: run `python examples/multitask.py "
            "--out docs/assets/experiment` and update the table in docs/experiment.md",
            pytrace=False,
        )
    assert "PLACEHOLDER" not in page
    assert (EXPERIMENT_DIR / "results.png").is_file()
    assert "assets/experiment/results.png" in page
    data = json.loads(results.read_text(encoding="utf-8"))
    assert len(data["config"]["seeds"]) >= 3, "the page must quote a full run (>= 3 seeds)"
    table = _page_table(page)
    assert set(table) == set(data["results"]), (set(table), set(data["results"]))
    for strategy, cells in table.items():
        for metric, (mean, std) in zip(METRICS, cells, strict=True):
            stats = data["results"][strategy][metric]
            assert abs(mean - stats["mean"]) <= 6e-4, (strategy, metric, mean, stats)
            assert abs(std - stats["std"]) <= 6e-4, (strategy, metric, std, stats)


# ---- the site builds -----------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    core = (site / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert 'id="masked_losses.masked_mse"' in core
    for page in ("quickstart", "semantics", "experiment", "epsilon-ratio"):
        assert (site / page / "index.html").is_file(), page
    experiment = (site / "experiment" / "index.html").read_text(encoding="utf-8")
    if "results.png" in experiment:
        assert (site / "assets" / "experiment" / "results.png").is_file()
