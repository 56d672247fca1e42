"""Keras 3 adapter: masked regression losses for ``model.compile``, on every Keras backend.

:class:`MaskedMeanSquaredError` and :class:`EpsilonRatioMeanSquaredError` are
``keras.losses.Loss`` subclasses with Keras's ``(y_true, y_pred, sample_weight=None)`` call
order. They run on the TensorFlow, JAX and PyTorch backends: ``keras.ops`` turns the inputs
into backend tensors of the loss's dtype, and the backend-neutral core
(:func:`masked_losses.masked_mse`, :func:`masked_losses.epsilon_ratio_mse`) does all of the
arithmetic. This module imports Keras only (Keras imports its backend).

How "mean" is computed (the design choice): Keras' ``Loss.__call__`` multiplies the
elementwise loss by ``sample_weight`` and then divides by the number of *elements*
(``"sum_over_batch_size"``), which would shrink the loss of a head whose targets are mostly
missing. These classes therefore override ``__call__``: ``sample_weight`` is passed to the
core as ``weights``, and the whole reduction happens there, so ``reduction="mean"`` returns
exactly ``Σ w·m·loss / Σ w·m`` over the valid entries, and 0 (with zero gradient) for a batch
without any valid entry. ``call(y_true, y_pred)`` returns the unweighted elementwise loss,
exactly 0 at missing entries.

What counts as missing (``m = 0``):

* a NaN in ``y_true`` (always), or a ``y_true`` equal to ``mask_value`` when one is given;
* a zero ``sample_weight`` (any shape that lines up with the leading axes of ``y_true``,
  e.g. ``(batch,)`` for ``(batch, d)`` targets; trailing axes are added);
* a Keras mask attached to ``y_pred`` (``Masking``/``Embedding(mask_zero=True)`` layers),
  as the built-in Keras losses do.

Other conventions kept from Keras: ``y_true`` of shape ``(N,)`` against ``y_pred`` of shape
``(N, 1)`` is aligned by adding the size-1 axis (as ``keras.losses.MeanSquaredError`` does;
it is never broadcast to ``(N, N)``), and both are cast to the loss's ``dtype``
(``keras.backend.floatx()`` by default, also under a mixed-precision policy).

Under ``tf.distribute`` with several replicas, ``"mean"`` divides each replica's masked sum
by the valid count of the *global* batch (all-reduced over the replicas), so the summed
replica gradients equal the full-batch gradient; see the section at the end of this module
and ``docs/distributed.md``.
"""

from __future__ import annotations

import sys
from typing import Any

import keras
from keras import ops

from ._errors import ArgumentError, ShapeError
from ._losses import _prepare, epsilon_ratio_mse, epsilon_ratio_terms, masked_mse
from ._reduce import valid_count
from ._validate import check_eps

__all__ = ["EpsilonRatioMeanSquaredError", "MaskedMeanSquaredError"]

try:  # the same accessor Keras' own Loss.__call__ uses; private, hence guarded
    from keras.src.backend import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover - a Keras without it: no Keras masks
    def _get_keras_mask(x: Any) -> Any:
        return None

_REDUCTIONS = {"mean": "mean", "sum": "sum", "none": "none", None: "none"}


def _core_reduction(reduction: str | None) -> str:
    """Map a Keras ``reduction`` to the core's; reject Keras' batch-size reductions."""
    if reduction not in _REDUCTIONS:
        raise ArgumentError(
            f"reduction must be 'mean' (over the valid entries), 'sum' or 'none', got "
            f"{reduction!r}. Keras' 'sum_over_batch_size' divides by all entries, missing "
            "ones included, which is what these losses avoid: use 'mean'."
        )
    return _REDUCTIONS[reduction]


def _rank(x: Any) -> int:
    return len(x.shape)


def _align_ranks(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Add the trailing size-1 axis that one side lacks, as Keras' own losses do."""
    rt, rp = _rank(y_true), _rank(y_pred)
    if rt + 1 == rp and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    elif rp + 1 == rt and y_true.shape[-1] == 1:
        y_pred = ops.expand_dims(y_pred, -1)
    return y_true, y_pred


def _match_rank(x: Any, rank: int, name: str, shape: Any) -> Any:
    """Give ``x`` exactly ``rank`` axes: add trailing axes, or drop trailing size-1 axes."""
    while _rank(x) < rank:
        x = ops.expand_dims(x, -1)
    while _rank(x) > rank and x.shape[-1] == 1:
        x = ops.squeeze(x, axis=-1)
    if _rank(x) != rank:
        raise ShapeError(
            f"{name} of shape {tuple(x.shape)} does not line up with y_true of shape "
            f"{tuple(shape)}; pass a {name} of shape (batch,) or y_true's shape."
        )
    return x


class _MaskedLossBase(keras.losses.Loss):
    """Shared plumbing: dtype conversion, rank alignment, missing-entry mask, weights."""

    def __init__(
        self, *, reduction: str | None, name: str | None, dtype: Any
    ) -> None:
        self._core_reduction = _core_reduction(reduction)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _inputs(
        self, y_true: Any, y_pred: Any, sample_weight: Any
    ) -> tuple[Any, Any, Any, Any]:
        """``(y_true, y_pred, keras_mask, weights)`` as backend tensors of one dtype."""
        keras_mask = _get_keras_mask(y_pred)
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true, y_pred = _align_ranks(y_true, y_pred)
        weights = None
        if sample_weight is not None:
            weights = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
            weights = _match_rank(weights, _rank(y_true), "sample_weight", y_true.shape)
        if keras_mask is not None:
            keras_mask = ops.cast(keras_mask, "bool")
            keras_mask = _match_rank(keras_mask, _rank(y_true), "the Keras mask", y_true.shape)
        return y_true, y_pred, keras_mask, weights

    def _loss(self, y_true: Any, y_pred: Any, sample_weight: Any, reduction: str) -> Any:
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The loss, reduced over the valid entries as described in the class docstring.

        Args:
            y_true: targets, shape ``S`` (or ``S`` without a trailing size-1 axis).
            y_pred: predictions, shape ``S``.
            sample_weight: optional weights, ``(batch,)``, ``S`` or anything that lines up
                with the leading axes of ``S``; a zero weight marks the entry missing.

        Returns:
            A scalar with ``"mean"``/``"sum"``, the elementwise loss with ``"none"``.
        """
        with keras.name_scope(self.name):
            return self._loss(y_true, y_pred, sample_weight, self._core_reduction)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """The unweighted elementwise loss, exactly 0 at missing entries."""
        return self._loss(y_true, y_pred, None, "none")


@keras.saving.register_keras_serializable(package="masked_losses")
class MaskedMeanSquaredError(_MaskedLossBase):
    """Mean squared error over the valid targets: ``keras.losses.MeanSquaredError`` with NaNs.

    A target is missing where ``y_true`` is NaN, equals ``mask_value`` (when given), has a
    zero ``sample_weight``, or is masked by a Keras mask on ``y_pred``. Missing entries
    contribute exactly zero to the loss and to the gradient, and ``"mean"`` is
    ``Σ w·m·(y_true - y_pred)² / Σ w·m`` over the valid entries (``w`` = ``sample_weight``,
    1 by default), exactly 0 for a batch with no valid target. ``sample_weight`` and the
    mean are handled here, not by ``keras.losses.Loss``: see the module docstring.

    Args:
        mask_value: a sentinel that marks a missing target besides NaN (e.g. ``-1.0``), or
            None for NaN only.
        reduction: ``"mean"`` (over valid entries), ``"sum"``, or ``"none"``/None
            (elementwise ``w·(y_true - y_pred)²``, 0 where missing).
        name: the loss name (shown in logs).
        dtype: the computation dtype; defaults to ``keras.backend.floatx()``.

    Shape:
        - y_true: ``S``; ``(N,)`` against a ``(N, 1)`` ``y_pred`` is aligned, not broadcast.
        - y_pred: ``S``.
        - sample_weight: ``(N,)``, ``S``, or any shape lining up with ``S``'s leading axes.

    Example:
        >>> import numpy as np
        >>> from masked_losses.keras import MaskedMeanSquaredError
        >>> loss = MaskedMeanSquaredError()
        >>> y_true = np.array([[1.5], [np.nan], [2.0]], dtype="float32")  # 2nd is missing
        >>> y_pred = np.array([[1.0], [2.0], [3.0]], dtype="float32")
        >>> float(loss(y_true, y_pred))
        0.625
        >>> # model.compile(loss={"cls": "binary_crossentropy", "reg": MaskedMeanSquaredError()})
    """

    def __init__(
        self,
        mask_value: float | None = None,
        reduction: str | None = "mean",
        name: str | None = "masked_mean_squared_error",
        dtype: Any = None,
    ) -> None:
        if mask_value is not None and (
            isinstance(mask_value, bool) or not isinstance(mask_value, (int, float))
        ):
            raise ArgumentError(
                f"mask_value must be a Python number (or None for NaN only), got "
                f"{type(mask_value).__name__}."
            )
        self.mask_value = None if mask_value is None else float(mask_value)
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def _loss(self, y_true: Any, y_pred: Any, sample_weight: Any, reduction: str) -> Any:
        y_true, y_pred, keras_mask, weights = self._inputs(y_true, y_pred, sample_weight)
        valid = ops.logical_not(ops.isnan(y_true))
        if self.mask_value is not None:
            valid = ops.logical_and(valid, ops.not_equal(y_true, self.mask_value))
        if keras_mask is not None:
            valid = ops.logical_and(valid, keras_mask)
        return masked_mse(
            y_pred, y_true, valid, weights=weights, reduction=reduction,
            normalizer=_global_normalizer(valid, weights, y_pred.dtype, reduction),
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (``keras.saving`` round trip)."""
        return {**super().get_config(), "mask_value": self.mask_value, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="masked_losses")
class EpsilonRatioMeanSquaredError(_MaskedLossBase):
    """The epsilon-ratio MSE ``(y_true - y_pred)² · y_true / (y_true + eps)`` for Keras.

    For non-negative labels where 0 marks "missing": the ratio is a soft mask (0 at
    ``y_true == 0``, ≈ 1 for labels much larger than ``eps``) and ``"mean"`` divides by its
    (``sample_weight``-weighted) sum. Entries with ``y_true == 0`` or a zero
    ``sample_weight`` contribute exactly zero value and gradient. Prefer
    :class:`MaskedMeanSquaredError` for labels that can be 0 or negative.

    Args:
        eps: the softening constant, a Python float > 0.
        reduction: ``"mean"``, ``"sum"``, or ``"none"``/None.
        check: raise :class:`masked_losses.LabelError` on negative or NaN labels when the
            labels are concrete (eager Keras, e.g. the PyTorch backend or
            ``run_eagerly=True``); skipped inside compiled train steps.
        name: the loss name.
        dtype: the computation dtype; defaults to ``keras.backend.floatx()``.

    Shape:
        Like :class:`MaskedMeanSquaredError`.

    Example:
        >>> import numpy as np
        >>> from masked_losses.keras import EpsilonRatioMeanSquaredError
        >>> loss = EpsilonRatioMeanSquaredError()
        >>> y_true = np.array([2.0, 0.0, 3.0], dtype="float32")   # 0 = missing
        >>> y_pred = np.array([1.0, 5.0, 3.0], dtype="float32")
        >>> round(float(loss(y_true, y_pred)), 5)
        0.5
    """

    def __init__(
        self,
        eps: float = 1e-6,
        reduction: str | None = "mean",
        check: bool = True,
        name: str | None = "epsilon_ratio_mean_squared_error",
        dtype: Any = None,
    ) -> None:
        check_eps(eps)
        self.eps = float(eps)
        self.check = bool(check)
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def _loss(self, y_true: Any, y_pred: Any, sample_weight: Any, reduction: str) -> Any:
        y_true, y_pred, keras_mask, weights = self._inputs(y_true, y_pred, sample_weight)
        return epsilon_ratio_mse(
            y_pred, y_true, eps=self.eps, mask=keras_mask, weights=weights,
            reduction=reduction, check=self.check,
            normalizer=_global_ratio_normalizer(
                y_pred, y_true, self.eps, keras_mask, weights, reduction
            ),
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (``keras.saving`` round trip)."""
        return {**super().get_config(), "eps": self.eps, "check": self.check, "dtype": self.dtype}


# ---- tf.distribute: "mean" over the valid entries of all replicas -------------------------
# Under a tf.distribute strategy with several replicas (MirroredStrategy,
# MultiWorkerMirroredStrategy, TPUStrategy) Keras computes the loss on each replica's share
# of the batch and SUMS the replicas' gradients; its own losses divide their per-replica mean
# by the number of replicas for that reason. A masked mean cannot: replicas hold different
# numbers of valid targets. So, when the loss runs in a replica context with more than one
# replica, "mean" returns this replica's masked sum divided by the valid count (weight
# total) of the GLOBAL batch, all-reduced over the replicas: the replicas' losses and
# gradients then add up exactly to the full-batch ones. With one replica, outside a replica
# context (e.g. Keras' symbolic build) and on the JAX/PyTorch Keras backends nothing
# changes. Only normalisers are computed here; the loss itself is the core's.


def _replica_context() -> Any:
    """The ``tf.distribute`` replica context if the loss runs on one of several replicas."""
    if keras.backend.backend() != "tensorflow":
        return None
    tf = sys.modules["tensorflow"]  # imported by Keras' TensorFlow backend
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _sum_over_replicas(context: Any, local: Any, dtype: Any) -> Any:
    """All-reduce (sum) a local denominator; a constant for autodiff."""
    tf = sys.modules["tensorflow"]
    local = tf.stop_gradient(tf.cast(local, dtype))
    return context.all_reduce(tf.distribute.ReduceOp.SUM, local)


def _global_normalizer(valid: Any, weights: Any, dtype: Any, reduction: str) -> Any:
    """``normalizer=`` of :class:`MaskedMeanSquaredError` under several replicas, else None.

    The core's ``"mean"`` divides by ``valid_count(valid, weights=weights)``; this is that
    count summed over the replicas.
    """
    context = None if reduction != "mean" else _replica_context()
    if context is None:
        return None
    return _sum_over_replicas(context, valid_count(valid, weights=weights), dtype)


def _global_ratio_normalizer(
    y_pred: Any, y_true: Any, eps: float, mask: Any, weights: Any, reduction: str
) -> Any:
    """``normalizer=`` of :class:`EpsilonRatioMeanSquaredError` under several replicas.

    The denominator of the epsilon-ratio ``"mean"`` is the sum of its ratio weights; the
    core's :func:`~masked_losses._losses.epsilon_ratio_terms` provides them.
    """
    context = None if reduction != "mean" else _replica_context()
    if context is None:
        return None
    xp, _, _, dtype = _prepare(y_pred, y_true, mask, weights, "mean", None, None)
    _, valid, ratio = epsilon_ratio_terms(xp, y_pred, y_true, eps, weights, dtype, mask)
    return _sum_over_replicas(context, valid_count(valid, weights=ratio), dtype)
