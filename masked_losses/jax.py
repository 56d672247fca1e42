"""JAX adapter: the masked losses as plain functions of JAX arrays, in the optax style.

Every function here is the backend-neutral core function of the same name (arrays
positional, options keyword-only) with two additions:

- inputs are converted with ``jnp.asarray``, so NumPy arrays and Python lists give JAX
  results and gradients;
- ``axis_name=``: inside ``jax.shard_map``, ``jax.pmap`` or a named ``jax.vmap``, the
  reduction is global over that mapped axis. ``"sum"`` is the ``psum`` of the local sums and
  ``"mean"`` divides that by the ``psum`` of the local valid counts (weight totals), so every
  device gets the full-batch value and gradient, and 0 when no device has a valid entry. A
  device whose shard is entirely masked is fine.

All functions work under ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (``vmap`` over the batch
gives per-example losses). The arithmetic is the core's; this module imports JAX and nothing
else.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from masked_losses.jax import masked_mse
    >>> pred = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> target = jnp.array([[1.0, jnp.nan], [5.0, 4.0]])
    >>> mask = ~jnp.isnan(target)
    >>> jax.jit(masked_mse)(pred, target, mask)              # (0 + 4 + 0) / 3 valid entries
    Array(1.3333334, dtype=float32)
    >>> jax.vmap(masked_mse)(pred, target, mask)             # one mean per example
    Array([0., 2.], dtype=float32)
    >>> jax.grad(masked_mse)(pred, target, mask)             # exactly 0 at the NaN target
    Array([[ 0.       ,  0.       ],
           [-1.3333334,  0.       ]], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from . import _losses, _reduce
from ._errors import ArgumentError
from ._losses import _prepare, epsilon_ratio_terms
from ._validate import check_eps, check_floating, check_reduction, compute_dtypes

__all__ = [
    "epsilon_ratio_mse",
    "masked",
    "masked_mean",
    "masked_mse",
    "masked_sum",
    "valid_count",
]

Array = jax.Array
ArrayLike = Any
Axis = int | Sequence[int] | None
AxisName = Hashable | tuple[Hashable, ...] | None
JaxLoss = Callable[..., Array]


def _as_jax(x: ArrayLike | None) -> Array | None:
    """``x`` as a JAX array (tracers pass through), ``None`` stays ``None``."""
    return None if x is None else jnp.asarray(x)


def _as_normalizer(normalizer: Any) -> Any:
    """Python numbers stay numbers (the core checks them); anything else becomes an array."""
    if normalizer is None or isinstance(normalizer, (int, float)):
        return normalizer
    return jnp.asarray(normalizer)


def _check_axis_name(axis_name: AxisName, reduction: str) -> None:
    check_reduction(reduction)
    if axis_name is not None and reduction == "none":
        raise ArgumentError(
            f"axis_name={axis_name!r} sums the reduced loss over a mapped axis, but "
            "reduction='none' reduces nothing. Use reduction='mean' or 'sum', or drop "
            "axis_name."
        )


def _global_denominator(
    shape: tuple[int, ...],
    valid: Array | None,
    weights: Array | None,
    axis: Axis,
    axis_name: AxisName,
) -> Array:
    """``psum`` over ``axis_name`` of the local denominator of ``"mean"``.

    ``valid`` and ``weights`` are what the core's mean divides by (weights already 0 where
    invalid), so the core's :func:`~masked_losses.valid_count` of them is the local count
    or weight total.
    """
    valid_b = jnp.broadcast_to(True if valid is None else valid, shape)
    weights_b = None if weights is None else jnp.broadcast_to(weights, shape)
    return jax.lax.psum(_reduce.valid_count(valid_b, weights=weights_b, axis=axis), axis_name)


def _call_loss(
    core_loss: Callable[..., Array],
    pred: ArrayLike,
    target: ArrayLike,
    mask: ArrayLike | None,
    weights: ArrayLike | None,
    reduction: str,
    axis: Axis,
    normalizer: Any,
    axis_name: AxisName,
) -> Array:
    """A :class:`masked_losses.MaskedLoss`, with the global mean over ``axis_name``."""
    _check_axis_name(axis_name, reduction)
    pred, target, mask, weights = map(_as_jax, (pred, target, mask, weights))
    normalizer = _as_normalizer(normalizer)
    if axis_name is None:
        return core_loss(
            pred, target, mask, weights=weights, reduction=reduction, axis=axis,
            normalizer=normalizer,
        )
    if reduction == "mean" and normalizer is None:
        xp, _, _, dtype = _prepare(pred, target, mask, weights, reduction, axis, normalizer)
        valid, w = _reduce.resolve_validity(xp, mask, weights, pred.shape, dtype)
        normalizer = _global_denominator(pred.shape, valid, w, axis, axis_name)
    local = core_loss(
        pred, target, mask, weights=weights, reduction=reduction, axis=axis,
        normalizer=normalizer,
    )
    return jax.lax.psum(local, axis_name)


def masked_mse(
    pred: ArrayLike,
    target: ArrayLike,
    /,
    mask: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    reduction: str = "mean",
    axis: Axis = None,
    normalizer: Any = None,
    axis_name: AxisName = None,
) -> Array:
    """Mean squared error over the valid entries only (:func:`masked_losses.masked_mse`).

    Args:
        pred: predictions, real floating, shape ``S``.
        target: same shape as ``pred``; entries where ``mask`` is False may hold NaN/inf.
        mask: bool or numeric (nonzero = valid) with ``pred``'s number of axes (size-1 axes
            broadcast); None means all valid.
        weights: numeric weights broadcastable like ``mask``; a zero weight masks the entry.
        reduction: ``"mean"`` (over valid entries), ``"sum"`` or ``"none"``.
        axis: int or tuple of ints to reduce; None reduces all axes.
        normalizer: replaces the denominator of ``"mean"``. With ``axis_name`` it is taken
            as the global denominator as it is (not summed over devices).
        axis_name: a mapped axis name (``shard_map``/``pmap``/named ``vmap``): reduce over
            it too, so the mean is over the valid entries of every device.

    Returns:
        The loss, shape ``S`` without the reduced axes, the same on every device of
        ``axis_name``.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import masked_mse
        >>> pred = jnp.array([1.0, 2.0, 3.0])
        >>> target = jnp.array([1.5, jnp.nan, 2.0])
        >>> masked_mse(pred, target, ~jnp.isnan(target))
        Array(0.625, dtype=float32)
    """
    return _call_loss(
        _losses.masked_mse, pred, target, mask, weights, reduction, axis, normalizer, axis_name
    )


def epsilon_ratio_mse(
    pred: ArrayLike,
    target: ArrayLike,
    /,
    *,
    eps: float = 1e-6,
    mask: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduction: str = "mean",
    axis: Axis = None,
    normalizer: Any = None,
    check: bool = True,
    axis_name: AxisName = None,
) -> Array:
    """The "epsilon-ratio" MSE ``(target - pred)² · target / (target + eps)``.

    See :func:`masked_losses.epsilon_ratio_mse`: labels are non-negative and 0 marks
    "missing"; ``"mean"`` divides by ``Σ target / (target + eps)``, which ``axis_name``
    sums over devices. ``check`` only runs on concrete arrays (never under ``jit``).

    Args:
        pred: predictions, real floating, shape ``S``.
        target: non-negative labels, same shape; 0 = missing.
        eps: the softening constant, a Python float > 0.
        mask: optional validity on top of ``target != 0``; False marks a missing entry.
        weights: optional weights broadcastable to ``S``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        axis: axes to reduce; None reduces all.
        normalizer: replaces the denominator of ``"mean"`` (global as it is with
            ``axis_name``).
        check: raise :class:`masked_losses.LabelError` on negative or NaN labels in eager
            mode.
        axis_name: a mapped axis name to reduce over as well (global mean).

    Returns:
        The loss, shape ``S`` without the reduced axes.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import epsilon_ratio_mse
        >>> loss = epsilon_ratio_mse(jnp.array([1.0, 5.0, 3.0]), jnp.array([2.0, 0.0, 3.0]))
        >>> round(float(loss), 6)
        0.5
    """
    _check_axis_name(axis_name, reduction)
    check_eps(eps)
    pred, target, mask, weights = map(_as_jax, (pred, target, mask, weights))
    normalizer = _as_normalizer(normalizer)
    if axis_name is not None and reduction == "mean" and normalizer is None:
        xp, _, _, dtype = _prepare(pred, target, mask, weights, reduction, axis, normalizer)
        _, valid, ratio = epsilon_ratio_terms(xp, pred, target, eps, weights, dtype, mask)
        normalizer = _global_denominator(pred.shape, valid, ratio, axis, axis_name)
    local = _losses.epsilon_ratio_mse(
        pred, target, eps=eps, mask=mask, weights=weights, reduction=reduction, axis=axis,
        normalizer=normalizer, check=check,
    )
    return local if axis_name is None else jax.lax.psum(local, axis_name)


def masked_sum(
    values: ArrayLike,
    /,
    mask: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    axis_name: AxisName = None,
) -> Array:
    """Sum of ``weights * values`` over valid entries (:func:`masked_losses.masked_sum`).

    Args:
        values: floating array, shape ``S``; may hold NaN/inf at masked positions.
        mask: bool or numeric (nonzero = valid), ``values``' number of axes.
        weights: numeric, broadcastable like ``mask``.
        axis: axes to reduce; None reduces all.
        axis_name: a mapped axis name to sum over as well.

    Returns:
        ``S`` without the reduced axes.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import masked_sum
        >>> masked_sum(jnp.array([1.0, jnp.nan, 3.0]), jnp.array([True, False, True]))
        Array(4., dtype=float32)
    """
    values, mask, weights = map(_as_jax, (values, mask, weights))
    local = _reduce.masked_sum(values, mask, weights=weights, axis=axis)
    return local if axis_name is None else jax.lax.psum(local, axis_name)


def masked_mean(
    values: ArrayLike,
    /,
    mask: ArrayLike | None = None,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    normalizer: Any = None,
    axis_name: AxisName = None,
) -> Array:
    """Mean over valid entries ``Σ w·m·v / Σ w·m`` (:func:`masked_losses.masked_mean`).

    Args:
        values: floating array, shape ``S``; may hold NaN/inf at masked positions.
        mask: bool or numeric (nonzero = valid), ``values``' number of axes.
        weights: numeric, broadcastable like ``mask``.
        axis: axes to reduce; None reduces all.
        normalizer: replaces ``Σ w·m`` (global as it is with ``axis_name``).
        axis_name: a mapped axis name: numerator and count are summed over it.

    Returns:
        ``S`` without the reduced axes; 0 where nothing is valid.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import masked_mean
        >>> masked_mean(jnp.array([1.0, jnp.nan, 3.0]), jnp.array([1, 0, 1]))
        Array(2., dtype=float32)
    """
    values, mask, weights = map(_as_jax, (values, mask, weights))
    normalizer = _as_normalizer(normalizer)
    if axis_name is not None and normalizer is None:
        check_floating(jnp, values, "values")
        _, dtype = compute_dtypes(jnp, values)
        valid, w = _reduce.resolve_validity(jnp, mask, weights, values.shape, dtype)
        normalizer = _global_denominator(values.shape, valid, w, axis, axis_name)
    local = _reduce.masked_mean(values, mask, weights=weights, axis=axis, normalizer=normalizer)
    return local if axis_name is None else jax.lax.psum(local, axis_name)


def valid_count(
    mask: ArrayLike,
    /,
    *,
    weights: ArrayLike | None = None,
    axis: Axis = None,
    axis_name: AxisName = None,
) -> Array:
    """Number of valid entries, or ``Σ w·m`` with weights (:func:`masked_losses.valid_count`).

    Args:
        mask: bool or numeric (nonzero = valid), shape ``S``.
        weights: numeric, ``mask``'s number of axes.
        axis: axes to reduce; None reduces all.
        axis_name: a mapped axis name to sum over as well (the global count, e.g. to pass
            as ``normalizer=``).

    Returns:
        Integer count, or the weight total in the weights' floating dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import valid_count
        >>> int(valid_count(jnp.array([[True, False], [True, True]])))
        3
    """
    mask, weights = map(_as_jax, (mask, weights))
    local = _reduce.valid_count(mask, weights=weights, axis=axis)
    return local if axis_name is None else jax.lax.psum(local, axis_name)


def masked(elementwise_fn: Callable[[Array, Array], Array], *, fill: float = 0.0) -> JaxLoss:
    """Lift an elementwise loss into a masked JAX loss with ``axis_name=``.

    The result is :func:`masked_losses.masked` of ``elementwise_fn`` with this module's
    conventions (``jnp.asarray`` inputs, ``axis_name`` for a global mean).

    Args:
        elementwise_fn: ``fn(pred, target) -> values`` of the same shape, in ``jax.numpy``.
        fill: the value masked inputs are replaced with before ``fn`` runs.

    Returns:
        ``loss(pred, target, /, mask=None, *, weights=None, reduction="mean", axis=None,
        normalizer=None, axis_name=None)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from masked_losses.jax import masked
        >>> masked_mae = masked(lambda p, t: jnp.abs(p - t))
        >>> masked_mae(jnp.array([1.0, 2.0]), jnp.array([3.0, jnp.nan]), jnp.array([1, 0]))
        Array(2., dtype=float32)
    """
    core_loss = _losses.masked(elementwise_fn, fill=fill)

    def loss(
        pred: ArrayLike,
        target: ArrayLike,
        /,
        mask: ArrayLike | None = None,
        *,
        weights: ArrayLike | None = None,
        reduction: str = "mean",
        axis: Axis = None,
        normalizer: Any = None,
        axis_name: AxisName = None,
    ) -> Array:
        return _call_loss(
            core_loss, pred, target, mask, weights, reduction, axis, normalizer, axis_name
        )

    functools.update_wrapper(loss, core_loss, assigned=("__name__", "__qualname__", "__doc__"))
    return loss
