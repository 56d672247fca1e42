"""Streaming masked regression metrics: exact per-task error statistics over an epoch.

A masked *loss* is averaged per batch; an evaluation metric must be averaged over the
whole epoch, and the mean of per-batch means is biased when batches hold different numbers
of valid labels (a batch with one valid label weighs as much as one with a thousand). The
accumulator here keeps sums instead of means, so the result is exact however the epoch is
split into batches or shards:

* :class:`MaskedMetrics` is the state: four arrays of shape ``(T,)`` (one entry per task),
  holding the valid weight total ``Σ w·m`` and the sums ``Σ w·m·e``, ``Σ w·m·e²`` and
  ``Σ w·m·|e|`` of the error ``e = pred - target``.
* :func:`metrics_init`, :func:`metrics_update`, :func:`metrics_merge` and
  :func:`metrics_compute` create, update, combine and read it (also available as methods).
* Merging is elementwise addition of the four arrays, so **an all-reduce (sum) of the state
  arrays across data-parallel ranks is the same as merging the ranks' states**
  (``torch.distributed.all_reduce`` on each field, ``jax.lax.psum(state, axis_name)`` on the
  whole state, which is a pytree because it is a ``NamedTuple``).

The *task axis* (default: the last axis) is the one axis that is kept; every other axis (batch,
time, ...) is summed. ``task_axis=None`` sums every axis (one scalar "task"); for 1-D
predictions, ``task_axis=-1`` makes every entry its own task (sums over batches only).
PyTorch users merge the ranks' states with :func:`masked_losses.torch.all_reduce_metrics`.

A task with no valid entry gets ``count == 0`` and **NaN** for every metric. A loss returns 0
there, because a loss must keep the gradient finite; a metric has no gradient, and a mean over
nothing is undefined: NaN says "no labels" where 0 would claim a perfect score.

The sums reuse the core reductions (:func:`masked_losses.masked_mse`,
:func:`masked_losses.masked` and :func:`masked_losses.valid_count`), so masked entries
contribute exactly nothing whatever they hold (NaN and ±inf included), on every backend.

Example:
    >>> import numpy as np
    >>> from masked_losses import metrics_compute, metrics_init, metrics_update
    >>> pred = np.array([[1.0, 2.0], [3.0, 5.0], [0.0, 9.0]])
    >>> target = np.array([[2.0, np.nan], [3.0, 4.0], [np.nan, np.nan]])
    >>> state = metrics_init(pred)
    >>> for rows in (slice(0, 1), slice(1, 3)):   # two batches of one epoch
    ...     p, t = pred[rows], target[rows]
    ...     state = metrics_update(state, p, t, ~np.isnan(t))
    >>> m = metrics_compute(state)
    >>> m.count.tolist(), m.mean_error.tolist(), m.mse.tolist()
    ([2.0, 1.0], [-0.5, 1.0], [0.5, 1.0])
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._errors import ArgumentError, ShapeError
from ._losses import masked, masked_mse
from ._namespace import array_namespace
from ._reduce import Array, cast, valid_count
from ._validate import check_floating, check_same_shape, compute_dtypes

__all__ = [
    "MaskedMetrics",
    "MetricValues",
    "metrics_compute",
    "metrics_init",
    "metrics_merge",
    "metrics_update",
]


class MetricValues(NamedTuple):
    """The metrics of a :class:`MaskedMetrics` state, each of shape ``(T,)`` (or ``()``).

    Attributes:
        count: the valid count (the valid weight total ``Σ w·m`` with weights).
        mean_error: the mean signed error ``Σ w·m·(pred - target) / Σ w·m`` (the bias;
            positive when the predictions are too high).
        mse: the mean squared error.
        rmse: the root mean squared error, ``sqrt(mse)``.
        mae: the mean absolute error.

    Every metric is NaN for a task whose ``count`` is 0.
    """

    count: Array
    mean_error: Array
    mse: Array
    rmse: Array
    mae: Array


class MaskedMetrics(NamedTuple):
    """Sufficient statistics of masked regression metrics, one entry per task.

    All four fields are arrays of the same shape ``(T,)`` (``()`` with ``task_axis=None``),
    dtype and library. The state is immutable: :meth:`update` and :meth:`merge` return a new
    one. Because it is a ``NamedTuple`` it is a JAX pytree (it passes through ``jax.jit``,
    ``jax.lax.scan`` and ``jax.lax.psum``) and a ``tf.nest`` structure, and
    ``MaskedMetrics(*(all_reduce(a) for a in state))`` merges the states of all ranks.

    Attributes:
        count: ``Σ w·m``, the valid count (or valid weight total) per task.
        sum_error: ``Σ w·m·(pred - target)``.
        sum_squared_error: ``Σ w·m·(pred - target)²``.
        sum_abs_error: ``Σ w·m·|pred - target|``.

    Example:
        >>> import numpy as np
        >>> from masked_losses import MaskedMetrics
        >>> pred, target = np.array([[1.0], [4.0]]), np.array([[0.0], [np.nan]])
        >>> state = MaskedMetrics.init(pred).update(pred, target, ~np.isnan(target))
        >>> state.compute().rmse.tolist()
        [1.0]
    """

    count: Array
    sum_error: Array
    sum_squared_error: Array
    sum_abs_error: Array

    @classmethod
    def init(
        cls, like: Array, /, *, task_axis: int | None = -1, dtype: Any = None
    ) -> MaskedMetrics:
        """The empty state for batches like ``like``; see :func:`metrics_init`."""
        return metrics_init(like, task_axis=task_axis, dtype=dtype)

    def update(
        self,
        pred: Array,
        target: Array,
        /,
        mask: Array | None = None,
        *,
        weights: Array | None = None,
        task_axis: int | None = -1,
    ) -> MaskedMetrics:
        """This state plus one batch; see :func:`metrics_update`."""
        return metrics_update(self, pred, target, mask, weights=weights, task_axis=task_axis)

    def merge(self, *others: MaskedMetrics) -> MaskedMetrics:
        """This state merged with ``others``; see :func:`metrics_merge`."""
        return metrics_merge(self, *others)

    def compute(self) -> MetricValues:
        """The metrics of this state; see :func:`metrics_compute`."""
        return metrics_compute(self)


def _signed_error(pred: Array, target: Array) -> Array:
    return pred - target


def _absolute_error(pred: Array, target: Array) -> Array:
    return abs(pred - target)


_masked_error = masked(_signed_error)
_masked_abs_error = masked(_absolute_error)


def _all_true(x: Array) -> Array:
    """A bool array of ``x``'s shape and device, all True.

    Written with comparisons only (``x == x`` is False exactly at NaN) because the Array API
    subset that every backend of the core provides, the TensorFlow shim included, has no
    ``ones_like``.
    """
    same = x == x
    return same | ~same


def _reduced_axes(ndim: int, task_axis: int | None) -> tuple[int, ...] | None:
    """The axes to sum: every axis but ``task_axis`` (None: every axis)."""
    if task_axis is None:
        return None
    if isinstance(task_axis, bool) or not isinstance(task_axis, int):
        raise ArgumentError(f"task_axis must be an int or None, got {task_axis!r}.")
    if not -ndim <= task_axis < ndim:
        raise ArgumentError(
            f"task_axis={task_axis} is out of range for arrays with {ndim} axes; use an axis in "
            f"[{-ndim}, {ndim - 1}], or task_axis=None to pool every axis into one task."
        )
    keep = task_axis % ndim
    return tuple(i for i in range(ndim) if i != keep)


def _state_dtype(xp: Any, like: Array) -> Any:
    """At least float32: sums over an epoch in 16 bits would overflow or lose the tail."""
    return compute_dtypes(xp, like)[1]


def metrics_init(like: Array, /, *, task_axis: int | None = -1, dtype: Any = None) -> MaskedMetrics:
    """The empty metrics state (all zeros) for batches of predictions like ``like``.

    Args:
        like: a floating array shaped like the predictions of one batch, e.g. the first
            batch itself; only its library, device, shape and dtype are used (its values,
            NaN included, are not).
        task_axis: the axis of ``like`` that indexes tasks (outputs); the state has one
            entry per task. Every other axis is summed over. None pools all axes into one
            scalar "task".
        dtype: the accumulation dtype (e.g. ``xp.float64`` for very long epochs in float32);
            by default ``like``'s dtype, but at least float32.

    Returns:
        A :class:`MaskedMetrics` of zeros, each field of shape ``(like.shape[task_axis],)``
        (``()`` when ``task_axis`` is None).

    Raises:
        ArgumentError: ``task_axis`` is out of range.
        DTypeError: ``like`` is not floating.

    Example:
        >>> import numpy as np
        >>> from masked_losses import metrics_init
        >>> metrics_init(np.zeros((8, 3), np.float32)).count.tolist()
        [0.0, 0.0, 0.0]
    """
    xp = array_namespace(like=like)
    check_floating(xp, like, "like")
    axes = _reduced_axes(like.ndim, task_axis)
    if axes == ():  # 1-D: one entry per task; sum over a new leading axis of size 1
        like, axes = like[None, ...], (0,)
    dtype = _state_dtype(xp, like) if dtype is None else dtype
    nothing = xp.count_nonzero(~_all_true(like), axis=axes)
    zeros = cast(xp, nothing, dtype)
    return MaskedMetrics(zeros, zeros, zeros, zeros)


def _check_compatible(states: tuple[MaskedMetrics, ...]) -> None:
    shape, dtype = tuple(states[0].count.shape), states[0].count.dtype
    for i, s in enumerate(states):
        if not isinstance(s, MaskedMetrics):
            raise ArgumentError(
                f"metrics_merge takes MaskedMetrics states, got {type(s).__name__} at position "
                f"{i}. Rebuild a state from all-reduced arrays with MaskedMetrics(*arrays)."
            )
        for name, field in zip(s._fields, s, strict=True):
            if tuple(field.shape) != shape:
                raise ShapeError(
                    f"cannot merge metrics of different shapes: the first state has shape "
                    f"{shape}, state {i} has {name} of shape {tuple(field.shape)}. Use the same "
                    "task_axis and number of tasks for every batch and rank."
                )
            if field.dtype != dtype:
                raise ShapeError(
                    f"cannot merge metrics of different dtypes: {dtype} and {field.dtype} "
                    f"({name} of state {i}). Create every state with the same dtype=."
                )


def metrics_update(
    state: MaskedMetrics,
    pred: Array,
    target: Array,
    /,
    mask: Array | None = None,
    *,
    weights: Array | None = None,
    task_axis: int | None = -1,
) -> MaskedMetrics:
    """Add one batch to ``state``: the new state is ``state`` merged with the batch's sums.

    Args:
        state: the state so far (from :func:`metrics_init` or a previous update).
        pred: predictions, real floating, shape ``S``.
        target: targets, same shape as ``pred``; missing targets may hold NaN/inf when
            ``mask`` marks them.
        mask: bool or numeric (nonzero = valid) with ``pred``'s number of axes (size-1 axes
            broadcast, e.g. a per-sample mask ``mask[:, None]``); None means all valid.
        weights: numeric weights broadcastable like ``mask``; a zero weight masks the entry.
        task_axis: the task axis of ``pred``, as given to :func:`metrics_init`.

    Returns:
        The updated :class:`MaskedMetrics` (``state`` itself is not modified).

    Raises:
        ShapeError: ``pred``/``target``/``mask`` do not fit, or the batch has a different
            number of tasks than ``state``.
        ArgumentError: ``task_axis`` is out of range.

    Example:
        >>> import numpy as np
        >>> from masked_losses import metrics_init, metrics_update
        >>> pred, target = np.array([[1.0, 2.0]]), np.array([[3.0, 2.5]])
        >>> s = metrics_update(metrics_init(pred), pred, target, weights=np.array([[2.0, 0.0]]))
        >>> s.count.tolist(), s.sum_squared_error.tolist()
        ([2.0, 0.0], [8.0, 0.0])
    """
    xp = array_namespace(pred=pred, target=target, mask=mask, weights=weights)
    check_floating(xp, pred, "pred")
    check_floating(xp, target, "target")
    check_same_shape(pred, target)
    axes = _reduced_axes(pred.ndim, task_axis)
    if axes == ():  # 1-D: reduce over a new leading axis (``axis=()`` is not portable)
        pred, target, mask, weights = (
            None if a is None else a[None, ...] for a in (pred, target, mask, weights)
        )
        axes = (0,)
    dtype = state.count.dtype
    pred, target = cast(xp, pred, dtype), cast(xp, target, dtype)
    if weights is not None:
        weights = cast(xp, weights, dtype)
    options: dict[str, Any] = {"weights": weights, "reduction": "sum", "axis": axes}
    valid = _all_true(pred) if mask is None else xp.broadcast_to(mask, tuple(pred.shape))
    batch = MaskedMetrics(
        cast(xp, valid_count(valid, weights=weights, axis=axes), dtype),
        _masked_error(pred, target, mask, **options),
        masked_mse(pred, target, mask, **options),
        _masked_abs_error(pred, target, mask, **options),
    )
    if tuple(batch.count.shape) != tuple(state.count.shape):
        raise ShapeError(
            f"the batch has {tuple(batch.count.shape)} tasks along task_axis={task_axis} "
            f"(pred of shape {tuple(pred.shape)}) but the state has "
            f"{tuple(state.count.shape)}. Pass the task_axis used in metrics_init."
        )
    return metrics_merge(state, batch)


def metrics_merge(*states: MaskedMetrics) -> MaskedMetrics:
    """Merge states of disjoint data (batches, ranks): the elementwise sum of the fields.

    Merging is associative and commutative, and equal to an all-reduce (sum) of each field
    across ranks: ``MaskedMetrics(*(all_reduce(a) for a in state))``.

    Args:
        *states: one or more :class:`MaskedMetrics` of equal shape and dtype.

    Returns:
        The merged :class:`MaskedMetrics`.

    Raises:
        ShapeError: the states differ in shape or dtype.
        ArgumentError: no state, or something that is not a :class:`MaskedMetrics`.

    Example:
        >>> import numpy as np
        >>> from masked_losses import MaskedMetrics, metrics_merge
        >>> a = MaskedMetrics(*(np.array([1.0]),) * 4)
        >>> metrics_merge(a, a, a).count.tolist()
        [3.0]
    """
    if not states:
        raise ArgumentError("metrics_merge needs at least one MaskedMetrics state, got none.")
    _check_compatible(states)
    merged = states[0]
    for s in states[1:]:
        merged = MaskedMetrics(*(a + b for a, b in zip(merged, s, strict=True)))
    return merged


def metrics_compute(state: MaskedMetrics) -> MetricValues:
    """The exact masked metrics of everything added to ``state``.

    Args:
        state: a :class:`MaskedMetrics` (after merging or all-reducing across ranks).

    Returns:
        :class:`MetricValues` with ``count``, ``mean_error`` (bias, ``pred - target``),
        ``mse``, ``rmse`` and ``mae``, each of the state's shape and dtype. Tasks with
        ``count == 0`` get NaN metrics (no valid label, so no value: see the module notes).

    Example:
        >>> import numpy as np
        >>> from masked_losses import MaskedMetrics, metrics_compute
        >>> s = MaskedMetrics(np.array([2.0, 0.0]), np.array([2.0, 0.0]),
        ...                   np.array([8.0, 0.0]), np.array([4.0, 0.0]))
        >>> m = metrics_compute(s)
        >>> m.mean_error.tolist(), m.rmse.tolist(), m.mae.tolist()
        ([1.0, nan], [2.0, nan], [2.0, nan])
    """
    xp = array_namespace(count=state.count)
    count = state.count
    some = count > 0
    den = xp.where(some, count, 1.0)

    def mean(total: Array) -> Array:
        return xp.where(some, total / den, float("nan"))

    mse = mean(state.sum_squared_error)
    return MetricValues(
        count=count,
        mean_error=mean(state.sum_error),
        mse=mse,
        rmse=mse**0.5,
        mae=mean(state.sum_abs_error),
    )
