"""``epsilon_ratio_mse``: the exact formula, the bound against ``masked_mse``, gradients, checks.

The elementwise term is ``(target - pred)² · target / (target + eps)``; a label of 0 means
"missing". Against ``masked_mse(mask=target != 0)`` every ratio lies in ``[1/(1 + δ), 1]``
with ``δ = eps / min nonzero target``, so both the sum and the (ratio-weighted) mean differ
by a relative error of at most ``δ ≤ δ / (1 - δ)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import masked_losses as ml
from tests.strategies import FIXTURE_SETTINGS, RTOL, draw_np, exact_in, to_backend

SHAPES = ((), (0,), (1,), (5,), (2, 3), (3, 1), (0, 2), (2, 1, 3), (2, 2, 2))
GARBAGE = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30])


def _draw(data: st.DataObject, b: Any, dtype: str, shape: tuple, elements: Any) -> np.ndarray:
    """Float64 values of ``dtype``, drawn through ``b``'s namespace where hypothesis can."""
    return exact_in(draw_np(data, b, dtype, shape, elements), dtype)


def draw_problem(data: st.DataObject, b: Any, dtypes: tuple[str, ...] | None = None) -> Any:
    """``(dtype, pred, target, eps)``: labels 0 (missing) or in [0.5, 10], garbage pred at 0."""
    shape = data.draw(st.sampled_from(SHAPES), label="shape")
    dtype = data.draw(st.sampled_from(dtypes or b.float_dtypes), label="dtype")
    width = 32 if dtype == "bfloat16" else np.finfo(dtype).bits
    labels = st.one_of(st.just(0.0), st.floats(0.5, 10.0, width=width))
    target = _draw(data, b, dtype, shape, labels)
    pred = _draw(data, b, dtype, shape, st.floats(-10.0, 10.0, width=width))
    garbage = exact_in(data.draw(hnp.arrays(np.float64, shape, elements=GARBAGE)), dtype)
    pred = np.where(target == 0, garbage, pred)
    eps = data.draw(st.floats(1e-6, 0.2), label="eps")
    return dtype, pred, target, eps


def draw_axis(data: st.DataObject, ndim: int) -> Any:
    if ndim == 0:
        return data.draw(st.sampled_from([None, ()]), label="axis")
    axes = data.draw(st.lists(st.integers(-ndim, ndim - 1), unique_by=lambda a: a % ndim))
    return data.draw(st.sampled_from([None, -1, tuple(axes)]), label="axis")


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in ((axis,) if isinstance(axis, int) else axis)))


def formula(pred: np.ndarray, target: np.ndarray, eps: float) -> np.ndarray:
    """The documented elementwise term in float64, exactly 0 where target == 0."""
    valid = target != 0
    p, t = np.where(valid, pred, 0.0), np.where(valid, target, 0.0)
    return (t - p) ** 2 * t / (t + eps)


@FIXTURE_SETTINGS
@given(data=st.data())
def test_matches_masked_mse_within_the_bound_eps_implies(xp, data):
    dtype, pred, target, eps = draw_problem(data, xp)
    reduction = data.draw(st.sampled_from(["mean", "sum"]), label="reduction")
    axis = draw_axis(data, pred.ndim)
    p, t = to_backend(xp, pred, dtype), to_backend(xp, target, dtype)
    got = xp.run(ml.epsilon_ratio_mse, p, t, eps=eps, reduction=reduction, axis=axis)
    ref = xp.run(ml.masked_mse, p, t, xp.asarray(target != 0), reduction=reduction, axis=axis)
    got = np.asarray(xp.to_numpy(got), np.float64)
    ref = np.asarray(xp.to_numpy(ref), np.float64)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    assert np.all(got >= 0)
    nonzero = target[target != 0]
    delta = eps / nonzero.min() if nonzero.size else 0.0
    assert delta < 1
    bound = delta / (1 - delta) * ref + RTOL[dtype] * (ref + 1e-30)
    assert np.all(np.abs(got - ref) <= bound), (got, ref, delta)


@FIXTURE_SETTINGS
@given(data=st.data())
def test_none_and_sum_equal_the_exact_formula(xp, data):
    wide = tuple(d for d in ("float64", "float32") if d in xp.float_dtypes)[:1]
    dtype, pred, target, eps = draw_problem(data, xp, wide)
    p, t = to_backend(xp, pred, dtype), to_backend(xp, target, dtype)
    terms = formula(pred, target, eps)
    none = xp.run(ml.epsilon_ratio_mse, p, t, eps=eps, reduction="none")
    assert xp.dtype_name(none) == dtype
    none = np.asarray(xp.to_numpy(none))
    assert np.all(none[target == 0] == 0), "a missing label (0) must contribute exactly 0"
    np.testing.assert_allclose(none, terms, rtol=RTOL[dtype], atol=1e-30)
    axis = draw_axis(data, pred.ndim)
    total = xp.run(ml.epsilon_ratio_mse, p, t, eps=eps, reduction="sum", axis=axis)
    want = np.sum(terms, axis=_axes(axis, pred.ndim))
    np.testing.assert_allclose(xp.to_numpy(total), want, rtol=RTOL[dtype], atol=1e-30)
    # "mean" divides by the soft count Σ target / (target + eps)
    ratio = np.where(target != 0, target / (np.where(target != 0, target, 1.0) + eps), 0.0)
    den = np.sum(ratio, axis=_axes(axis, pred.ndim))
    mean = xp.run(ml.epsilon_ratio_mse, p, t, eps=eps, axis=axis)
    want_mean = np.where(den > 0, want / np.where(den > 0, den, 1.0), 0.0)
    np.testing.assert_allclose(xp.to_numpy(mean), want_mean, rtol=RTOL[dtype], atol=1e-30)


def _gradient_oracle(pred: np.ndarray, target: np.ndarray, eps: float, reduction: str, axis: Any):
    """``(d/dpred, d/dtarget, error scale of d/dtarget)`` of sum(output), in float64."""
    valid = target != 0
    p, t = np.where(valid, pred, 0.0), np.where(valid, target, 0.0)
    r = np.where(valid, t / (t + eps), 0.0)
    dr = np.where(valid, eps / (t + eps) ** 2, 0.0)
    big_dr = np.where(valid, 1 / (t + eps), 0.0)  # d r/dt = 1/(t+e) - t/(t+e)²: cancellation
    s, ds_dt = (t - p) ** 2, 2 * (t - p)
    gp, gt = -r * ds_dt, dr * s + r * ds_dt
    gt_scale = big_dr * s + np.abs(r * ds_dt)
    if reduction in ("sum", "none"):  # the gradient of sum(output) is the same for both
        return gp, gt, gt_scale
    axes = _axes(axis, pred.ndim)
    num = np.sum(r * s, axis=axes, keepdims=True)
    den = np.sum(r, axis=axes, keepdims=True)
    ok = den > 0
    den = np.where(ok, den, 1.0)
    gt_mean = np.where(ok, gt / den - num / den**2 * dr, 0.0)
    gt_scale = np.where(ok, gt_scale / den + num / den**2 * big_dr, 0.0)
    return np.where(ok, gp / den, 0.0), gt_mean, gt_scale


@FIXTURE_SETTINGS
@given(data=st.data())
def test_gradients_zero_at_missing_labels_and_match_the_formula(ad, data):
    dtype, pred, target, eps = draw_problem(data, ad)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    axis = None if reduction == "none" else draw_axis(data, pred.ndim)
    value, gp, gt = ad.value_and_grad(
        ml.epsilon_ratio_mse, to_backend(ad, pred, dtype), to_backend(ad, target, dtype),
        eps=eps, reduction=reduction, axis=axis,
    )
    gp, gt = np.asarray(gp, np.float64), np.asarray(gt, np.float64)
    missing = target == 0
    assert np.all(gp[missing] == 0), gp
    assert np.all(gt[missing] == 0), gt
    assert np.isfinite(float(value))
    want_p, want_t, scale_t = _gradient_oracle(pred, target, eps, reduction, axis)
    rtol = RTOL[dtype]
    np.testing.assert_allclose(gp, want_p, rtol=rtol, atol=rtol * np.max(np.abs(want_p), initial=0))
    assert np.all(np.abs(gt - want_t) <= rtol * (np.abs(want_t) + scale_t) + 1e-30), (gt, want_t)


# ---- check=True ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_check_rejects_negative_and_nan_labels_eagerly_but_not_under_jit(xp, bad):
    target = np.array([[0.0, 2.0], [bad, 1.0]], np.float32)
    p, t = xp.asarray(np.ones((2, 2), np.float32)), xp.asarray(target)
    if xp.name == "jax.jit":
        # traced: the check is skipped (no error, no ConcretizationTypeError)
        out = xp.run(ml.epsilon_ratio_mse, p, t)
        assert out.shape == ()
        return
    with pytest.raises(ml.LabelError, match="negative" if bad < 0 else "NaN") as info:
        xp.run(ml.epsilon_ratio_mse, p, t)
    assert isinstance(info.value, ValueError)
    assert "target" in str(info.value)
    assert "masked_mse" in str(info.value)
    # check=False computes without asking
    xp.run(ml.epsilon_ratio_mse, p, t, check=False)


def test_check_passes_valid_labels_eagerly(xp):
    p = xp.asarray(np.array([1.0, 2.0, 3.0], np.float32))
    t = xp.asarray(np.array([0.0, 2.0, 5.0], np.float32))
    out = xp.run(ml.epsilon_ratio_mse, p, t, eps=1e-6)
    want = np.sum(formula(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0]), 1e-6))
    want /= 2 / (2 + 1e-6) + 5 / (5 + 1e-6)
    np.testing.assert_allclose(xp.to_numpy(out), want, rtol=1e-6)


# ---- mask= : an explicit "missing" on top of the 0 labels ---------------------------------


@FIXTURE_SETTINGS
@given(data=st.data())
def test_mask_equals_zeroing_the_masked_labels_whatever_they_hold(xp, data):
    wide = tuple(d for d in ("float64", "float32") if d in xp.float_dtypes)[:1]
    dtype, pred, target, eps = draw_problem(data, xp, wide)
    mask = data.draw(hnp.arrays(np.bool_, pred.shape), label="mask")
    garbage = exact_in(data.draw(hnp.arrays(np.float64, pred.shape, elements=GARBAGE)), dtype)
    stored = np.where(mask, target, garbage)  # NaN/±inf labels where masked: check=True passes
    zeroed = np.where(mask, target, 0.0)  # the oracle: a masked label reads as 0 (missing)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    p, m = to_backend(xp, pred, dtype), xp.asarray(mask)
    got = xp.run(ml.epsilon_ratio_mse, p, to_backend(xp, stored, dtype), mask=m, eps=eps,
                 reduction=reduction)
    terms = formula(pred, zeroed, eps)
    ratio = np.where(zeroed != 0, zeroed / (np.where(zeroed != 0, zeroed, 1.0) + eps), 0.0)
    want = {"none": terms, "sum": np.sum(terms),
            "mean": np.sum(terms) / np.sum(ratio) if np.sum(ratio) > 0 else 0.0}[reduction]
    np.testing.assert_allclose(xp.to_numpy(got), want, rtol=RTOL[dtype], atol=1e-30)


@FIXTURE_SETTINGS
@given(data=st.data())
def test_mask_gives_zero_gradient_at_masked_entries(ad, data):
    dtype, pred, target, eps = draw_problem(data, ad, ("float32",))
    mask = data.draw(hnp.arrays(np.bool_, pred.shape), label="mask")
    stored = np.where(mask, target, np.nan)
    _, gp, gt = ad.value_and_grad(
        functools.partial(ml.epsilon_ratio_mse, mask=ad.asarray(mask), eps=eps),
        to_backend(ad, pred, dtype), to_backend(ad, stored, dtype),
    )
    assert np.all(np.asarray(gp)[~mask] == 0)
    assert np.all(np.asarray(gt)[~mask] == 0)
    assert np.all(np.isfinite(gp))
    assert np.all(np.isfinite(gt))


def test_check_still_rejects_bad_labels_where_the_mask_is_true(xp):
    if xp.name == "jax.jit":
        return  # traced: no check (see the test above)
    p = xp.asarray(np.ones((2, 2), np.float32))
    t = xp.asarray(np.array([[np.nan, 2.0], [-1.0, 1.0]], np.float32))
    xp.run(ml.epsilon_ratio_mse, p, t, mask=xp.asarray(np.array([[0, 1], [0, 1]], bool)))
    with pytest.raises(ml.LabelError, match="1 negative and 0 NaN"):
        xp.run(ml.epsilon_ratio_mse, p, t, mask=xp.asarray(np.array([[0, 1], [1, 1]], bool)))
