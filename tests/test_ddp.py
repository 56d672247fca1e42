"""PyTorch data parallelism: ``ddp_normalizer`` makes DDP training equal full-batch training.

The multi-process test launches two gloo ranks on CPU (tests/ddp_worker.py, file rendezvous,
so no port is needed) with very different valid counts per rank (rank 1 has no valid entry in
step 0, rank 0 a single one in step 1) and compares their parameters after the optimiser
steps with single-process full-batch training done here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import masked_losses as ml
from tests.conftest import require

WORKER = Path(__file__).with_name("ddp_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_helpers_without_process_group_are_local():
    torch = require("torch")
    from masked_losses.torch import all_reduce_metrics, ddp_normalizer, global_valid_count

    assert not torch.distributed.is_initialized()
    rng = np.random.default_rng(0)
    mask = rng.random((7, 3)) < 0.5
    weights = rng.uniform(0.5, 2.0, size=(7, 1)).astype(np.float32)
    m, w = torch.from_numpy(mask), torch.from_numpy(weights)

    count = global_valid_count(m)
    assert count.dtype == torch.int64
    assert int(count) == mask.sum()
    np.testing.assert_array_equal(global_valid_count(m, axis=0).numpy(), mask.sum(0))
    np.testing.assert_allclose(
        float(global_valid_count(m, w)), np.sum(np.where(mask, weights, 0.0)), rtol=1e-6
    )
    norm = ddp_normalizer(m)
    assert norm.is_floating_point()
    assert float(norm) == mask.sum()
    # the normaliser is a constant for autograd even when the weights are trainable
    assert not ddp_normalizer(m, w.clone().requires_grad_()).requires_grad
    # with one process, normalizer=ddp_normalizer(mask) is the ordinary masked mean
    pred, target = torch.randn(7, 3), torch.randn(7, 3)
    torch.testing.assert_close(
        ml.masked_mse(pred, target, m, normalizer=norm), ml.masked_mse(pred, target, m)
    )
    state = ml.metrics_update(ml.metrics_init(pred), pred, target, m)
    assert all_reduce_metrics(state) is state


def oracle_metrics(pred, target, mask):
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    out = {"count": mask.sum(0).astype(np.float64)}
    e = np.where(mask, pred - np.where(mask, target, 0.0), 0.0)
    out["mean_error"] = e.sum(0) / out["count"]
    out["mse"] = (e**2).sum(0) / out["count"]
    out["mae"] = np.abs(e).sum(0) / out["count"]
    return out


@pytest.mark.slow
def test_ddp_two_gloo_ranks_equal_full_batch_training(tmp_path):
    torch = require("torch")
    if not torch.distributed.is_available():
        pytest.fail("torch.distributed is not available in this PyTorch build")
    worker = load_worker()
    world = 2
    init_file = tmp_path / "rendezvous"
    outs = [tmp_path / f"rank{r}.pt" for r in range(world)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), str(init_file), str(outs[r])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-3000:]}"
    results = [torch.load(o, weights_only=False) for o in outs]

    # single-process full-batch training with the plain masked mean: the reference
    reference = worker.make_model()
    worker.train(reference, None, "local")
    ref_params = worker.params_of(reference)
    for r, res in enumerate(results):
        for got, want in zip(res["params_ddp"], ref_params, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"rank {r}")
    # the per-rank mean (biased) lands somewhere else: the comparison above can fail
    drift = max(
        np.max(np.abs(got - want))
        for got, want in zip(results[0]["params_local"], ref_params, strict=True)
    )
    assert drift > 1e-3

    masks = [worker.step_data(s)[2].numpy() for s in range(worker.STEPS)]
    for res in results:
        assert res["counts"] == [int(m.sum()) for m in masks]
        np.testing.assert_array_equal(res["per_task_count"].numpy(), masks[0].sum(0))
        for step, m in enumerate(masks):
            w = np.concatenate([
                np.arange(1, b - a + 1, dtype=np.float64)[:, None] + r
                for r, (a, b) in enumerate(worker.RANK_ROWS)
            ])
            expected = np.sum(np.where(m, w, 0.0))
            assert res["weighted_counts"][step] == pytest.approx(expected, rel=1e-6)

    # metrics all-reduced over the ranks == metrics of the whole epoch
    data = [worker.step_data(s) for s in range(worker.STEPS)]
    x, y, m = (np.concatenate([d[i].numpy() for d in data]) for i in range(3))
    expected = oracle_metrics(x[:, : worker.N_OUT], y, m)
    for res in results:
        values = ml.MaskedMetrics(*res["metrics"]).compute()
        for name, want in expected.items():
            np.testing.assert_allclose(getattr(values, name), want, rtol=1e-5, err_msg=name)


# ---- Keras under tf.distribute ------------------------------------------------------------

TF_WORKER = Path(__file__).with_name("tf_distribute_worker.py")


def keras_data(batch=16, steps=2):
    """Two global batches of 16 rows; rows 0-7 of a batch go to replica 0, 8-15 to replica 1."""
    rng = np.random.default_rng(3)
    n, d_in, d_out = batch * steps, 5, 3
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    y = (x[:, :d_out] + rng.normal(size=(n, d_out))).astype(np.float32)
    mask = rng.random((n, d_out)) < 0.7
    mask[8:16] = False  # step 0: replica 1 has no valid target
    mask[16:24] = False  # step 1: replica 0 has a single valid target ...
    mask[16, 2] = True
    mask[24:32] = True  # ... and replica 1 is fully labelled
    sample_weight = rng.uniform(0.2, 2.0, size=n).astype(np.float32)
    sample_weight[::5] = 0.0
    return {
        "x": x,
        "y": np.where(mask, y, np.nan).astype(np.float32),
        "y_ratio": np.where(mask, np.abs(y) + 0.5, 0.0).astype(np.float32),
        "sample_weight": sample_weight,
        "W0": rng.normal(size=(d_in, d_out)).astype(np.float32),
        "b0": np.zeros(d_out, np.float32),
        "lr": np.float32(0.1),
        "batch": np.int64(batch),
    }


def keras_oracle(data, kind):
    """float64 full-batch SGD on a Dense layer: the steps Keras must take."""
    x, lr, batch = data["x"].astype(np.float64), float(data["lr"]), int(data["batch"])
    kernel, bias = data["W0"].astype(np.float64), data["b0"].astype(np.float64)
    losses = []
    for start in range(0, len(x), batch):
        rows = slice(start, start + batch)
        if kind == "ratio":
            t = data["y_ratio"][rows].astype(np.float64)
            valid = t != 0
            w = np.where(valid, t / (t + 1e-6), 0.0)
        else:
            t = data["y"][rows].astype(np.float64)
            valid = ~np.isnan(t)
            sw = data["sample_weight"][rows, None] if kind == "weighted" else 1.0
            w = np.where(valid, sw, 0.0)
        p = x[rows] @ kernel + bias
        r = np.where(valid, p - np.where(valid, t, 0.0), 0.0)
        losses.append(np.sum(w * r**2) / w.sum())
        g = 2 * w * r / w.sum()
        kernel, bias = kernel - lr * x[rows].T @ g, bias - lr * g.sum(0)
    return kernel, bias, float(np.mean(losses))


@pytest.mark.slow
def test_keras_mirrored_strategy_equals_full_batch(tmp_path):
    require("tensorflow")
    require("keras")
    data = keras_data()
    np.savez(tmp_path / "in.npz", **data)
    env = {**os.environ, "PYTHONPATH": str(TF_WORKER.parent.parent)}
    proc = subprocess.run(
        [sys.executable, str(TF_WORKER), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    for kind in ("masked", "weighted", "ratio"):
        kernel, bias, loss = keras_oracle(data, kind)
        np.testing.assert_allclose(out[f"{kind}_kernel"], kernel, atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(out[f"{kind}_bias"], bias, atol=1e-6, err_msg=kind)
        # Keras reports the replicas' summed loss: the global masked mean, averaged over steps
        np.testing.assert_allclose(float(out[f"{kind}_loss"]), loss, rtol=1e-4, err_msg=kind)
    # per-replica means (no global count) train somewhere else: the check above can fail
    kernel, _, _ = keras_oracle(data, "masked")
    assert np.max(np.abs(out["local_kernel"] - kernel)) > 1e-2
