"""Argument checks shared by every loss and reduction.

All checks look only at static information (shapes, dtypes, option values), so they cost a
few microseconds, never synchronise with a device and work unchanged under ``jax.jit``,
``torch.compile`` and ``tf.function`` (where an unknown dimension is ``None`` and skipped).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

from ._errors import ArgumentError, DTypeError, ShapeError
from ._namespace import is_compiling

__all__ = [
    "REDUCTIONS",
    "as_number",
    "broadcast_shapes",
    "check_broadcastable",
    "check_eps",
    "check_floating",
    "check_mask_dtype",
    "check_normalizer",
    "check_normalizer_shape",
    "check_reduction",
    "check_same_shape",
    "compute_dtypes",
    "normalize_axis",
]

REDUCTIONS = ("mean", "sum", "none")


def _shape(x: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else d for d in x.shape)


def check_same_shape(pred: Any, target: Any) -> None:
    """Require ``pred`` and ``target`` to have exactly the same shape (no broadcasting)."""
    if pred.shape == target.shape and None not in pred.shape:
        return
    ps, ts = _shape(pred), _shape(target)
    same = len(ps) == len(ts) and all(
        a is None or b is None or a == b for a, b in zip(ps, ts, strict=True)
    )
    if not same:
        hint = ""
        if len(ps) == len(ts) + 1 and ps[-1] == 1:
            hint = " (pred has a trailing size-1 axis: use pred[..., 0] or target[..., None])"
        elif len(ts) == len(ps) + 1 and ts[-1] == 1:
            hint = " (target has a trailing size-1 axis: use target[..., 0] or pred[..., None])"
        raise ShapeError(
            f"pred and target must have the same shape, got pred {ps} and target {ts}{hint}. "
            "masked_losses never broadcasts pred against target: (N, 1) against (N,) would "
            "silently compute an (N, N) loss."
        )


def check_broadcastable(
    x: Any, name: str, shape: Sequence[int | None], of: str = "pred"
) -> None:
    """Require ``x`` to have ``len(shape)`` axes, each equal to ``shape``'s or 1.

    ``of`` names the array of shape ``shape`` (``pred``, ``values``), for the messages.
    """
    if x.shape == shape and None not in shape:
        return
    xs = _shape(x)
    if len(xs) != len(shape):
        hint = ""
        if len(xs) < len(shape):
            extra = ", ".join(["None"] * (len(shape) - len(xs)))
            hint = (
                f" A per-sample {name} of shape {xs} would broadcast along the wrong axis; "
                f"add the missing axes explicitly, e.g. {name}[:, {extra}]."
            )
        raise ShapeError(
            f"{name} must have {of}'s number of axes ({len(shape)}), got {name} of shape "
            f"{xs} for {of} of shape {tuple(shape)}.{hint}"
        )
    for i, (a, b) in enumerate(zip(xs, shape, strict=True)):
        if a is not None and b is not None and a != 1 and a != b:
            raise ShapeError(
                f"{name} of shape {xs} does not broadcast to {of}'s shape {tuple(shape)}: "
                f"axis {i} has size {a}, expected {b} or 1."
            )


def broadcast_shapes(mask: Any, weights: Any) -> tuple[int | None, ...]:
    """The shape ``mask`` and ``weights`` broadcast to; both need the same number of axes."""
    ms, ws = _shape(mask), _shape(weights)
    if len(ms) != len(ws):
        short, long_ = ("weights", "mask") if len(ws) < len(ms) else ("mask", "weights")
        extra = ", ".join(["None"] * abs(len(ms) - len(ws)))
        raise ShapeError(
            f"mask and weights must have the same number of axes, got mask of shape {ms} and "
            f"weights of shape {ws}. Add the missing size-1 axes to {short} explicitly, e.g. "
            f"{short}[:, {extra}], so that it lines up with {long_} on the axes you mean."
        )
    out: list[int | None] = []
    for i, (a, b) in enumerate(zip(ms, ws, strict=True)):
        if a is not None and b is not None and a != b and 1 not in (a, b):
            raise ShapeError(
                f"mask of shape {ms} and weights of shape {ws} do not broadcast together: "
                f"axis {i} has sizes {a} and {b}; each axis needs equal sizes or a 1."
            )
        out.append(b if a == 1 else a if b in (1, None) else b if a is None else a)
    return tuple(out)


_ISDTYPE_CACHE: dict[tuple[Any, Any, Any], bool] = {}


def _isdtype(xp: Any, dtype: Any, kind: str | tuple[str, ...]) -> bool:
    """``xp.isdtype(dtype, kind)``, memoised: it runs on every call of every loss."""
    if is_compiling():
        return bool(xp.isdtype(dtype, kind))
    key = (xp, dtype, kind)
    try:
        return _ISDTYPE_CACHE[key]
    except KeyError:
        result = _ISDTYPE_CACHE[key] = bool(xp.isdtype(dtype, kind))
        return result
    except TypeError:  # an unhashable dtype: ask every time
        return bool(xp.isdtype(dtype, kind))


def check_floating(xp: Any, x: Any, name: str) -> None:
    """Require a real floating dtype (predictions, targets, values)."""
    if not _isdtype(xp, x.dtype, "real floating"):
        raise DTypeError(
            f"{name} must have a real floating dtype, got {x.dtype}. Cast it first, "
            f"e.g. {name}.astype(float32) in NumPy or {name}.float() in PyTorch."
        )


def check_mask_dtype(xp: Any, x: Any, name: str) -> None:
    """Require a bool or real numeric dtype (masks, weights)."""
    if not _isdtype(xp, x.dtype, ("bool", "integral", "real floating")):
        raise DTypeError(
            f"{name} must be bool or real numeric (nonzero means valid), got {x.dtype}."
        )


def compute_dtypes(xp: Any, *arrays: Any) -> tuple[Any, Any]:
    """Return ``(result_dtype, compute_dtype)``.

    The result dtype follows type promotion of the inputs; 16-bit floats are computed in
    float32 so that sums neither overflow nor lose the small terms.
    """
    key = (xp, *(a.dtype for a in arrays))
    if is_compiling():
        return _compute_dtypes(xp, key[1:])
    try:
        return _DTYPES_CACHE[key]
    except KeyError:
        result = _DTYPES_CACHE[key] = _compute_dtypes(xp, key[1:])
        return result
    except TypeError:  # an unhashable dtype: work it out every time
        return _compute_dtypes(xp, key[1:])


_DTYPES_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _compute_dtypes(xp: Any, dtypes: tuple[Any, ...]) -> tuple[Any, Any]:
    out = dtypes[0] if len(dtypes) == 1 else xp.result_type(*dtypes)
    if xp.finfo(out).bits < 32:
        return out, xp.float32
    return out, out


def check_reduction(reduction: str) -> None:
    """Require one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ArgumentError(
            f"reduction must be one of {REDUCTIONS}, got {reduction!r}. Note: torch's "
            "'elementwise_mean' and Keras' 'sum_over_batch_size' are spelled 'mean' here."
        )


def normalize_axis(
    axis: int | Sequence[int] | None, ndim: int, of: str = "pred"
) -> tuple[int, ...] | None:
    """Turn ``axis`` (int, tuple of ints, or None) into a sorted tuple of non-negative ints.

    ``of`` names the array whose axes these are, for the error messages.
    """
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    elif hasattr(axis, "__index__"):
        axes = (axis,)
    else:
        raise ArgumentError(
            f"axis must be None, an int or a tuple of ints, got {axis!r} "
            f"({type(axis).__name__})."
        )
    out = []
    for a in axes:
        if isinstance(a, bool) or not hasattr(a, "__index__"):
            raise ArgumentError(
                f"axis must be None, an int or a tuple of ints, got {axis!r}; "
                f"{a!r} is a {type(a).__name__}."
            )
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise ArgumentError(
                f"axis {a} is out of range for {of} with {ndim} axes; use an axis in "
                f"[{-ndim}, {ndim - 1}]."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ArgumentError(
            f"axis {axis!r} names the same axis twice (axes of {of}: {tuple(sorted(out))} "
            "after wrapping negative ones); list each axis once."
        )
    return tuple(sorted(out))


def as_number(x: Any) -> int | float | None:
    """``x`` as a Python ``int``/``float`` if it is a real scalar (Python or NumPy), else None.

    NumPy scalars (``np.float64(3.0)``, ``np.int64(3)``) are numbers, not arrays: they must
    neither join the namespace check nor reach array libraries that refuse them.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return int(x) if isinstance(x, numbers.Integral) else float(x)


def check_normalizer(normalizer: Any, reduction: str) -> None:
    """``normalizer`` only makes sense with ``"mean"``; a Python number must be >= 0."""
    if normalizer is None:
        return
    if reduction != "mean":
        raise ArgumentError(
            f"normalizer replaces the denominator of reduction='mean'; it has no meaning "
            f"with reduction={reduction!r}. Drop normalizer or use reduction='mean'."
        )
    if isinstance(normalizer, bool):
        raise ArgumentError("normalizer must be a number or an array, got a bool.")
    number = as_number(normalizer)
    if number is not None and not (number >= 0 and math.isfinite(number)):
        raise ArgumentError(
            f"normalizer must be a finite number >= 0 (a valid count or weight sum), "
            f"got {normalizer!r}."
        )


def check_eps(eps: Any) -> None:
    """``eps`` of the epsilon-ratio loss must be a finite Python number > 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ArgumentError(f"eps must be a Python float > 0, got {type(eps).__name__}.")
    if not (eps > 0 and math.isfinite(eps)):
        raise ArgumentError(
            f"eps must be a finite number > 0, got {eps!r}; the ratio target/(target + eps) "
            "is undefined at target = 0 otherwise. The usual value is 1e-6."
        )


def check_normalizer_shape(normalizer: Any, out_shape: Sequence[int | None]) -> None:
    """An array ``normalizer`` must broadcast to the reduced output without enlarging it."""
    ns = _shape(normalizer)
    ok = len(ns) <= len(out_shape) and all(
        a is None or b is None or a in (1, b)
        for a, b in zip(reversed(ns), reversed(tuple(out_shape)), strict=False)
    )
    if not ok:
        raise ShapeError(
            f"normalizer of shape {ns} does not broadcast to the reduced loss of shape "
            f"{tuple(out_shape)}; pass a scalar or an array of the reduced shape."
        )
