"""Mask-aware reductions: the one place where masked terms are summed and divided.

Every loss in this package computes elementwise terms that are exactly zero (and finite) at
masked positions, then calls :func:`reduce_terms`. The public reductions
:func:`masked_sum`, :func:`masked_mean` and :func:`valid_count` are thin wrappers around the
same helpers, so a loss's ``"mean"`` and ``masked_mean`` of its ``"none"`` output agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._fastpath import divide_by_count
from ._namespace import array_namespace
from ._validate import (
    as_number,
    broadcast_shapes,
    check_broadcastable,
    check_floating,
    check_mask_dtype,
    check_normalizer,
    check_normalizer_shape,
    compute_dtypes,
    normalize_axis,
)

__all__ = [
    "finish_reduction",
    "masked_mean",
    "masked_sum",
    "reduce_terms",
    "resolve_validity",
    "valid_count",
]

Array = Any
Axis = int | Sequence[int] | None


def cast(xp: Any, x: Array, dtype: Any) -> Array:
    """``x`` in ``dtype``, without a copy when it already is."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def normalizer_array(normalizer: Any) -> Array | None:
    """The normalizer if it is an array (so it joins the namespace check), else None."""
    if normalizer is None or isinstance(normalizer, bool) or as_number(normalizer) is not None:
        return None  # a bool is refused by check_normalizer with a clearer message
    return normalizer


def resolve_validity(
    xp: Any,
    mask: Array | None,
    weights: Array | None,
    shape: Sequence[int | None],
    dtype: Any,
    of: str = "pred",
) -> tuple[Array | None, Array | None]:
    """Combine ``mask`` and ``weights`` into ``(valid, weights)``.

    An entry is valid where the mask is nonzero *and* the weight is nonzero. The returned
    weights are in ``dtype`` and exactly zero wherever the entry is not valid (even if the
    caller's weight there was NaN). Both are broadcastable to ``shape``; ``None`` stands for
    "all valid" and "unweighted". ``of`` names the array of shape ``shape`` in errors.
    """
    valid = None
    if mask is not None:
        check_mask_dtype(xp, mask, "mask")
        check_broadcastable(mask, "mask", shape, of)
        valid = mask if xp.isdtype(mask.dtype, "bool") else mask != 0
    if weights is None:
        return valid, None
    check_mask_dtype(xp, weights, "weights")
    check_broadcastable(weights, "weights", shape, of)
    w = cast(xp, weights, dtype)
    nonzero = w != 0
    valid = nonzero if valid is None else valid & nonzero
    return valid, xp.where(valid, w, 0.0)


def _out_shape(shape: Sequence[int], axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    return tuple(d for i, d in enumerate(shape) if i not in axis)


def _safe_divide(xp: Any, num: Array, den: Any, dtype: Any) -> Array:
    """``num / den`` where ``den != 0``, else exactly 0 with zero gradient."""
    number = as_number(den)
    if number is not None:
        return num / number if number != 0 else num * 0.0
    den = cast(xp, den, dtype)
    nonzero = den != 0
    return xp.where(nonzero, num / xp.where(nonzero, den, 1.0), 0.0)


def count_nonzero(xp: Any, x: Array, axis: tuple[int, ...] | None) -> Array:
    """``xp.count_nonzero(x, axis=axis)``, also right for ``axis=()`` (reduce nothing).

    array-api-compat's torch wrapper reduces *every* axis when given ``axis=()``; counting
    over a new trailing size-1 axis instead gives the elementwise 0/1 count everywhere.
    """
    if axis == ():
        return xp.count_nonzero(x[..., None], axis=-1)
    return xp.count_nonzero(x, axis=axis)


def broadcast_like(xp: Any, x: Any, like: Array) -> Array:
    """``x`` broadcast to ``like``'s shape, also when a dimension is unknown (``None``).

    Under ``tf.function`` a dimension can be unknown at trace time; ``where`` then
    broadcasts against the runtime shape (the values are ``x``'s, whatever ``like`` holds).
    """
    shape = tuple(like.shape)
    if None not in shape:
        if hasattr(x, "shape") and tuple(x.shape) == shape:
            return x  # already that shape (the common case): no op to dispatch
        return xp.broadcast_to(x, shape)
    return xp.where(xp.isnan(like), x, x)


def reduce_terms(
    xp: Any,
    terms: Array,
    valid: Array | None,
    weights: Array | None,
    *,
    reduction: str,
    axis: tuple[int, ...] | None,
    normalizer: Any,
    out_dtype: Any,
) -> Array:
    """Reduce elementwise ``terms`` that are already exactly 0 at invalid positions.

    Args:
        xp: the array namespace.
        terms: elementwise values in the compute dtype, shape ``S``.
        valid: bool validity broadcastable to ``S``, or None when everything is valid.
        weights: weights broadcastable to ``S``, zero where invalid, or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (already checked).
        axis: normalised axes to reduce, or None for all.
        normalizer: replaces the denominator of ``"mean"`` (number or array), or None.
        out_dtype: dtype of the result.

    Returns:
        ``Σ w·terms / Σ w`` (mean), ``Σ w·terms`` (sum) or ``w·terms`` (none).
    """
    weighted = terms if weights is None else terms * weights
    if reduction == "none":
        return cast(xp, weighted, out_dtype)
    return finish_reduction(
        xp, xp.sum(weighted, axis=axis), terms, valid, weights, reduction=reduction,
        axis=axis, normalizer=normalizer, out_dtype=out_dtype,
    )


def finish_reduction(
    xp: Any,
    num: Array,
    like: Array,
    valid: Array | None,
    weights: Array | None,
    *,
    reduction: str,
    axis: tuple[int, ...] | None,
    normalizer: Any,
    out_dtype: Any,
) -> Array:
    """Turn the reduced numerator ``num = Σ w·terms`` into the ``"sum"`` or ``"mean"``.

    Args:
        xp: the array namespace.
        num: the numerator, reduced over ``axis``, in the compute dtype.
        like: any array of the full elementwise shape ``S`` in the compute dtype.
        valid: as for :func:`reduce_terms`.
        weights: as for :func:`reduce_terms`.
        reduction: ``"mean"`` or ``"sum"``.
        axis: normalised axes that ``num`` was reduced over, or None for all.
        normalizer: replaces the denominator of ``"mean"``, or None.
        out_dtype: dtype of the result.

    Returns:
        ``num`` (sum) or ``num / Σ w`` (mean; exactly 0 where the denominator is 0).
    """
    if reduction == "sum":
        return cast(xp, num, out_dtype)
    terms = like
    shape = tuple(terms.shape)
    if normalizer is not None:
        if as_number(normalizer) is None:
            check_normalizer_shape(normalizer, _out_shape(shape, axis))
        den = normalizer
    elif weights is not None:
        den = xp.sum(broadcast_like(xp, weights, terms), axis=axis)
    elif valid is not None:  # an exact integer count: 0 only where num is exactly 0 too
        count = count_nonzero(xp, broadcast_like(xp, valid, terms), axis=axis)
        return cast(xp, divide_by_count(xp, num, count, terms.dtype), out_dtype)
    elif None in shape:  # unknown dimension under tf.function: count at run time
        den = count_nonzero(xp, broadcast_like(xp, True, terms), axis=axis)
    else:  # a list, not a generator: torch.compile cannot trace a generator here
        den = math.prod(shape) if axis is None else math.prod([shape[i] for i in axis])
    return cast(xp, _safe_divide(xp, num, den, terms.dtype), out_dtype)


def _masked_reduce(
    values: Array,
    mask: Array | None,
    weights: Array | None,
    axis: Axis,
    reduction: str,
    normalizer: Any,
) -> Array:
    xp = array_namespace(
        values=values, mask=mask, weights=weights, normalizer=normalizer_array(normalizer)
    )
    check_floating(xp, values, "values")
    check_normalizer(normalizer, reduction)
    axes = normalize_axis(axis, len(values.shape), "values")
    out_dtype, dtype = compute_dtypes(xp, values)
    valid, w = resolve_validity(xp, mask, weights, values.shape, dtype, "values")
    terms = cast(xp, values, dtype)
    if valid is not None:
        terms = xp.where(valid, terms, 0.0)
    return reduce_terms(
        xp, terms, valid, w, reduction=reduction, axis=axes, normalizer=normalizer,
        out_dtype=out_dtype,
    )


def masked_sum(
    values: Array, /, mask: Array | None = None, *, weights: Array | None = None, axis: Axis = None
) -> Array:
    """Sum of ``weights * values`` over valid entries; masked entries count exactly 0.

    Args:
        values: floating array, shape ``S``. May hold NaN/inf at masked positions.
        mask: bool or numeric (nonzero = valid), same number of axes as ``values``
            (size-1 axes broadcast). None means all valid.
        weights: numeric, broadcastable like ``mask``; a zero weight also masks the entry.
        axis: int or tuple of ints to reduce (negative allowed); None reduces all axes.

    Returns:
        Array of ``values``' dtype with the reduced axes removed.

    Example:
        >>> import numpy as np
        >>> from masked_losses import masked_sum
        >>> float(masked_sum(np.array([1.0, np.nan, 3.0]), np.array([True, False, True])))
        4.0
    """
    return _masked_reduce(values, mask, weights, axis, "sum", None)


def masked_mean(
    values: Array,
    /,
    mask: Array | None = None,
    *,
    weights: Array | None = None,
    axis: Axis = None,
    normalizer: Any = None,
) -> Array:
    """Mean of ``values`` over valid entries: ``Σ w·m·v / Σ w·m``; 0 when nothing is valid.

    Args:
        values: floating array, shape ``S``. May hold NaN/inf at masked positions.
        mask: bool or numeric (nonzero = valid), same number of axes as ``values``.
        weights: numeric weights broadcastable to ``S``; a zero weight also masks the entry.
        axis: axes to reduce; None reduces all.
        normalizer: number or array (of the reduced shape) that replaces ``Σ w·m``, e.g. a
            valid count gathered across data-parallel ranks or micro-batches.

    Returns:
        Array of ``values``' dtype with the reduced axes removed.

    Example:
        >>> import numpy as np
        >>> from masked_losses import masked_mean
        >>> float(masked_mean(np.array([1.0, np.nan, 3.0]), np.array([1, 0, 1])))
        2.0
    """
    return _masked_reduce(values, mask, weights, axis, "mean", normalizer)


def valid_count(mask: Array, /, *, weights: Array | None = None, axis: Axis = None) -> Array:
    """Number of valid entries (``Σ m``), or the valid weight total ``Σ w·m`` with weights.

    The unweighted count is computed with integers (``count_nonzero``), so it is exact for
    any size; pass it as ``normalizer=`` after summing it across ranks or micro-batches.
    The count is over the shape ``mask`` and ``weights`` broadcast to: a per-sample mask of
    shape ``(N, 1)`` for ``(N, D)`` data counts samples, not entries, so broadcast it to the
    data's shape first when the result is meant as a loss's ``normalizer``.

    Args:
        mask: bool or numeric (nonzero = valid), shape ``S``.
        weights: numeric, same number of axes as ``mask``; size-1 axes of either broadcast.
            Integer weights are summed in float32.
        axis: axes to reduce; None reduces all.

    Returns:
        Integer array without weights; weights' dtype with weights.

    Example:
        >>> import numpy as np
        >>> from masked_losses import valid_count
        >>> int(valid_count(np.array([[True, False], [True, True]])))
        3
    """
    xp = array_namespace(mask=mask, weights=weights)
    check_mask_dtype(xp, mask, "mask")
    axes = normalize_axis(axis, len(mask.shape), "mask")
    shape = tuple(mask.shape) if weights is None else broadcast_shapes(mask, weights)
    dtype = None
    if weights is not None:
        check_mask_dtype(xp, weights, "weights")
        floating = xp.isdtype(weights.dtype, "real floating")
        dtype = weights.dtype if floating else xp.float32
    valid, w = resolve_validity(xp, mask, weights, shape, dtype)
    if w is None:
        return count_nonzero(xp, xp.broadcast_to(valid, shape), axis=axes)
    return xp.sum(xp.broadcast_to(w, shape), axis=axes)

