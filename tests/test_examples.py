"""The examples run and say what is true.

- ``examples/quickstart.py``: its loss functions agree with a float64 NumPy oracle on the
  valid subset (values and autograd gradients), and its printed table says the naive loss is
  NaN where ``masked_mse`` is finite (and 0 on an all-masked batch).
- ``examples/multitask.py``: its data and metrics agree with NumPy oracles, and
  ``--quick`` writes a complete ``results.json`` and a PNG figure.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
IN_CI = bool(os.environ.get("CI"))

NAIVE = "naive  ((p-t)**2*m).sum()/m.sum()"
ZERO = "zero-imputed  mean((p-t0)**2)"
MASKED = "masked_mse(p, t, m)"


def _require(module: str) -> Any:
    """Like conftest.require: skip locally when a framework is missing, fail in CI."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module)


def _load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------------ quickstart


@pytest.fixture(scope="module")
def quickstart() -> ModuleType:
    _require("torch")
    return _load("quickstart")


def _cases(qs: ModuleType) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    pred, target, mask = qs.make_data()
    return [
        (pred, target, mask),
        (pred, np.full_like(target, np.nan), np.zeros_like(mask)),  # all masked
    ]


def test_quickstart_data_is_the_motivating_case(quickstart: ModuleType) -> None:
    pred, target, mask = quickstart.make_data()
    assert np.array_equal(np.isnan(target), ~mask)  # missing targets are NaN, only those
    assert 0 < mask.sum() < mask.size
    assert np.isfinite(pred).all()


@pytest.mark.parametrize("case", [0, 1], ids=["some-valid", "all-masked"])
def test_quickstart_losses_match_oracle(quickstart: ModuleType, case: int) -> None:
    pred, target, mask = _cases(quickstart)[case]
    oracle_value, oracle_grad = _oracle(pred, target, mask)
    np_values = quickstart.numpy_values(pred, target, mask)
    torch_vg = quickstart.torch_values_and_grads(pred, target, mask)

    # masked_mse: the MSE over the valid subset, gradient exactly 0 where masked
    np.testing.assert_allclose(np_values[MASKED], oracle_value, rtol=1e-12, atol=0)
    value, grad = torch_vg[MASKED]
    np.testing.assert_allclose(value, oracle_value, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, oracle_grad, rtol=1e-12, atol=0)
    assert np.all(grad[~mask] == 0.0)

    # naive: the value is NaN (0 * NaN, or 0 / 0); so is the gradient at masked entries
    assert math.isnan(np_values[NAIVE])
    value, grad = torch_vg[NAIVE]
    assert math.isnan(value)
    assert np.isnan(grad[~mask]).all()

    # zero imputation: finite, equal to the MSE against targets filled with 0 (not the oracle)
    filled = np.where(mask, target, 0.0)
    zero_oracle = float(np.mean((pred - filled) ** 2))
    np.testing.assert_allclose(np_values[ZERO], zero_oracle, rtol=1e-12)
    value, grad = torch_vg[ZERO]
    np.testing.assert_allclose(value, zero_oracle, rtol=1e-12)
    np.testing.assert_allclose(grad, 2 * (pred - filled) / pred.size, rtol=1e-12)
    assert zero_oracle != pytest.approx(oracle_value)  # the bias the quickstart points at


def test_quickstart_oracle_helper_is_the_valid_subset_mse(quickstart: ModuleType) -> None:
    for pred, target, mask in _cases(quickstart):
        value, grad = quickstart.oracle(pred, target, mask)
        ref_value, ref_grad = _oracle(pred, target, mask)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


def _oracle(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Float64 MSE on the valid subset and its gradient; (0, zeros) when nothing is valid."""
    p, t = pred[mask].astype(np.float64), target[mask].astype(np.float64)
    grad = np.zeros(pred.shape, dtype=np.float64)
    if p.size == 0:
        return 0.0, grad
    grad[mask] = 2.0 * (p - t) / p.size
    return float(np.mean((p - t) ** 2)), grad


_ROW = re.compile(r"^\s{2}(?P<name>.+?)\s{2,}(?P<np>\S+)\s+(?P<torch>\S+)\s+\[(?P<grad>[^\]]*)\]$")


@pytest.mark.slow
def test_quickstart_prints_what_is_true() -> None:
    _require("torch")
    proc = _run(str(EXAMPLES / "quickstart.py"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    sections = proc.stdout.split("=== ")[1:]
    assert len(sections) == 2, proc.stdout
    for section in sections:
        rows = {}
        for line in section.splitlines():
            m = _ROW.match(line)
            if m and m["name"].strip() in (NAIVE, ZERO, MASKED):
                rows[m["name"].strip()] = (float(m["np"]), float(m["torch"]),
                                           [float(g) for g in m["grad"].split()])
        assert set(rows) == {NAIVE, ZERO, MASKED}, section
        naive_np, naive_torch, naive_grad = rows[NAIVE]
        assert math.isnan(naive_np)
        assert math.isnan(naive_torch)
        assert any(math.isnan(g) for g in naive_grad)
        masked_np, masked_torch, masked_grad = rows[MASKED]
        assert math.isfinite(masked_np)
        assert masked_np == masked_torch
        assert all(math.isfinite(g) for g in masked_grad)
        assert math.isfinite(rows[ZERO][0])
    # the all-masked batch: masked_mse is exactly 0 with zero gradient
    assert "all-masked" in sections[1]
    m = next(_ROW.match(x) for x in sections[1].splitlines() if x.strip().startswith(MASKED))
    assert m is not None
    assert float(m["np"]) == 0.0
    assert float(m["torch"]) == 0.0
    assert all(float(g) == 0.0 for g in m["grad"].split())


# ------------------------------------------------------------------------- multitask


@pytest.fixture(scope="module")
def multitask() -> ModuleType:
    _require("torch")
    return _load("multitask")


def test_multitask_data_matches_its_definition(multitask: ModuleType) -> None:
    data = multitask.make_data(300, np.random.default_rng(0))
    x = data.x.numpy().astype(np.float64)
    pos = data.positive.numpy()
    size = data.size.numpy()
    assert x.shape == (300, 1, multitask.IMAGE, multitask.IMAGE)
    assert 0 < pos.sum() < pos.size
    assert np.array_equal(np.isnan(size), ~pos)  # size exists exactly for positives
    assert np.all((size[pos] >= multitask.SIDES[0]) & (size[pos] <= multitask.SIDES[1]))
    np.testing.assert_array_equal(data.label.numpy(), pos.astype(np.float32))
    np.testing.assert_allclose(data.brightness.numpy(), x.mean(axis=(1, 2, 3)), rtol=1e-5,
                               atol=1e-6)


def test_multitask_metrics_match_numpy_oracle(multitask: ModuleType) -> None:
    torch = _require("torch")
    data = multitask.make_data(200, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    outs = {h: torch.as_tensor(rng.normal(3.0, 2.0, (200, 3)), dtype=torch.float32)
            for h in ("cls", "brightness", "size")}
    got = multitask.evaluate(outs, data)
    pos = data.positive.numpy()
    o = {h: v.numpy().astype(np.float64) for h, v in outs.items()}
    err3 = o["size"][pos, 2] - data.size.numpy()[pos]
    expected = {
        "accuracy": np.mean((o["cls"][:, 0] > 0) == pos),
        "head2_rmse": np.sqrt(np.mean((o["brightness"][:, 1] - data.brightness.numpy()) ** 2)),
        "head3_rmse": np.sqrt(np.mean(err3**2)),
        "head3_bias": np.mean(err3),
    }
    assert set(got) == set(multitask.METRICS)
    for k, v in expected.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, err_msg=k)


def test_multitask_head3_losses_agree_with_oracle(multitask: ModuleType) -> None:
    """The masked and epsilon-ratio losses see only positives; zero imputation sees all."""
    torch = _require("torch")
    data = multitask.make_data(64, np.random.default_rng(3))
    out = torch.as_tensor(np.random.default_rng(4).normal(5.0, 2.0, (64, 3)),
                          dtype=torch.float32)
    pos = data.positive.numpy()
    p = out[:, 2].numpy().astype(np.float64)
    t = data.size.numpy().astype(np.float64)
    valid_mse = np.mean((p[pos] - t[pos]) ** 2)
    np.testing.assert_allclose(float(multitask._size_masked(out, data)), valid_mse, rtol=1e-5)
    np.testing.assert_allclose(float(multitask._size_epsilon_ratio(out, data)), valid_mse,
                               rtol=1e-5)  # sizes >= 3 >> eps: the ratio is ~1
    np.testing.assert_allclose(float(multitask._size_zero_imputed(out, data)),
                               np.mean((p - np.where(pos, t, 0.0)) ** 2), rtol=1e-5)


@pytest.mark.slow
def test_multitask_quick_writes_results(tmp_path: Path) -> None:
    _require("torch")
    _require("matplotlib")
    _require("tqdm")
    proc = _run(str(EXAMPLES / "multitask.py"), "--quick", "--out", str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    results = report["results"]
    strategies = ["separate", "joint12+sep3", "zero-impute", "alternating", "eps-ratio",
                  "masked_mse"]
    metrics = ["accuracy", "head2_rmse", "head3_rmse", "head3_bias"]
    assert list(results) == strategies
    n_seeds = len(report["config"]["seeds"])
    assert n_seeds >= 2
    for name in strategies:
        assert list(results[name]) == metrics, name
        for metric in metrics:
            cell = results[name][metric]
            assert math.isfinite(cell["mean"]), (name, metric)
            assert math.isfinite(cell["std"]), (name, metric)
            assert cell["std"] >= 0
            assert len(cell["per_seed"]) == n_seeds
            np.testing.assert_allclose(cell["mean"], np.mean(cell["per_seed"]), rtol=1e-12)
            np.testing.assert_allclose(cell["std"], np.std(cell["per_seed"], ddof=1),
                                       rtol=1e-9, atol=1e-15)
        assert 0.0 <= results[name]["accuracy"]["mean"] <= 1.0

    png = (tmp_path / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    for name in strategies:  # the printed table has a row per strategy
        assert re.search(rf"^{re.escape(name)}\s+\d", proc.stdout, re.MULTILINE), proc.stdout
    assert "what the numbers show" in proc.stdout
