"""The benchmark script: its quick mode runs and writes well-formed results, and every
candidate it times computes what it claims (so the comparison is apples to apples).

No timing is asserted: the figures depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"
BACKENDS = ("numpy", "torch", "jax", "tensorflow")
EXPECTED_MODES = {
    "numpy": {"eager fwd"},
    "torch": {"eager fwd", "eager fwd+bwd", "compiled fwd+bwd"},
    "jax": {"eager fwd", "eager fwd+bwd", "compiled fwd+bwd"},
    "tensorflow": {"eager fwd", "eager fwd+bwd", "compiled fwd+bwd"},
}
MASKED = ("masked_mse", "naive", "where")  # the three masked means: the same number


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("masked_losses_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()


# ---- the quick run and its outputs ---------------------------------------------------------


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    for name in BACKENDS[1:]:
        require(name)
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.mark.slow
def test_quick_results_cover_every_backend_mode_and_candidate(
    quick_results: tuple[dict, str],
) -> None:
    results, _ = quick_results
    rows = results["rows"]
    cells: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        assert set(r) == {"backend", "size", "mode", "candidate", "median_us", "ratio_to_naive"}
        key = (r["backend"], r["size"], r["mode"])
        assert r["candidate"] not in cells.get(key, {}), f"duplicate row {r}"
        cells.setdefault(key, {})[r["candidate"]] = r
    modes_seen = {b: {m for (bb, _, m) in cells if bb == b} for b in BACKENDS}
    assert modes_seen == EXPECTED_MODES
    for (backend, size, mode), cands in cells.items():
        assert size in bench.QUICK_SIZES, size
        assert set(cands) == set(bench.candidates_for(mode)), (backend, size, mode)
        naive = cands["naive"]["median_us"]
        for r in cands.values():
            assert math.isfinite(r["median_us"]), r
            assert r["median_us"] > 0, r
            assert r["ratio_to_naive"] == pytest.approx(r["median_us"] / naive, rel=1e-9), r
        assert cands["naive"]["ratio_to_naive"] == pytest.approx(1.0)
    # every eager mode at every quick size; compiled at least at one size per compiler
    for backend, modes in EXPECTED_MODES.items():
        for mode in modes - {"compiled fwd+bwd"}:
            for size in bench.QUICK_SIZES:
                assert (backend, size, mode) in cells, (backend, size, mode)
    imports = results["import_s"]
    assert set(imports) >= {"import masked_losses", bench.IMPORT_BASE}
    assert all(math.isfinite(v) and v > 0 for v in imports.values())
    assert results["meta"]["quick"] is True
    for check in results["targets"]:  # each target cell measured in the quick run is checked
        assert check["met"] == (check["ratio"] <= check["max"])


@pytest.mark.slow
def test_quick_markdown_has_the_table(quick_results: tuple[dict, str]) -> None:
    results, md = quick_results
    lines = md.splitlines()
    header = "| backend | size | mode | masked_mse | naive | where | unmasked | floor "
    assert any(line.startswith(header) for line in lines)
    table = [line for line in lines if line.startswith(tuple(f"| {b} |" for b in BACKENDS))]
    n_cells = len({(r["backend"], r["size"], r["mode"]) for r in results["rows"]})
    assert len(table) == n_cells
    for r in results["rows"]:
        if r["candidate"] == "masked_mse":
            row = f"| {r['backend']} | {r['size']} | {r['mode']} | "
            match = [line for line in table if line.startswith(row)]
            assert len(match) == 1, row
            assert match[0].rstrip(" |").endswith(f"{r['ratio_to_naive']:.2f}")
    assert "`import masked_losses`" in md
    assert "| target | backend | size |" in md


# ---- the candidates compute what they claim -------------------------------------------------


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=np.float64)


def oracle(candidate: str, data: tuple[np.ndarray, ...]) -> tuple[float, np.ndarray]:
    """float64 value and gradient with respect to pred of each candidate."""
    p, t, m = (a.astype(np.float64) for a in data)
    if candidate in MASKED:  # mean over the valid subset
        n = m.sum()
        return float(((p - t)[m > 0] ** 2).sum() / n), 2 * (p - t) * m / n
    if candidate == "unmasked":
        return float(((p - t) ** 2).mean()), 2 * (p - t) / p.size
    assert candidate == "floor"
    return float(p.ravel() @ p.ravel()), 2 * p


def check_backend(backend: str, modes: tuple[str, ...]) -> None:
    make_fns, make_modes = bench.BACKENDS[backend]
    fns = make_fns()
    for shape in [(64, 3), (1000,)]:
        data = bench.make_data(shape, seed=1)
        assert not any(np.isnan(a).any() for a in data if a.dtype.kind == "f")
        assert 0 < data[2].sum() < data[2].size  # both valid and masked entries
        runners = make_modes(fns, data)
        for mode in modes:
            if mode not in runners:
                continue
            masked_grads = {}
            for cand in bench.candidates_for(mode):
                out = runners[mode](fns[cand])()
                want_value, want_grad = oracle(cand, data)
                if "bwd" in mode:
                    value, grad = out
                    grad = to_numpy(grad)
                    np.testing.assert_allclose(
                        grad, want_grad, rtol=1e-5, atol=1e-7, err_msg=f"{mode} {cand}"
                    )
                    if cand in MASKED:
                        masked_grads[cand] = grad
                else:
                    value = out
                np.testing.assert_allclose(
                    to_numpy(value), want_value, rtol=1e-5, err_msg=f"{backend} {mode} {cand}"
                )
            if masked_grads:  # the three masked means: the same gradient up to rounding
                for cand in ("naive", "where"):
                    np.testing.assert_allclose(
                        masked_grads[cand], masked_grads["masked_mse"], rtol=1e-5, atol=1e-8
                    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_candidates_agree_eager(backend: str) -> None:
    if backend != "numpy":
        require(backend)
    check_backend(backend, ("eager fwd", "eager fwd+bwd"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
def test_candidates_agree_compiled(backend: str) -> None:
    require(backend)
    check_backend(backend, ("compiled fwd+bwd",))


def test_targets_are_checked_against_the_right_cells() -> None:
    rows = []
    for backend, size, mode, ratio in [
        ("numpy", "1e7", "eager fwd", 0.9), ("torch", "1e7", "eager fwd", 1.1),
        ("jax", "256x3", "eager fwd+bwd", 1.3), ("tensorflow", "1e5", "compiled fwd+bwd", 1.0),
        ("numpy", "1e5", "eager fwd", 5.0),  # not a target cell
    ]:
        rows.append({"backend": backend, "size": size, "mode": mode, "candidate": "masked_mse",
                     "median_us": ratio, "ratio_to_naive": ratio})
    imports = {"import masked_losses": 1.0, bench.IMPORT_BASE: 1.0}
    got = {(c["backend"], c["size"]): c["met"] for c in bench.check_targets(rows, imports)}
    assert got == {("numpy", "1e7"): True, ("torch", "1e7"): False, ("jax", "256x3"): False,
                   ("tensorflow", "1e5"): True, ("-", "-"): True}


def test_tensorflow_xla_kernel_engages_only_under_jit_compile() -> None:
    """The XLA-only TensorFlow kernel (see masked_losses/_fastpath.py) is used where meant."""
    tf = require("tensorflow")
    from masked_losses import _fastpath

    seen: list[bool] = []

    def probe(x: Any) -> Any:
        seen.append(_fastpath._in_xla_context())
        return x * 2

    x = tf.constant([1.0, 2.0])
    probe(x)
    tf.function(probe)(x)
    tf.function(probe, jit_compile=True)(x)
    tf.function(lambda x: tf.function(probe)(x), jit_compile=True)(x)  # nested in XLA
    assert seen == [False, False, True, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 65535, 65536, 65537, 3 * 65536 + 5])
def test_numpy_blocked_kernel_matches_oracle(n: int, dtype: type) -> None:
    """The NumPy fast path works block by block (2**16 entries): check every block edge."""
    from masked_losses import _fastpath, masked_mse

    assert _fastpath._NUMPY_BLOCK == 65536
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(dtype)
    t = rng.standard_normal(n).astype(dtype)
    m = rng.random(n) < 0.5
    m[-1] = True  # an entry in the last (partial) block counts
    t_bad = np.where(m, t, np.nan).astype(dtype)  # NaN wherever masked
    p_bad = np.where(m | (np.arange(n) % 3 > 0), p, np.inf).astype(dtype)
    want = ((p[m].astype(np.float64) - t[m]) ** 2).mean()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    got = masked_mse(p_bad, t_bad, m)
    assert got.dtype == dtype
    np.testing.assert_allclose(float(got), want, rtol=rtol)
    # 2-D and non-contiguous views, and no mask at all
    np.testing.assert_allclose(
        float(masked_mse(p_bad[::-1], t_bad[::-1], m[::-1])), want, rtol=rtol
    )
    want_all = ((p.astype(np.float64) - t) ** 2).mean()
    np.testing.assert_allclose(float(masked_mse(p, t)), want_all, rtol=rtol)
    if n % 5 == 0:
        np.testing.assert_allclose(
            float(masked_mse(p_bad.reshape(5, -1).T, t_bad.reshape(5, -1).T, m.reshape(5, -1).T)),
            want, rtol=rtol,
        )


def test_committed_results_and_docs_agree() -> None:
    """results.md is rendered from results.json, and docs/benchmarks.md quotes its table."""
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    assert results["meta"]["quick"] is False, "commit the results of a full run (make bench)"
    md = (ROOT / "benchmarks" / "results.md").read_text()
    assert md == bench.markdown_table(
        results["rows"], results["import_s"], results["meta"], results["targets"]
    ), "benchmarks/results.md is stale: run `make bench`"
    assert results["targets"] == bench.check_targets(results["rows"], results["import_s"])
    table = [line for line in md.splitlines() if line.startswith("| backend |")
             or line.startswith(tuple(f"| {b} |" for b in BACKENDS))]
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for line in table:
        assert line in page, f"docs/benchmarks.md does not quote this row of results.md: {line}"
    for t in results["targets"]:  # every figure the page reads against a target
        assert f"{t['ratio']:.2f}" in page, t
    assert "assets/benchmarks/results.png" in page
    assert (ROOT / "docs" / "assets" / "benchmarks" / "results.png").stat().st_size > 10_000
