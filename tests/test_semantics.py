"""The semantics users rely on (issue 2, section 3), each checked on every backend.

Fixed, seeded inputs (the property tests draw the rest); every expectation is a float64
NumPy oracle on the valid subset, never a hand-typed number.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import masked_losses as ml

RTOL = {"float64": 1e-12, "float32": 1e-6, "float16": 1e-3, "bfloat16": 8e-3}


def _data(seed: int = 0, shape: tuple[int, ...] = (6, 3)) -> tuple[np.ndarray, ...]:
    """``(pred, target with NaN at masked positions, mask)`` as float32/float32/bool."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape).astype(np.float32)
    target = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < 0.6
    mask[0] = False  # a sample with no valid target at all
    mask[:, 0] |= np.arange(shape[0]) == 1  # and one more valid entry
    pred = np.where(mask, pred, np.inf).astype(np.float32)
    target = np.where(mask, target, np.nan).astype(np.float32)
    return pred, target, mask


def _sq(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Float64 squared errors, exactly 0 at invalid positions (computed on valid ones only)."""
    p = np.where(valid, pred.astype(np.float64), 0.0)
    t = np.where(valid, target.astype(np.float64), 0.0)
    return (p - t) ** 2


def _mean(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den != 0, num / np.where(den != 0, den, 1), 0.0)


def _close(b: Any, out: Any, want: np.ndarray, rtol: float = 1e-6) -> None:
    got = np.asarray(b.to_numpy(out), dtype=np.float64)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-7)


# ---- exact counts --------------------------------------------------------------------


def test_valid_count_is_an_exact_integer_beyond_float32_integers(xp):
    n = 2**24 + 3
    mask = np.ones(n, dtype=bool)
    mask[0] = False
    mask[-1] = False
    out = xp.run(ml.valid_count, xp.asarray(mask))
    assert "int" in xp.dtype_name(out), f"the count must be an integer, got {out.dtype}"
    # 2**24 + 1 is the first integer float32 cannot hold: no float32 sum of ones gives it
    assert int(xp.to_numpy(out)) == 2**24 + 1


def test_mean_denominator_is_exact_for_more_than_2_24_valid_entries(xp):
    # (4098, 4097) values with a per-sample (4098, 1) mask that drops one row: 4097**2 =
    # 16_785_409 valid entries, an odd number above 2**24 that no float32 sum of ones can
    # produce. The mean of ones is then exactly 1 in float64; a float32-counted denominator
    # would be off by 6e-8. (JAX without x64 has no float64: float32 there, exact to rounding.)
    dtype = "float64" if "float64" in xp.float_dtypes else "float32"
    rows, cols = 4098, 4097
    mask = np.ones((rows, 1), dtype=bool)
    mask[0] = False
    values = np.ones((rows, cols), dtype=dtype)
    values[0] = np.nan  # the masked row holds garbage
    out = xp.run(ml.masked_mean, xp.asarray(values), xp.asarray(mask))
    assert (rows - 1) * cols > 2**24
    assert xp.dtype_name(out) == dtype
    np.testing.assert_allclose(
        np.float64(xp.to_numpy(out)), 1.0, rtol=1e-15 if dtype == "float64" else 1e-6, atol=0
    )


# ---- dtypes ------------------------------------------------------------------------


def _promoted(a: str, b: str) -> str:
    if a == b:
        return a
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"
    return max(a, b, key=lambda d: int(d.removeprefix("b").removeprefix("float")))


def test_result_dtype_is_the_promoted_floating_dtype(xp):
    pred, target, mask = _data()
    for dp, dt in itertools.product(xp.float_dtypes, repeat=2):
        p = xp.cast(xp.asarray(pred), dp)
        t = xp.cast(xp.asarray(target), dt)
        for reduction in ("mean", "sum", "none"):
            out = xp.run(ml.masked_mse, p, t, xp.asarray(mask), reduction=reduction)
            assert xp.dtype_name(out) == _promoted(dp, dt), (dp, dt, reduction, out.dtype)
        for fn in (ml.masked_sum, ml.masked_mean):
            assert xp.dtype_name(xp.run(fn, p, xp.asarray(mask))) == dp


def test_16_bit_inputs_accumulate_in_float32(xp):
    half = [d for d in ("float16", "bfloat16") if d in xp.float_dtypes]
    if not half:  # array_api_strict: 16-bit floats are not in the standard
        assert not hasattr(xp.xp, "float16")
        assert not hasattr(xp.xp, "bfloat16")
        return
    for dtype in half:
        # precision: 2048 (float16) / 256 (bfloat16) + eight ones; a 16-bit running sum
        # drops every 1 (the spacing there is 2), the float32 sum gives the exact total
        big = 2048.0 if dtype == "float16" else 256.0
        values = np.array([big, *[1.0] * 8], dtype=np.float32)
        out = xp.run(ml.masked_sum, xp.cast(xp.asarray(values), dtype))
        assert xp.dtype_name(out) == dtype
        _close(xp, out, np.float64(big + 8), rtol=0)
        out = xp.run(ml.masked_mean, xp.cast(xp.asarray(values), dtype))
        _close(xp, out, np.float64(big + 8) / 9, rtol=RTOL[dtype])
    if "float16" in half:
        # range: squared errors of 250 are 62500 (float16 max 65504); their float16 sum
        # overflows to inf, the mean does not
        pred = xp.asarray(np.full((4, 2), 250.0, np.float16))
        target = xp.asarray(np.zeros((4, 2), np.float16))
        out = xp.run(ml.masked_mse, pred, target, xp.asarray(np.ones((4, 1), bool)))
        assert xp.dtype_name(out) == "float16"
        _close(xp, out, np.float64(np.float16(62500.0)), rtol=0)
        mean = xp.run(ml.masked_mean, xp.asarray(np.full(8, 60000.0, np.float16)))
        _close(xp, mean, np.float64(60000.0), rtol=0)


# ---- reductions, axes, weights, normalizer ---------------------------------------------


def test_reduction_none_is_elementwise_with_zeros_at_masked_positions(xp):
    pred, target, mask = _data()
    out = xp.to_numpy(
        xp.run(ml.masked_mse, xp.asarray(pred), xp.asarray(target), xp.asarray(mask),
               reduction="none")
    )
    assert out.shape == pred.shape
    assert np.all(out[~mask] == 0), "masked positions must hold exactly 0"
    np.testing.assert_allclose(out, _sq(pred, target, mask), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_axis_gives_per_task_and_per_sample_losses(xp, reduction):
    pred, target, mask = _data(1, (7, 4))
    sq = _sq(pred, target, mask)
    args = (xp.asarray(pred), xp.asarray(target), xp.asarray(mask))
    cases = ((0, 0), (-1, 1), (1, 1), ((0, 1), None), ((1, -2), None), (None, None), ((), ()))
    for axis, np_axis in cases:  # axis=() reduces nothing: the per-entry loss
        out = xp.run(ml.masked_mse, *args, reduction=reduction, axis=axis)
        num = np.sum(sq, axis=np_axis)
        want = num if reduction == "sum" else _mean(num, np.sum(mask, axis=np_axis))
        _close(xp, out, want)
    # the per-sample loss of the sample with nothing valid is exactly 0
    per_sample = xp.to_numpy(xp.run(ml.masked_mse, *args, reduction=reduction, axis=1))
    assert per_sample[0] == 0


def test_weights_mean_is_sum_w_m_l_over_sum_w_m(xp):
    pred, target, mask = _data(2, (8, 3))
    rng = np.random.default_rng(3)
    per_entry = rng.uniform(0.5, 2.0, size=(8, 3)).astype(np.float32)
    per_entry[2, 1] = 0.0  # a zero weight masks the entry ...
    target[2, 1] = np.nan  # ... whatever it holds
    per_task = np.array([[1.0, 0.0, 3.0]], np.float32)  # (1, T) broadcasts over samples
    args = (xp.asarray(pred), xp.asarray(target), xp.asarray(mask))
    for weights in (per_entry, per_task, (per_entry > 1).astype(np.int32)):
        valid = mask & (np.broadcast_to(weights, mask.shape) != 0)
        w = np.where(valid, np.broadcast_to(weights, mask.shape).astype(np.float64), 0.0)
        sq = _sq(pred, target, valid)
        out = xp.run(ml.masked_mse, *args, weights=xp.asarray(weights))
        _close(xp, out, np.sum(w * sq) / np.sum(w))
        out = xp.run(ml.masked_mse, *args, weights=xp.asarray(weights), axis=0)
        _close(xp, out, _mean(np.sum(w * sq, axis=0), np.sum(w, axis=0)))
        out = xp.run(ml.masked_mse, *args, weights=xp.asarray(weights), reduction="none")
        _close(xp, out, w * sq)


def test_numeric_mask_means_valid_not_weight(xp):
    pred, target, mask = _data(4)
    numeric = np.where(mask, np.arange(mask.size).reshape(mask.shape) % 3 + 1, 0)
    args = (xp.asarray(pred), xp.asarray(target))
    want = xp.to_numpy(xp.run(ml.masked_mse, *args, xp.asarray(mask)))
    for m in (numeric.astype(np.int32), (numeric * 0.25).astype(np.float32)):
        _close(xp, xp.run(ml.masked_mse, *args, xp.asarray(m)), np.float64(want))


def test_normalizer_scalar_and_array_replace_the_denominator(xp):
    pred, target, mask = _data(5, (6, 3))
    sq = _sq(pred, target, mask)
    args = (xp.asarray(pred), xp.asarray(target), xp.asarray(mask))
    for scalar in (7, 7.5, np.float64(2.0), np.int64(3)):  # NumPy scalars are numbers too
        _close(xp, xp.run(ml.masked_mse, *args, normalizer=scalar), np.sum(sq) / float(scalar))
    _close(xp, xp.run(ml.masked_mse, *args, normalizer=0), np.float64(0.0))
    # an array normalizer of the reduced shape: one denominator per task, 0 -> loss 0
    per_task = np.array([4.0, 0.0, 2.5], np.float32)
    out = xp.run(ml.masked_mse, *args, axis=0, normalizer=xp.asarray(per_task))
    _close(xp, out, _mean(np.sum(sq, axis=0), per_task.astype(np.float64)))
    # a 0-d array normalizer (e.g. an all-reduced valid count) with an integer dtype
    count = xp.run(ml.valid_count, xp.asarray(mask))
    _close(xp, xp.run(ml.masked_mse, *args, normalizer=count), np.sum(sq) / mask.sum())
    # masked_mean takes the same normalizer
    out = xp.run(ml.masked_mean, xp.asarray(target), xp.asarray(mask), normalizer=10.0)
    _close(xp, out, np.sum(np.where(mask, target, 0.0).astype(np.float64)) / 10.0)


def test_zero_normalizer_gives_zero_gradient(ad):
    pred, target, mask = _data(6)
    for normalizer in (0, ad.asarray(np.float32(0.0))):
        value, gp, gt = ad.value_and_grad(
            ml.masked_mse, ad.asarray(pred), ad.asarray(target), ad.asarray(mask),
            normalizer=normalizer,
        )
        assert float(value) == 0
        assert np.all(gp == 0)
        assert np.all(gt == 0)


# ---- masked(): the "double where" keeps fn inside its domain ------------------------------


def _log(b: Any) -> Any:
    return b.xp.math.log if b.name == "tensorflow" else b.xp.log


def test_masked_sanitises_inputs_before_fn(xp):
    """Binary cross-entropy: log(0) or log(NaN) at masked positions must not leak."""
    log = _log(xp)

    def bce(p: Any, t: Any) -> Any:
        return -(t * log(p) + (1.0 - t) * log(1.0 - p))

    loss = ml.masked(bce, fill=0.5)
    rng = np.random.default_rng(7)
    prob = rng.uniform(0.05, 0.95, size=(5, 4)).astype(np.float32)
    label = (rng.random((5, 4)) < 0.5).astype(np.float32)
    mask = rng.random((5, 4)) < 0.5
    prob = np.where(mask, prob, 0.0).astype(np.float32)  # log(0) = -inf at masked entries
    label = np.where(mask, label, np.nan).astype(np.float32)
    p64 = np.where(mask, prob, 0.5).astype(np.float64)
    t64 = np.where(mask, label, 0.0).astype(np.float64)
    terms = np.where(mask, -(t64 * np.log(p64) + (1 - t64) * np.log(1 - p64)), 0.0)
    args = (xp.asarray(prob), xp.asarray(label), xp.asarray(mask))
    _close(xp, xp.run(loss, *args), np.sum(terms) / mask.sum(), rtol=1e-5)
    _close(xp, xp.run(loss, *args, reduction="none"), terms, rtol=1e-5)
    assert loss.__name__ == "masked_bce"
    if xp.grad is not None:
        _, gp, gt = xp.value_and_grad(loss, *args)
        assert np.all(gp[~mask] == 0)
        assert np.all(gt[~mask] == 0)
        want = np.where(mask, (p64 - t64) / (p64 * (1 - p64)), 0.0) / mask.sum()
        np.testing.assert_allclose(gp, want, rtol=1e-5, atol=1e-7)
