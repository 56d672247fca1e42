"""Streaming masked metrics: streamed/merged state == metrics of the concatenated epoch.

The oracle is float64 NumPy on the valid subset of each task. Data is float32 so that every
backend (JAX without x64 included) sees the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

import masked_losses as ml
from masked_losses import ArgumentError, MaskedMetrics, ShapeError
from tests.conftest import require

RTOL = 2e-5
ATOL = 1e-5


def oracle(pred, target, mask, weights=None, task_axis=-1):
    """Float64 per-task metrics over the valid subset, computed task by task."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    mask = np.broadcast_to(np.asarray(mask) != 0, pred.shape)
    w = np.ones(pred.shape) if weights is None else np.broadcast_to(weights, pred.shape)
    if task_axis is None:
        pred, target, mask, w = (a.reshape(-1, 1) for a in (pred, target, mask, w))
        task_axis = -1
    pred, target, mask, w = (np.moveaxis(a, task_axis, -1) for a in (pred, target, mask, w))
    n_tasks = pred.shape[-1]
    out = {k: np.full(n_tasks, np.nan) for k in ("mean_error", "mse", "rmse", "mae")}
    out["count"] = np.zeros(n_tasks)
    for j in range(n_tasks):
        keep = mask[..., j] & (w[..., j] != 0)
        e = pred[..., j][keep] - target[..., j][keep]
        wj = w[..., j][keep].astype(np.float64)
        out["count"][j] = wj.sum()
        if wj.sum() > 0:
            out["mean_error"][j] = np.sum(wj * e) / wj.sum()
            out["mse"][j] = np.sum(wj * e**2) / wj.sum()
            out["rmse"][j] = np.sqrt(out["mse"][j])
            out["mae"][j] = np.sum(wj * np.abs(e)) / wj.sum()
    return out


def assert_metrics(xp, values, expected):
    for name in ("count", "mean_error", "mse", "rmse", "mae"):
        got = xp.to_numpy(getattr(values, name))
        np.testing.assert_allclose(
            got, np.reshape(expected[name], got.shape), rtol=RTOL, atol=ATOL, err_msg=name
        )


def make_epoch(seed, shape=(37, 4), *, empty_task=True, weighted=False):
    """pred/target with garbage (NaN/inf) at masked positions, mask, optional weights."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape).astype(np.float32)
    target = (pred + rng.normal(0.3, 1.0, size=shape)).astype(np.float32)
    mask = rng.random(shape) < 0.6
    if empty_task:
        mask[..., -1] = False  # the last task has no label in the whole epoch
    garbage = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30], np.float32), size=shape)
    target = np.where(mask, target, garbage).astype(np.float32)
    pred = np.where(rng.random(shape) < 0.3, np.where(mask, pred, garbage), pred).astype(
        np.float32
    )
    weights = None
    if weighted:
        weights = rng.uniform(0.0, 3.0, size=shape).astype(np.float32)
        weights[rng.random(shape) < 0.2] = 0.0
        weights = np.where(mask, weights, np.nan).astype(np.float32)  # NaN weight where masked
    return pred, target, mask, weights


def random_splits(rng, n, n_batches):
    cuts = np.sort(rng.choice(np.arange(1, n), size=n_batches - 1, replace=False))
    return np.split(np.arange(n), cuts)


def stream(xp, pred, target, mask, weights, batches, *, task_axis=-1, state=None):
    def update(state, p, t, m, *w):
        return ml.metrics_update(state, p, t, m, weights=w[0] if w else None, task_axis=task_axis)

    if state is None:
        state = ml.metrics_init(xp.asarray(pred[:1]), task_axis=task_axis)
    for rows in batches:
        arrays = [pred[rows], target[rows], mask[rows]]
        if weights is not None:
            arrays.append(weights[rows])
        state = xp.run(update, state, *(xp.asarray(np.ascontiguousarray(a)) for a in arrays))
    return state


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_concatenated_epoch(xp, seed, weighted):
    rng = np.random.default_rng(100 + seed)
    pred, target, mask, weights = make_epoch(seed, weighted=weighted)
    batches = random_splits(rng, len(pred), 6)
    mask[batches[2]] = False  # one batch has no valid entry at all
    state = stream(xp, pred, target, mask, weights, batches)
    values = ml.metrics_compute(state)
    expected = oracle(pred, target, mask, weights)
    assert np.isnan(expected["mse"][-1])  # the oracle agrees the empty task is undefined
    assert_metrics(xp, values, expected)
    # the biased alternative (mean of per-batch means) is measurably different here
    per_batch = [oracle(pred[r], target[r], mask[r], None if weights is None else weights[r])
                 for r in batches]
    naive = np.nanmean([b["mse"][0] for b in per_batch])
    assert abs(naive - expected["mse"][0]) > 1e-3


def test_one_batch_equals_oracle_and_state_dtype(xp):
    pred, target, mask, _ = make_epoch(3, shape=(11, 3))
    like = xp.asarray(pred)
    state = xp.run(ml.metrics_update, ml.metrics_init(like), like, xp.asarray(target),
                   xp.asarray(mask))
    assert all(tuple(a.shape) == (3,) for a in state)
    assert all(a.dtype == like.dtype for a in state)
    assert_metrics(xp, state.compute(), oracle(pred, target, mask))


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_merge_of_ranks_equals_concatenation(xp, n_ranks):
    rng = np.random.default_rng(7)
    pred, target, mask, weights = make_epoch(n_ranks, weighted=True)
    owner = rng.integers(0, n_ranks, size=len(pred))  # non-contiguous shards, unequal sizes
    mask[owner == 0] = False  # rank 0 sees no valid entry in the whole epoch
    states = []
    for r in range(n_ranks):
        rows = np.flatnonzero(owner == r)
        batches = [rows[i : i + 4] for i in range(0, len(rows), 4)]
        states.append(stream(xp, pred, target, mask, weights, batches))
    merged = ml.metrics_merge(*states)
    expected = oracle(pred, target, mask, weights)
    assert_metrics(xp, merged.compute(), expected)
    assert_metrics(xp, states[1].merge(*states[2:], states[0]).compute(), expected)
    # an all-reduce (sum of each field across ranks) is the same as merge
    reduced = MaskedMetrics(*(sum(xp.to_numpy(s[i]) for s in states) for i in range(4)))
    for got, want in zip(reduced, merged, strict=True):
        np.testing.assert_allclose(got, xp.to_numpy(want), rtol=1e-6)


def test_masked_garbage_has_no_effect(xp):
    pred, target, mask, weights = make_epoch(5, shape=(19, 3), weighted=True)
    clean = [np.where(mask, a, 0.0).astype(np.float32) for a in (pred, target, weights)]
    batches = np.array_split(np.arange(19), 3)
    dirty_state = stream(xp, pred, target, mask, weights, batches)
    clean_state = stream(xp, *clean[:2], mask, clean[2], batches)
    for a, b in zip(dirty_state, clean_state, strict=True):
        np.testing.assert_array_equal(xp.to_numpy(a), xp.to_numpy(b))
    assert np.all(np.isfinite(xp.to_numpy(dirty_state.sum_squared_error)))


def test_empty_task_is_nan_and_count_zero(xp):
    pred, target, mask, _ = make_epoch(6, shape=(8, 2))
    state = stream(xp, pred, target, mask, None, [np.arange(8)])
    values = state.compute()
    assert xp.to_numpy(values.count)[-1] == 0
    for name in ("mean_error", "mse", "rmse", "mae"):
        got = xp.to_numpy(getattr(values, name))
        assert np.isnan(got[-1]), name
        assert np.isfinite(got[0]), name
    empty = ml.metrics_compute(ml.metrics_init(xp.asarray(pred)))
    assert np.all(np.isnan(xp.to_numpy(empty.mse)))


def test_task_axis_and_broadcast_mask(xp):
    rng = np.random.default_rng(11)
    pred, target, mask, _ = make_epoch(8, shape=(9, 5, 3), empty_task=False)
    per_sample = rng.random((9, 1, 1)) < 0.7  # broadcasts over time and tasks
    target = np.where(per_sample & mask, target, np.nan).astype(np.float32)
    full = per_sample & mask
    batches = np.array_split(np.arange(9), 2)

    def streamed(task_axis, p, t, m):
        state = ml.metrics_init(xp.asarray(p[:1]), task_axis=task_axis)
        for rows in batches:
            state = ml.metrics_update(
                state, xp.asarray(p[rows]), xp.asarray(t[rows]), xp.asarray(m[rows]),
                task_axis=task_axis,
            )
        return state.compute()

    # tasks on the last axis, the mask given as (N, 5, 3) & a per-sample (N, 1, 1) mask
    assert_metrics(xp, streamed(-1, pred, target, full), oracle(pred, target, full))
    # tasks on axis 1 (time steps as "tasks")
    assert_metrics(xp, streamed(1, pred, target, full), oracle(pred, target, full, task_axis=1))
    # one pooled metric
    pooled = streamed(None, pred, target, full)
    assert tuple(pooled.mse.shape) == ()
    assert_metrics(xp, pooled, oracle(pred, target, full, task_axis=None))
    # mask=None counts every entry
    p, t = (rng.normal(size=pred.shape).astype(np.float32) for _ in range(2))
    state = ml.metrics_update(ml.metrics_init(xp.asarray(p)), xp.asarray(p), xp.asarray(t))
    np.testing.assert_array_equal(xp.to_numpy(state.count), np.full(3, 45.0))
    assert_metrics(xp, state.compute(), oracle(p, t, np.ones(p.shape, bool)))


def test_float16_accumulates_in_float32(xp):
    if not xp.has_float16:  # nothing to accumulate: the namespace has no 16-bit floats
        assert not hasattr(xp.xp, "float16")
        return
    pred, target, mask, _ = make_epoch(9, shape=(16, 2), empty_task=False)
    p16, t16 = (np.where(mask, a, 0.0).astype(np.float16) for a in (pred, target))
    state = ml.metrics_init(xp.asarray(p16))
    assert xp.to_numpy(state.count).dtype == np.float32
    state = ml.metrics_update(state, xp.asarray(p16), xp.asarray(t16), xp.asarray(mask))
    assert xp.to_numpy(state.sum_squared_error).dtype == np.float32
    expected = oracle(p16.astype(np.float32), t16.astype(np.float32), mask)
    got = state.compute()
    np.testing.assert_allclose(xp.to_numpy(got.mse), expected["mse"], rtol=1e-5)


def test_errors_name_the_problem(xp):
    p = xp.asarray(np.zeros((4, 3), np.float32))
    state = ml.metrics_init(p)
    with pytest.raises(ShapeError, match="tasks"):
        ml.metrics_update(state, xp.asarray(np.zeros((4, 2), np.float32)),
                          xp.asarray(np.zeros((4, 2), np.float32)))
    with pytest.raises(ArgumentError, match="task_axis"):
        ml.metrics_init(p, task_axis=2)
    with pytest.raises(ShapeError, match="different shapes"):
        ml.metrics_merge(state, ml.metrics_init(p, task_axis=0))
    with pytest.raises(ArgumentError, match="MaskedMetrics"):
        ml.metrics_merge(state, tuple(state))
    with pytest.raises(ArgumentError, match="at least one"):
        ml.metrics_merge()
    with pytest.raises(ShapeError, match="same shape"):
        ml.metrics_update(state, p, xp.asarray(np.zeros((4, 1), np.float32)))


def test_explicit_float64_state():
    pred, target, mask, _ = make_epoch(10, shape=(12, 2))
    state = ml.metrics_init(pred, dtype=np.float64)
    state = ml.metrics_update(state, pred, target, mask)
    assert state.count.dtype == np.float64
    with pytest.raises(ShapeError, match="dtypes"):
        ml.metrics_merge(state, ml.metrics_init(pred))
    assert_metrics_np(state.compute(), oracle(pred, target, mask))


def assert_metrics_np(values, expected):
    for name in ("count", "mean_error", "mse", "rmse", "mae"):
        np.testing.assert_allclose(getattr(values, name), expected[name], rtol=1e-6, err_msg=name)


def test_jax_psum_and_scan_merge_like_concatenation():
    """A state is a pytree: lax.scan streams batches, psum over a named axis merges ranks."""
    jax = require("jax")
    jnp = require("jax.numpy")
    pred, target, mask, weights = make_epoch(12, shape=(4 * 3 * 5, 3), weighted=True)
    mask[:15] = False  # "rank" 0 has no valid entry
    # (ranks, batches per rank, batch size, tasks)
    arrays = [jnp.asarray(a.reshape(4, 3, 5, 3)) for a in (pred, target, mask, weights)]

    def per_rank(p, t, m, w):
        def step(state, batch):
            return ml.metrics_update(state, batch[0], batch[1], batch[2], weights=batch[3]), None

        state, _ = jax.lax.scan(step, ml.metrics_init(p[0]), (p, t, m, w))
        return jax.lax.psum(state, "ranks")

    merged = jax.jit(jax.vmap(per_rank, axis_name="ranks"))(*arrays)
    assert isinstance(merged, MaskedMetrics)
    values = jax.tree_util.tree_map(lambda a: a[0], merged).compute()
    expected = oracle(pred, target, mask, weights)
    for name in ("count", "mean_error", "mse", "rmse", "mae"):
        np.testing.assert_allclose(
            np.asarray(getattr(values, name)), expected[name], rtol=RTOL, atol=ATOL
        )


def test_one_dimensional_inputs(xp):
    """1-D predictions: one task per entry (task_axis=-1) or one pooled task (None)."""
    pred = np.array([1.0, 2.0, 3.0, -1.0], np.float32)
    target = np.array([0.5, np.nan, 1.0, np.inf], np.float32)
    mask = np.array([True, False, True, False])
    for task_axis in (-1, None):
        state = ml.metrics_init(xp.asarray(pred), task_axis=task_axis)
        for _ in range(2):  # the same batch twice: counts double, means stay
            state = ml.metrics_update(state, xp.asarray(pred), xp.asarray(target),
                                      xp.asarray(mask), task_axis=task_axis)
        expected = oracle(pred[None], target[None], mask[None], task_axis=task_axis)
        expected["count"] = 2 * expected["count"]
        assert_metrics(xp, state.compute(), expected)
