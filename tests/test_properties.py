"""Property tests of the guarantees in DESIGN.md, on every member of the ``xp`` fixture.

Every case is drawn by hypothesis (values through ``make_strategies_namespace`` of the
backend's own namespace for array_api_strict and NumPy, through ``hypothesis.extra.numpy``
and ``Backend.asarray`` for the others), garbage (NaN, ±inf, 1e30, arbitrary finite numbers)
is planted in pred AND target at every masked position, and each result is compared with a
float64 NumPy oracle that only ever sees the valid entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import masked_losses as ml
from tests.strategies import FIXTURE_SETTINGS, RTOL, draw_np, exact_in, to_backend

BOUND = 10.0
GARBAGE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30]), st.floats(-1e6, 1e6)
)
TINY = {"float64": 2.3e-308, "float32": 1.2e-38, "float16": 6.2e-5, "bfloat16": 1.2e-38}


# ---- elementwise losses: backend version, float64 value, derivative, error magnitude -----


@dataclass(frozen=True)
class Elementwise:
    loss: Callable[..., Any]
    value: Callable[[np.ndarray], np.ndarray]  # of d = pred - target
    deriv: Callable[[np.ndarray], np.ndarray]  # d value / d pred
    magnitude: Callable[[np.ndarray], np.ndarray]  # size of the intermediates (error scale)
    kink: bool = False  # not differentiable at d == 0: any subgradient in [-1, 1] is right


def _mae(p: Any, t: Any) -> Any:
    return abs(p - t)


def _pseudo_huber(p: Any, t: Any) -> Any:
    return (1.0 + (p - t) ** 2) ** 0.5 - 1.0


LOSSES = {
    "masked_mse": Elementwise(ml.masked_mse, np.square, lambda d: 2 * d, np.square),
    "masked_mae": Elementwise(ml.masked(_mae), np.abs, np.sign, np.abs, kink=True),
    "masked_pseudo_huber": Elementwise(
        ml.masked(_pseudo_huber),
        lambda d: np.sqrt(1 + d * d) - 1,
        lambda d: d / np.sqrt(1 + d * d),
        lambda d: np.sqrt(1 + d * d),
    ),
}


# ---- drawing cases ---------------------------------------------------------------------


# A small catalogue (0-d, size-0 axes, size-1 axes, up to 3-d) rather than free shapes: JAX
# compiles every primitive per shape even eagerly, and a few shapes keep its cache warm.
SHAPES = ((), (0,), (1,), (5,), (2, 3), (3, 1), (0, 2), (2, 1, 3), (2, 2, 2))


def draw_shape(data: st.DataObject, *, min_dims: int = 0, allow_empty: bool = True) -> tuple:
    shapes = [s for s in SHAPES if len(s) >= min_dims and (allow_empty or 0 not in s)]
    return data.draw(st.sampled_from(shapes), label="shape")


def draw_axis(data: st.DataObject, ndim: int) -> int | tuple[int, ...] | None:
    kinds = ["none", "int", "tuple"] if ndim else ["none", "tuple"]
    kind = data.draw(st.sampled_from(kinds), label="axis kind")
    if kind == "none":
        return None
    if kind == "int":
        return data.draw(st.integers(-ndim, ndim - 1), label="axis")
    if ndim == 0:
        return ()
    axes = data.draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    signs = data.draw(st.lists(st.booleans(), min_size=len(axes), max_size=len(axes)))
    return tuple(a - ndim if neg else a for a, neg in zip(axes, signs, strict=True))


def draw_sub_shape(data: st.DataObject, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with some axes replaced by 1 (a broadcastable mask/weights shape)."""
    keep = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    return tuple(s if k else 1 for s, k in zip(shape, keep, strict=True))


@dataclass(frozen=True)
class Case:
    """One drawn problem; float arrays are float64 NumPy, exactly representable in dtype."""

    dtype: str
    pred: np.ndarray  # garbage at invalid positions
    target: np.ndarray
    mask: np.ndarray | None  # bool, int32 or float32; nonzero = valid
    weights: np.ndarray | None  # float32
    valid: np.ndarray  # bool, pred's shape: mask != 0 and weights != 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pred.shape

    def arrays(self, b: Any) -> tuple[Any, ...]:
        """``(pred, target[, mask])`` in ``b``'s library."""
        out = (to_backend(b, self.pred, self.dtype), to_backend(b, self.target, self.dtype))
        return out if self.mask is None else (*out, b.asarray(self.mask))

    def weights_in(self, b: Any) -> Any:
        return None if self.weights is None else b.asarray(self.weights)


def plant_garbage(data: st.DataObject, case: Case) -> Case:
    """``case`` with fresh garbage drawn at every invalid position of pred and target."""
    invalid = ~case.valid
    g_pred = data.draw(hnp.arrays(np.float64, case.shape, elements=GARBAGE), label="garbage")
    g_target = data.draw(hnp.arrays(np.float64, case.shape, elements=GARBAGE), label="garbage")
    pred = np.where(invalid, exact_in(g_pred, case.dtype), case.pred)
    target = np.where(invalid, exact_in(g_target, case.dtype), case.target)
    return replace(case, pred=pred, target=target)


def draw_case(
    data: st.DataObject,
    b: Any,
    *,
    shape: tuple[int, ...] | None = None,
    mask_modes: tuple[str, ...] = ("none", "random", "all_true", "all_false"),
    weighted: bool | None = None,
    zero_weights: bool = False,
) -> Case:
    if shape is None:
        shape = draw_shape(data)
    dtype = data.draw(st.sampled_from(b.float_dtypes), label="dtype")
    width = 32 if dtype == "bfloat16" else np.finfo(dtype).bits
    values = st.floats(-BOUND, BOUND, width=width, allow_subnormal=False)
    pred = exact_in(draw_np(data, b, dtype, shape, values), dtype)
    target = exact_in(draw_np(data, b, dtype, shape, values), dtype)

    mode = data.draw(st.sampled_from(mask_modes), label="mask mode")
    mask = None
    valid = np.ones(shape, dtype=bool)
    if mode != "none":
        mshape = draw_sub_shape(data, shape)
        if mode == "random":
            pattern = draw_np(data, b, "bool", mshape, st.booleans())
        else:
            pattern = np.full(mshape, mode == "all_true")
        kind = data.draw(st.sampled_from(["bool", "int32", "float32"]), label="mask dtype")
        scale = {"bool": True, "int32": 3, "float32": 0.5}[kind]
        mask = (pattern * scale).astype(kind)
        valid = valid & np.broadcast_to(pattern, shape)

    weights = None
    if weighted is None:
        weighted = data.draw(st.booleans(), label="weighted")
    if weighted:
        wshape = draw_sub_shape(data, shape)
        elements = st.sampled_from([0.0] if zero_weights else [0.0, 0.5, 1.0, 2.0, 3.25])
        weights = draw_np(data, b, "float32", wshape, elements).astype(np.float32)
        valid = valid & np.broadcast_to(weights != 0, shape)
    case = Case(dtype, pred, target, mask, weights, valid)
    return plant_garbage(data, case)


# ---- the float64 oracle ---------------------------------------------------------------


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axes))


def oracle(
    terms: np.ndarray,
    dterms: np.ndarray,
    mag: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray | None,
    reduction: str,
    axis: Any,
    normalizer: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(value, d sum(value) / d input, error scale)`` from elementwise float64 terms.

    ``terms``, ``dterms`` and ``mag`` must already be 0 at invalid positions.
    """
    shape = terms.shape
    w = np.ones(shape) if weights is None else np.broadcast_to(weights.astype(np.float64), shape)
    w = np.where(valid, w, 0.0)
    if reduction == "none":
        return w * terms, w * dterms, w * mag
    axes = _axes(axis, terms.ndim)
    num = np.sum(w * terms, axis=axes, keepdims=True)
    scale = np.sum(w * mag, axis=axes, keepdims=True)
    if reduction == "sum":
        return num.reshape(_reduced(shape, axes)), w * dterms, scale.reshape(_reduced(shape, axes))
    den = np.sum(w, axis=axes, keepdims=True) if normalizer is None else normalizer
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    ok = den != 0
    safe = np.where(ok, den, 1.0)
    value = np.where(ok, num / safe, 0.0).reshape(_reduced(shape, axes))
    grad = np.where(ok, w * dterms / safe, 0.0)
    return value, grad, np.where(ok, scale / safe, 0.0).reshape(_reduced(shape, axes))


def _reduced(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def loss_oracle(name: str, case: Case, reduction: str, axis: Any, normalizer: Any = None) -> Any:
    """The oracle of an elementwise loss; its gradient is d/dpred (d/dtarget is minus it)."""
    ew = LOSSES[name]
    d = np.where(case.valid, case.pred, 0.0) - np.where(case.valid, case.target, 0.0)
    return oracle(
        np.where(case.valid, ew.value(d), 0.0),
        np.where(case.valid, ew.deriv(d), 0.0),
        np.where(case.valid, ew.magnitude(d), 0.0),
        case.valid, case.weights, reduction, axis, normalizer,
    )


def reducer_oracle(name: str, case: Case, axis: Any) -> Any:
    v = np.where(case.valid, case.pred, 0.0)
    reduction = "sum" if name == "masked_sum" else "mean"
    return oracle(v, np.ones_like(v), np.abs(v), case.valid, case.weights, reduction, axis)


def assert_close(got: Any, want: np.ndarray, scale: np.ndarray, dtype: str, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, oracle {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite result {got}"
    tol = RTOL[dtype] * (np.abs(want) + np.abs(scale)) + 4 * TINY[dtype]
    bad = np.abs(got - want) > tol
    assert not np.any(bad), f"{what}: got {got[bad]}, oracle {want[bad]} (dtype {dtype})"


def _result_dtype(b: Any, out: Any, dtype: str) -> None:
    assert b.dtype_name(out) == dtype, f"result dtype {out.dtype}, expected {dtype}"


def _draw_reduction(data: st.DataObject, ndim: int) -> tuple[str, Any]:
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    axis = None if reduction == "none" else draw_axis(data, ndim)
    return reduction, axis


# ---- 1. value == float64 oracle on the valid subset -----------------------------------


# Functions are grouped (one test item per group, the function drawn per example) so that the
# compile-per-example cost of JAX stays bounded; every function is drawn in every run.
GROUPS = {
    "masked_mse": ("masked_mse",),
    "masked(fn)": ("masked_mae", "masked_pseudo_huber"),
    "reductions": ("masked_sum", "masked_mean", "valid_count"),
}


@pytest.mark.parametrize("group", list(GROUPS))
@FIXTURE_SETTINGS
@given(data=st.data())
def test_value_matches_float64_oracle(xp, group, data):
    name = data.draw(st.sampled_from(GROUPS[group]), label="function")
    case = draw_case(data, xp)
    if name in LOSSES:
        reduction, axis = _draw_reduction(data, len(case.shape))
        out = xp.run(
            LOSSES[name].loss, *case.arrays(xp), weights=case.weights_in(xp),
            reduction=reduction, axis=axis,
        )
        want, _, scale = loss_oracle(name, case, reduction, axis)
        _result_dtype(xp, out, case.dtype)
    elif name in ("masked_sum", "masked_mean"):
        axis = draw_axis(data, len(case.shape))
        arrays = case.arrays(xp)
        out = xp.run(
            getattr(ml, name), arrays[0], *arrays[2:], weights=case.weights_in(xp), axis=axis
        )
        want, _, scale = reducer_oracle(name, case, axis)
        _result_dtype(xp, out, case.dtype)
    else:
        axis = draw_axis(data, len(case.shape))
        mask = np.ones((1,) * len(case.shape), bool) if case.mask is None else case.mask
        out = xp.run(ml.valid_count, xp.asarray(mask), weights=case.weights_in(xp), axis=axis)
        # the count runs over the shape mask and weights broadcast to (not pred's)
        shape = mask.shape if case.weights is None else np.broadcast_shapes(
            mask.shape, case.weights.shape
        )
        valid = np.broadcast_to(mask != 0, shape)
        weights = None if case.weights is None else np.broadcast_to(case.weights, shape)
        if weights is not None:
            valid = valid & (weights != 0)
        counts = np.where(valid, 1.0 if weights is None else weights.astype(np.float64), 0.0)
        want = np.sum(counts, axis=_axes(axis, len(shape)))
        scale = want
        if case.weights is None:
            assert "int" in xp.dtype_name(out), f"an unweighted count is integer, got {out.dtype}"
        case = replace(case, dtype="float32")
    assert_close(xp.to_numpy(out), want, scale, case.dtype, name)


# ---- 2. gradients: exactly 0 at masked entries, the oracle's elsewhere -----------------


def _check_grads(
    b: Any, grads: tuple, want: np.ndarray, case: Case, signs: tuple, kink: bool = False
) -> None:
    # at a kink (|d| at d == 0) every subgradient is right: only finiteness is checked there
    skip = case.valid & (case.pred == case.target) if kink else np.zeros(case.shape, bool)
    for g, sign, arg in zip(grads, signs, ("pred", "target"), strict=False):
        g = np.asarray(g, dtype=np.float64)
        assert g.shape == case.shape
        masked_grads = g[~case.valid]
        assert np.all(masked_grads == 0), f"d/d{arg} at masked entries: {masked_grads}"
        assert np.all(np.isfinite(g)), f"d/d{arg}: {g}"
        g = np.where(skip, sign * want, g)
        assert_close(g, sign * want, np.zeros_like(want), case.dtype, f"d/d{arg} ({b.name})")


@pytest.mark.parametrize("group", list(GROUPS))
@FIXTURE_SETTINGS
@given(data=st.data())
def test_gradient_zero_at_masked_entries_and_matches_oracle(ad, group, data):
    functions = tuple(n for n in GROUPS[group] if n != "valid_count")  # no gradient to take
    name = data.draw(st.sampled_from(functions), label="function")
    case = draw_case(data, ad)
    if name in LOSSES:
        reduction, axis = _draw_reduction(data, len(case.shape))
        value, *grads = ad.value_and_grad(
            LOSSES[name].loss, *case.arrays(ad), weights=case.weights_in(ad),
            reduction=reduction, axis=axis,
        )
        want, dwant, scale = loss_oracle(name, case, reduction, axis)
        signs = (1.0, -1.0)
    else:
        axis = draw_axis(data, len(case.shape))
        arrays = case.arrays(ad)
        value, *grads = ad.value_and_grad(
            getattr(ml, name), arrays[0], *arrays[2:], argnums=(0,),
            weights=case.weights_in(ad), axis=axis,
        )
        want, dwant, scale = reducer_oracle(name, case, axis)
        signs = (1.0,)
    assert_close(value, np.sum(want), np.sum(scale), case.dtype, f"{name} summed")
    _check_grads(ad, tuple(grads), dwant, case, signs, kink=name in LOSSES and LOSSES[name].kink)


# ---- 3. masked values never matter (bitwise) --------------------------------------------


def _evaluate(b: Any, name: str, case: Case, **options: Any) -> list[bytes]:
    arrays = case.arrays(b)
    if name in LOSSES:
        fn, args, argnums = LOSSES[name].loss, arrays, (0, 1)
    else:
        fn, args, argnums = getattr(ml, name), (arrays[0], *arrays[2:]), (0,)
        options.pop("reduction", None)
    if b.grad is None:
        outs = [b.to_numpy(b.run(fn, *args, **options))]
    else:
        outs = list(b.value_and_grad(fn, *args, argnums=argnums, **options))
    for o in outs:
        assert np.all(np.isfinite(np.asarray(o, dtype=np.float64))), f"{name}: {o}"
    return [np.asarray(o).tobytes() for o in outs]


@FIXTURE_SETTINGS
@given(data=st.data())
def test_changing_masked_values_changes_nothing(xp, data):
    name = data.draw(st.sampled_from([*LOSSES, "masked_mean", "masked_sum"]), label="function")
    case = draw_case(data, xp)
    reduction, axis = _draw_reduction(data, len(case.shape))
    if name not in LOSSES:
        reduction = "mean"
    other = plant_garbage(data, case)
    first = _evaluate(xp, name, case, weights=case.weights_in(xp), reduction=reduction, axis=axis)
    second = _evaluate(
        xp, name, other, weights=other.weights_in(xp), reduction=reduction, axis=axis
    )
    assert first == second, "value or gradient changed with the masked values"


# ---- 4. all-true mask == mask=None == plain MSE ----------------------------------------


@FIXTURE_SETTINGS
@given(data=st.data())
def test_all_true_mask_and_no_mask_equal_plain_mse(xp, data):
    case = draw_case(data, xp, mask_modes=("all_true",), weighted=False)
    reduction, axis = _draw_reduction(data, len(case.shape))
    pred, target, mask = case.arrays(xp)
    d = case.pred - case.target  # nothing is masked: the plain MSE on everything
    axes = _axes(axis, d.ndim)
    if reduction == "none":
        plain = d * d
    elif reduction == "sum":
        plain = np.sum(d * d, axis=axes)
    else:
        n = math.prod(case.shape[i] for i in axes)
        plain = np.sum(d * d, axis=axes) / n if n else np.zeros(_reduced(case.shape, axes))
    for args in ((pred, target, mask), (pred, target)):
        out = xp.run(ml.masked_mse, *args, reduction=reduction, axis=axis)
        _result_dtype(xp, out, case.dtype)
        scale = plain if reduction != "none" else d * d
        assert_close(xp.to_numpy(out), plain, scale, case.dtype, f"{len(args)} arrays")


# ---- 5. nothing valid -> exactly 0, zero gradient, no NaN ------------------------------


@FIXTURE_SETTINGS
@given(data=st.data())
def test_nothing_valid_gives_exact_zero_and_zero_gradient(xp, data):
    name = data.draw(st.sampled_from([*LOSSES, "masked_mean", "masked_sum"]), label="function")
    zero_weights = data.draw(st.booleans(), label="all weights zero")
    case = draw_case(
        data, xp,
        mask_modes=("none", "random", "all_true") if zero_weights else ("all_false",),
        weighted=zero_weights, zero_weights=zero_weights,
    )
    assert not case.valid.any()
    reduction, axis = _draw_reduction(data, len(case.shape))
    if name not in LOSSES:
        reduction = "mean"
    options = {"weights": case.weights_in(xp), "reduction": reduction, "axis": axis}
    arrays = case.arrays(xp)
    if name in LOSSES:
        fn, args, argnums = LOSSES[name].loss, arrays, (0, 1)
    else:
        fn, args, argnums = getattr(ml, name), (arrays[0], *arrays[2:]), (0,)
        options.pop("reduction")
    out = xp.to_numpy(xp.run(fn, *args, **options))
    assert np.all(np.asarray(out, dtype=np.float64) == 0), f"{name} with nothing valid: {out}"
    if xp.grad is not None:
        value, *grads = xp.value_and_grad(fn, *args, argnums=argnums, **options)
        assert float(value) == 0
        for g in grads:
            assert np.all(np.asarray(g, dtype=np.float64) == 0), f"gradient {g}"


# ---- 6. micro-batches with the global valid count reproduce the full batch --------------


@FIXTURE_SETTINGS
@given(data=st.data())
def test_split_batch_with_global_normalizer_reproduces_full_batch(xp, data):
    shape = draw_shape(data, min_dims=1, allow_empty=False)
    shape = (4, *shape[1:])
    case = draw_case(data, xp, shape=shape)
    ndim = len(shape)
    others = data.draw(st.lists(st.integers(1, ndim - 1), unique=True)) if ndim > 1 else []
    axis = data.draw(st.sampled_from([None, (0, *others)]), label="axis")
    # parts of sizes 1 and 2 only (few distinct shapes for JAX to compile)
    cuts = data.draw(st.sampled_from([[], [2], [1, 3], [1, 2, 3]]), label="cuts")
    bounds = list(zip([0, *cuts], [*cuts, shape[0]], strict=True))

    full_mask = np.ones(shape, bool) if case.mask is None else np.broadcast_to(case.mask, shape)
    count = xp.run(ml.valid_count, xp.asarray(np.array(full_mask)),
                   weights=case.weights_in(xp), axis=axis)
    if axis is None and data.draw(st.booleans(), label="python normalizer"):
        count = float(xp.to_numpy(count))  # e.g. after an all-reduce on the host

    def part(a: np.ndarray | None, lo: int, hi: int) -> np.ndarray | None:
        return a if a is None or a.shape[0] == 1 else a[lo:hi]

    # autodiff backends: the summed value and the gradient of each part (one call per part);
    # the others: each part's value array
    outs, grads = [], []
    for lo, hi in bounds:
        sub = replace(
            case, pred=case.pred[lo:hi], target=case.target[lo:hi], mask=part(case.mask, lo, hi),
            weights=part(case.weights, lo, hi), valid=case.valid[lo:hi],
        )
        options = {"weights": sub.weights_in(xp), "axis": axis, "normalizer": count}
        if xp.grad is None:
            outs.append(xp.to_numpy(xp.run(ml.masked_mse, *sub.arrays(xp), **options)))
        else:
            value, *g = xp.value_and_grad(ml.masked_mse, *sub.arrays(xp), **options)
            outs.append(value)
            grads.append(g)
    total = sum(np.asarray(o, dtype=np.float64) for o in outs)
    want, dwant, scale = loss_oracle("masked_mse", case, "mean", axis)
    options = {"weights": case.weights_in(xp), "axis": axis}
    if xp.grad is None:
        full = xp.to_numpy(xp.run(ml.masked_mse, *case.arrays(xp), **options))
        assert_close(full, want, scale, case.dtype, "full batch")
        assert_close(total, np.asarray(full, np.float64), scale, case.dtype, "sum of parts")
    else:
        full, *full_grads = xp.value_and_grad(ml.masked_mse, *case.arrays(xp), **options)
        assert_close(full, np.sum(want), np.sum(scale), case.dtype, "full batch")
        assert_close(total, np.asarray(full, np.float64), np.sum(scale), case.dtype, "parts")
        split_grads = [np.concatenate([g[i] for g in grads], axis=0) for i in range(2)]
        for got, ref in zip(split_grads, full_grads, strict=True):
            ref = np.asarray(ref, np.float64)
            assert_close(got, ref, np.zeros_like(ref), case.dtype, "split gradient")
        _check_grads(xp, tuple(split_grads), dwant, case, (1.0, -1.0))
