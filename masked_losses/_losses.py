"""The masked losses: :func:`masked_mse`, :func:`epsilon_ratio_mse` and :func:`masked`.

Each loss sanitises its inputs at masked positions *before* any arithmetic (the "double
where"), computes elementwise terms that are exactly zero there, and hands them to
:func:`masked_losses._reduce.reduce_terms`. No Python branch depends on array values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import DTypeError, LabelError, ShapeError
from ._fastpath import squared_error_sum
from ._namespace import array_namespace, is_traced
from ._reduce import (
    Array,
    Axis,
    cast,
    finish_reduction,
    normalizer_array,
    reduce_terms,
    resolve_validity,
)
from ._validate import (
    check_eps,
    check_floating,
    check_normalizer,
    check_reduction,
    check_same_shape,
    compute_dtypes,
    normalize_axis,
)

__all__ = ["MaskedLoss", "epsilon_ratio_mse", "masked", "masked_mse"]


class MaskedLoss(Protocol):
    """The signature shared by :func:`masked_mse` and every loss made by :func:`masked`."""

    def __call__(
        self,
        pred: Array,
        target: Array,
        /,
        mask: Array | None = None,
        *,
        weights: Array | None = None,
        reduction: str = "mean",
        axis: Axis = None,
        normalizer: Any = None,
    ) -> Array: ...


def _prepare(
    pred: Array, target: Array, mask: Array | None, weights: Array | None,
    reduction: str, axis: Axis, normalizer: Any,
) -> tuple[Any, tuple[int, ...] | None, Any, Any]:
    """Checks shared by every loss; returns ``(xp, axes, out_dtype, compute_dtype)``."""
    xp = array_namespace(
        pred=pred, target=target, mask=mask, weights=weights,
        normalizer=normalizer_array(normalizer),
    )
    check_floating(xp, pred, "pred")
    check_floating(xp, target, "target")
    check_same_shape(pred, target)
    check_reduction(reduction)
    check_normalizer(normalizer, reduction)
    axes = normalize_axis(axis, len(pred.shape))
    if reduction == "none" and axes is not None:
        from ._errors import ArgumentError

        raise ArgumentError(
            f"axis={axis!r} has no effect with reduction='none'; drop axis, or use "
            "reduction='mean' or 'sum' to reduce only those axes."
        )
    out_dtype, dtype = compute_dtypes(xp, pred, target)
    return xp, axes, out_dtype, dtype


def _apply(
    fn: Callable[[Array, Array], Array],
    pred: Array,
    target: Array,
    mask: Array | None,
    weights: Array | None,
    reduction: str,
    axis: Axis,
    normalizer: Any,
    *,
    fill: float,
    zero_at_fill: bool,
) -> Array:
    """The masked loss machinery shared by :func:`masked_mse` and :func:`masked`."""
    xp, axes, out_dtype, dtype = _prepare(pred, target, mask, weights, reduction, axis, normalizer)
    valid, w = resolve_validity(xp, mask, weights, pred.shape, dtype)
    p, t = cast(xp, pred, dtype), cast(xp, target, dtype)
    if fn is _squared_error and axes is None and reduction != "none":
        num = squared_error_sum(xp, p, t, valid, w, dtype)
        if num is not None:  # a per-backend kernel computed the same numerator faster
            return finish_reduction(
                xp, num, p, valid, w, reduction=reduction, axis=None, normalizer=normalizer,
                out_dtype=out_dtype,
            )
    if valid is not None:
        p, t = xp.where(valid, p, fill), xp.where(valid, t, fill)
    terms = fn(p, t)
    if tuple(terms.shape) != tuple(p.shape):
        raise ShapeError(
            f"the elementwise loss {getattr(fn, '__name__', fn)!r} returned shape "
            f"{tuple(terms.shape)} for inputs of shape {tuple(p.shape)}; masked() needs an "
            "elementwise function (no reduction inside it)."
        )
    if not xp.isdtype(terms.dtype, "real floating"):
        raise DTypeError(
            f"the elementwise loss returned dtype {terms.dtype}; it must return floats."
        )
    terms = cast(xp, terms, dtype)
    if valid is not None and not zero_at_fill:
        terms = xp.where(valid, terms, 0.0)
    return reduce_terms(
        xp, terms, valid, w, reduction=reduction, axis=axes, normalizer=normalizer,
        out_dtype=out_dtype,
    )


def _squared_error(pred: Array, target: Array) -> Array:
    diff = pred - target
    return diff * diff


def masked_mse(
    pred: Array,
    target: Array,
    /,
    mask: Array | None = None,
    *,
    weights: Array | None = None,
    reduction: str = "mean",
    axis: Axis = None,
    normalizer: Any = None,
) -> Array:
    """Mean squared error over the valid entries only.

    ``"mean"`` is ``Σ w·m·(pred - target)² / Σ w·m`` over the reduced axes, and exactly 0
    (with zero gradient) when no entry is valid. Masked entries contribute exactly zero
    value and zero gradient whatever they hold, NaN and ±inf included.

    Args:
        pred: predictions, real floating, shape ``S``.
        target: targets, same shape as ``pred`` (never broadcast against it). Missing
            targets may be stored as NaN as long as ``mask`` marks them.
        mask: bool or numeric (nonzero = valid) with ``pred``'s number of axes; size-1 axes
            broadcast (a per-sample mask of ``(N, D)`` data is ``mask[:, None]``). None
            means every entry is valid.
        weights: numeric weights broadcastable like ``mask``; a zero weight masks the entry.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise ``w·(pred - target)²``,
            exactly 0 at masked positions).
        axis: int or tuple of ints to reduce (negative allowed); None reduces all axes.
        normalizer: replaces the denominator ``Σ w·m`` of ``"mean"`` (number or array of the
            reduced shape), e.g. the valid count across ranks or micro-batches.

    Returns:
        The loss in the promoted dtype of ``pred`` and ``target`` (16-bit inputs are
        accumulated in float32), with the reduced axes removed.

    Raises:
        ShapeError: ``pred``/``target`` shapes differ, or ``mask``/``weights`` do not fit.
        DTypeError: integer or bool ``pred``/``target``.
        ArgumentError: unknown ``reduction``, bad ``axis`` or ``normalizer``.
        BackendError: arrays from different libraries.

    Example:
        >>> import numpy as np
        >>> from masked_losses import masked_mse
        >>> pred = np.array([1.0, 2.0, 3.0])
        >>> target = np.array([1.5, np.nan, 2.0])   # the second target is missing
        >>> float(masked_mse(pred, target, ~np.isnan(target)))
        0.625
    """
    return _apply(
        _squared_error, pred, target, mask, weights, reduction, axis, normalizer,
        fill=0.0, zero_at_fill=True,
    )


def _check_labels(xp: Any, target: Array, mask: Array | None) -> None:
    """Raise on negative or NaN labels where ``mask`` allows; only on concrete arrays."""
    considered = None if mask is None else xp.astype(mask, xp.bool)
    bad = ~(target >= 0)
    if considered is not None:
        bad = bad & considered
    if bool(xp.any(bad)):
        nan, neg = xp.isnan(target), target < 0
        if considered is not None:
            nan, neg = nan & considered, neg & considered
        n_nan = int(xp.count_nonzero(nan))
        n_neg = int(xp.count_nonzero(neg))
        raise LabelError(
            f"epsilon_ratio_mse treats 0 as 'missing' and needs labels >= 0, but target has "
            f"{n_neg} negative and {n_nan} NaN entries. Use masked_mse with an explicit mask "
            "(labels that cross zero or missing values stored as NaN), or pass check=False "
            "if you accept the consequences."
        )


def epsilon_ratio_mse(
    pred: Array,
    target: Array,
    /,
    *,
    eps: float = 1e-6,
    mask: Array | None = None,
    weights: Array | None = None,
    reduction: str = "mean",
    axis: Axis = None,
    normalizer: Any = None,
    check: bool = True,
) -> Array:
    """The "epsilon-ratio" MSE: ``(target - pred)² · target / (target + eps)``.

    A soft mask for non-negative labels where 0 marks "missing": the ratio is 0 at
    ``target == 0`` and ≈ 1 for labels much larger than ``eps``. Reductions use the ratio as
    a weight, so ``"mean"`` divides by ``Σ target / (target + eps)`` (≈ the number of
    nonzero labels). Entries with ``target == 0`` are masked exactly: whatever ``pred``
    holds there (NaN, inf), they contribute zero value and zero gradient, to ``target`` too.

    It fails for labels that cross zero (a true 0 reads as missing, negative labels blow up
    near ``-eps``) and down-weights labels comparable to ``eps``; prefer :func:`masked_mse`.

    Args:
        pred: predictions, real floating, shape ``S``.
        target: non-negative labels, same shape as ``pred``; 0 marks a missing label.
        eps: the softening constant, a Python float > 0.
        mask: optional validity on top of ``target != 0`` (bool or numeric, nonzero =
            valid, ``pred``'s number of axes): where it is False the entry is missing
            whatever its label holds (NaN included), exactly as a 0 label.
        weights: optional numeric weights broadcastable to ``S`` (multiply the ratio).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        axis: axes to reduce; None reduces all.
        normalizer: replaces the denominator of ``"mean"``.
        check: raise :class:`LabelError` on negative or NaN labels (outside ``mask``)
            when ``target`` is concrete (the check is skipped under ``jax.jit``,
            ``torch.compile`` and ``tf.function``; it costs one device synchronisation in
            eager mode).

    Returns:
        The loss in the promoted dtype of ``pred`` and ``target``.

    Example:
        >>> import numpy as np
        >>> from masked_losses import epsilon_ratio_mse
        >>> pred = np.array([1.0, 5.0, 3.0])
        >>> target = np.array([2.0, 0.0, 3.0])   # 0 = missing
        >>> round(float(epsilon_ratio_mse(pred, target)), 6)
        0.5
    """
    check_eps(eps)
    xp, axes, out_dtype, dtype = _prepare(
        pred, target, mask, weights, reduction, axis, normalizer
    )
    terms, valid, ratio = epsilon_ratio_terms(xp, pred, target, eps, weights, dtype, mask)
    if check and not is_traced(target):
        _check_labels(xp, target, mask)
    return reduce_terms(
        xp, terms, valid, ratio, reduction=reduction, axis=axes,
        normalizer=normalizer, out_dtype=out_dtype,
    )


def epsilon_ratio_terms(
    xp: Any,
    pred: Array,
    target: Array,
    eps: float,
    weights: Array | None,
    dtype: Any,
    mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    """``(squared errors, valid, ratio weights)`` of :func:`epsilon_ratio_mse`, unreduced.

    Shared with adapters that need the denominator ``Σ ratio`` of ``"mean"`` on its own
    (``masked_losses.jax`` and the Keras losses sum it across devices); the ratio is 0
    where ``target == 0`` or ``mask`` is False.
    """
    p, t = cast(xp, pred, dtype), cast(xp, target, dtype)
    valid, w = resolve_validity(xp, mask, weights, pred.shape, dtype)
    valid = t != 0 if valid is None else valid & (t != 0)
    t = xp.where(valid, t, 0.0)
    p = xp.where(valid, p, 0.0)
    ratio = t / (t + eps)
    if w is not None:
        ratio = ratio * w
    return _squared_error(p, t), valid, ratio


def masked(elementwise_fn: Callable[[Array, Array], Array], *, fill: float = 0.0) -> MaskedLoss:
    """Lift an elementwise loss ``fn(pred, target) -> values`` into a masked loss.

    The result has :func:`masked_mse`'s signature and guarantees. ``pred`` and ``target``
    are replaced by ``fill`` at masked positions *before* ``fn`` runs, and ``fn``'s output is
    replaced by 0 there afterwards (the "double where"), so neither the value nor the
    gradient can see what masked positions held. Choose ``fill`` inside ``fn``'s domain
    with a finite derivative (e.g. 0.5 for a loss on probabilities).

    Args:
        elementwise_fn: maps two arrays of shape ``S`` to an array of shape ``S`` (no
            reduction inside), using the arrays' own library.
        fill: the value masked inputs are replaced with before ``fn`` runs.

    Returns:
        A function ``loss(pred, target, /, mask=None, *, weights=None, reduction="mean",
        axis=None, normalizer=None)``.

    Example:
        >>> import numpy as np
        >>> from masked_losses import masked
        >>> masked_mae = masked(lambda p, t: abs(p - t))
        >>> float(masked_mae(np.array([1.0, 2.0]), np.array([3.0, np.nan]), np.array([1, 0])))
        2.0
    """

    @functools.wraps(elementwise_fn)
    def loss(
        pred: Array,
        target: Array,
        /,
        mask: Array | None = None,
        *,
        weights: Array | None = None,
        reduction: str = "mean",
        axis: Axis = None,
        normalizer: Any = None,
    ) -> Array:
        return _apply(
            elementwise_fn, pred, target, mask, weights, reduction, axis, normalizer,
            fill=fill, zero_at_fill=False,
        )

    loss.__name__ = f"masked_{getattr(elementwise_fn, '__name__', 'loss')}"
    loss.__qualname__ = loss.__name__
    loss.__doc__ = (
        f"Masked version of {getattr(elementwise_fn, '__name__', 'an elementwise loss')} "
        "with the signature and guarantees of masked_mse."
    )
    del loss.__wrapped__
    return loss
