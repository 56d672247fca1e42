"""The JAX adapter: optax-style functions under jit, grad and vmap, and ``axis_name=``.

Values and gradients are compared with a float64 NumPy oracle on the valid subset (eager and
under ``jax.jit``); ``vmap`` over the batch gives the per-example losses of the core's
``axis=`` reduction; ``axis_name`` makes the mean global, checked with a named ``vmap`` here
and with ``shard_map``/``pmap`` on 4 host CPU devices in a subprocess (the device count must
be set before JAX is imported); ``import masked_losses.jax`` imports no other framework.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import require

jax = require("jax")
jnp = require("jax.numpy")

import masked_losses as ml  # noqa: E402
import masked_losses.jax as mlj  # noqa: E402
from masked_losses import ArgumentError, LabelError  # noqa: E402

REDUCTIONS = ("mean", "sum", "none")
EPS = 1e-6


@pytest.fixture(params=["jax", "jax.jit"])
def jit(request):
    """Identity or ``jax.jit`` (options are closed over, so they stay static)."""
    return jax.jit if request.param == "jax.jit" else (lambda f: f)


def make_batch(seed, shape=(12, 3), p_valid=0.6):
    """pred, target (NaN where masked), mask, per-sample weights (N, 1); float32."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape).astype(np.float32)
    target = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < p_valid
    target[~mask] = np.nan
    weights = rng.uniform(0.5, 2.0, size=(shape[0], 1)).astype(np.float32)
    return pred, target, mask, weights


# ---- float64 NumPy oracles on the valid subset -----------------------------------------------


def oracle_mean(values, mask, weights=None, reduction="mean"):
    """Σ w·v / Σ w over the valid entries (``values`` already elementwise)."""
    v64 = values.astype(np.float64)
    w = np.broadcast_to(np.ones(()) if weights is None else weights, v64.shape).astype(np.float64)
    valid = mask & (w != 0)
    if reduction == "none":
        return np.where(valid, w * np.where(valid, v64, 0.0), 0.0)
    total = np.sum(w[valid] * v64[valid])
    if reduction == "sum":
        return total
    return total / np.sum(w[valid]) if valid.any() else 0.0


def squared_error(pred, target):
    with np.errstate(invalid="ignore"):
        return (pred.astype(np.float64) - target.astype(np.float64)) ** 2


def oracle_eps(pred, target, reduction):
    valid = target != 0
    ratio = np.where(valid, target / (target.astype(np.float64) + EPS), 0.0)
    return oracle_mean(squared_error(pred, target), valid, ratio, reduction)


# ---- values and gradients against the oracle -------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_masked_mse_matches_oracle(jit, reduction, weighted):
    pred, target, mask, weights = make_batch(0)
    w = weights if weighted else None
    loss = jit(lambda p, t, m, w: mlj.masked_mse(p, t, m, weights=w, reduction=reduction))
    out = loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask), w)
    assert isinstance(out, jax.Array)
    assert out.shape == (pred.shape if reduction == "none" else ())
    np.testing.assert_allclose(
        out, oracle_mean(squared_error(pred, target), mask, w, reduction), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_epsilon_ratio_mse_matches_oracle(jit, reduction):
    pred, target, mask, _ = make_batch(1)
    target = np.where(mask, np.abs(target) + 0.1, 0.0).astype(np.float32)  # 0 = missing
    out = jit(lambda p, t: mlj.epsilon_ratio_mse(p, t, reduction=reduction))(pred, target)
    np.testing.assert_allclose(out, oracle_eps(pred, target, reduction), rtol=1e-5, atol=1e-6)


def test_reductions_match_oracle(jit):
    values, _, mask, weights = make_batch(2)
    values[~mask] = np.inf
    fns = {
        "sum": lambda v, m, w: mlj.masked_sum(v, m, weights=w),
        "mean": lambda v, m, w: mlj.masked_mean(v, m, weights=w),
        "count": lambda v, m, w: mlj.valid_count(m, weights=w),
    }
    out = {name: jit(fn)(values, mask, weights) for name, fn in fns.items()}
    np.testing.assert_allclose(out["sum"], oracle_mean(values, mask, weights, "sum"), rtol=1e-5)
    np.testing.assert_allclose(out["mean"], oracle_mean(values, mask, weights), rtol=1e-5)
    np.testing.assert_allclose(out["count"], np.broadcast_to(weights, mask.shape)[mask].sum(),
                               rtol=1e-5)
    assert int(jit(mlj.valid_count)(mask)) == mask.sum()


def test_gradients_match_oracle_and_are_exactly_zero_where_masked(jit):
    pred, target, mask, weights = make_batch(3)
    pred[~mask] = np.where(np.arange((~mask).sum()) % 2 == 0, np.nan, -np.inf)
    grad = jit(jax.grad(lambda p, t: mlj.masked_mse(p, t, mask, weights=weights), argnums=(0, 1)))
    gp, gt = (np.asarray(g) for g in grad(jnp.asarray(pred), jnp.asarray(target)))
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    w = np.broadcast_to(weights, pred.shape).astype(np.float64)
    expected = 2 * w[mask] * (pred[mask].astype(np.float64) - target[mask]) / w[mask].sum()
    np.testing.assert_allclose(gp[mask], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gt[mask], -expected, rtol=1e-5, atol=1e-7)


def test_epsilon_ratio_gradient_is_exactly_zero_at_missing_labels(jit):
    pred, target, mask, _ = make_batch(4)
    target = np.where(mask, np.abs(target) + 0.1, 0.0).astype(np.float32)
    pred[~mask] = np.nan
    grad = jit(jax.grad(lambda p, t: mlj.epsilon_ratio_mse(p, t, check=False), argnums=(0, 1)))
    gp, gt = (np.asarray(g) for g in grad(jnp.asarray(pred), jnp.asarray(target)))
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    assert np.all(np.isfinite(gp))
    assert np.all(np.isfinite(gt))


def test_numpy_inputs_give_jax_arrays_and_the_label_check_runs_eagerly():
    pred, target, mask, _ = make_batch(5)
    out = mlj.masked_mse(pred, target, mask)
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(out, oracle_mean(squared_error(pred, target), mask), rtol=1e-5)
    with pytest.raises(LabelError, match="negative"):
        mlj.epsilon_ratio_mse(pred, -np.abs(pred))
    traced = jax.jit(mlj.epsilon_ratio_mse)(pred, -np.abs(pred))  # skipped under tracing
    assert np.isfinite(traced)


def test_masked_lifts_an_elementwise_jax_loss(jit):
    pred, target, mask, _ = make_batch(6)
    masked_mae = mlj.masked(lambda p, t: jnp.abs(p - t))
    out = jit(masked_mae)(pred, target, mask)
    with np.errstate(invalid="ignore"):
        expected = oracle_mean(np.abs(pred.astype(np.float64) - target), mask)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


# ---- vmap: per-example losses ---------------------------------------------------------------


def test_vmap_gives_per_example_means_equal_to_the_axis_reduction(jit):
    pred, target, mask, _ = make_batch(7)
    mask[3] = False  # an example with no valid entry: its loss is 0
    per_example = jit(jax.vmap(mlj.masked_mse))(pred, target, mask)
    by_axis = ml.masked_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask), axis=1)
    assert per_example.shape == (pred.shape[0],)
    np.testing.assert_allclose(per_example, by_axis, rtol=1e-6)
    expected = [oracle_mean(squared_error(pred[i], target[i]), mask[i]) for i in range(len(pred))]
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    assert per_example[3] == 0
    grads = jax.vmap(jax.grad(mlj.masked_mse))(pred, target, mask)
    assert np.all(np.asarray(grads)[~mask] == 0)


def test_named_vmap_axis_name_gives_the_full_batch_value_and_gradient():
    pred, target, mask, weights = make_batch(8)
    mask[:4] = False

    def global_loss(p):
        per_device = jax.vmap(
            lambda p, t, m, w: mlj.masked_mse(p, t, m, weights=w, axis_name="batch"),
            axis_name="batch",
        )(p, target, mask, weights)
        return per_device[0], per_device

    (value, per_device), grad = jax.value_and_grad(global_loss, has_aux=True)(pred)
    full_value, full_grad = jax.value_and_grad(
        lambda p: ml.masked_mse(p, *map(jnp.asarray, (target, mask)), weights=jnp.asarray(weights))
    )(jnp.asarray(pred))
    np.testing.assert_allclose(per_device, np.full(len(pred), full_value), rtol=1e-5)
    np.testing.assert_allclose(value, full_value, rtol=1e-5)
    np.testing.assert_allclose(grad, full_grad, rtol=1e-5, atol=1e-7)


def test_axis_name_with_reduction_none_is_an_error():
    pred, target, mask, _ = make_batch(9)
    with pytest.raises(ArgumentError, match="axis_name"):
        mlj.masked_mse(pred, target, mask, reduction="none", axis_name="batch")
    with pytest.raises(ArgumentError, match="reduction must be one of"):
        mlj.epsilon_ratio_mse(pred, np.abs(pred), reduction="avg", axis_name="batch")


# ---- axis_name on 4 host CPU devices (subprocess: the flag must precede importing JAX) -------

SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, PartitionSpec as P
    import masked_losses as ml
    import masked_losses.jax as mlj

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    N, D = 16, 3
    pred = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.normal(size=(N, D)).astype(np.float32)
    mask = rng.random((N, D)) < 0.5
    mask[4:8] = False                       # the second device's shard is all masked
    mask[0, 0] = mask[12, 2] = True         # very different counts on the other devices
    target = np.where(mask, labels, np.nan).astype(np.float32)
    weights = rng.uniform(0.5, 2.0, size=(N, 1)).astype(np.float32)
    eps_target = np.where(mask, np.abs(labels) + 0.1, 0.0).astype(np.float32)

    def sharded(local_fn, n_args):
        # value on every device (out_specs=P(): replicated), differentiable in all arrays
        return jax.jit(jax.shard_map(local_fn, mesh=mesh, in_specs=(P("data"),) * n_args,
                                     out_specs=P()))

    cases = {
        "masked_mse": (
            lambda p, t, m, w: mlj.masked_mse(p, t, m, weights=w, axis_name="data"),
            lambda p, t, m, w: ml.masked_mse(p, t, m, weights=w),
            (pred, target, mask, weights)),
        "masked_mse axis=0": (
            lambda p, t, m: mlj.masked_mse(p, t, m, axis=0, axis_name="data"),
            lambda p, t, m: ml.masked_mse(p, t, m, axis=0),
            (pred, target, mask)),
        "masked_mse sum": (
            lambda p, t, m: mlj.masked_mse(p, t, m, reduction="sum", axis_name="data"),
            lambda p, t, m: ml.masked_mse(p, t, m, reduction="sum"),
            (pred, target, mask)),
        "epsilon_ratio_mse": (
            lambda p, t: mlj.epsilon_ratio_mse(p, t, axis=0, axis_name="data"),
            lambda p, t: ml.epsilon_ratio_mse(p, t, axis=0, check=False),
            (pred, eps_target)),
        "masked_mean": (
            lambda v, m, w: mlj.masked_mean(v, m, weights=w, axis_name="data"),
            lambda v, m, w: ml.masked_mean(v, m, weights=w),
            (target, mask, weights)),
        "masked_sum": (
            lambda v, m: mlj.masked_sum(v, m, axis_name="data"),
            lambda v, m: ml.masked_sum(v, m),
            (target, mask)),
        "masked_mse nothing valid": (
            lambda p, t, m: mlj.masked_mse(p, t, m, axis_name="data"),
            lambda p, t, m: ml.masked_mse(p, t, m),
            (pred, target, np.zeros_like(mask))),
    }
    for name, (local_fn, full_fn, arrays) in cases.items():
        arrays = tuple(jnp.asarray(a) for a in arrays)
        diff = tuple(i for i, a in enumerate(arrays) if a.dtype == jnp.float32)
        def total(fn):
            return lambda *a: jnp.sum(fn(*a))
        value, grads = jax.value_and_grad(total(sharded(local_fn, len(arrays))), diff)(*arrays)
        full_value, full_grads = jax.value_and_grad(total(full_fn), diff)(*arrays)
        assert np.isfinite(value), name
        np.testing.assert_allclose(value, full_value, rtol=1e-5, err_msg=name)
        for g, fg in zip(grads, full_grads):
            np.testing.assert_allclose(g, fg, rtol=1e-5, atol=1e-7, err_msg=name)
            if g.shape == mask.shape:
                assert np.all(np.asarray(g)[~mask] == 0), name
        print("ok", name, float(value))

    count = sharded(lambda m: mlj.valid_count(m, axis_name="data"), 1)(mask)
    assert int(count) == mask.sum(), (count, mask.sum())
    per_device = jax.pmap(lambda p, t, m: mlj.masked_mse(p, t, m, axis_name="data"),
                          axis_name="data")(*(a.reshape(4, 4, D) for a in (pred, target, mask)))
    np.testing.assert_allclose(per_device, np.full(4, ml.masked_mse(pred, target, mask)),
                               rtol=1e-5)
    print("ok valid_count, pmap")
    """
)


@pytest.mark.slow
def test_axis_name_on_four_devices_equals_the_full_batch():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARD_MAP_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 8, result.stdout
