"""PyTorch adapter: drop-in ``torch.nn.Module`` losses over partially-labelled targets.

:class:`MaskedMSELoss` and :class:`EpsilonRatioMSELoss` follow ``torch.nn.MSELoss``'s
conventions (``(input, target)`` order, ``reduction=`` fixed at construction) and add the
``mask`` and ``weight`` arguments. All the arithmetic is the backend-neutral core
(:func:`masked_losses.masked_mse`, :func:`masked_losses.epsilon_ratio_mse`); this module only
adapts the calling convention and the autocast policy. It imports PyTorch and nothing else.

The losses run on any device (no host synchronisation on the hot path, except the opt-in
label check of :class:`EpsilonRatioMSELoss` in eager mode), under ``torch.autocast``, and
under ``torch.compile(fullgraph=True)`` without graph breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._losses import epsilon_ratio_mse, masked_mse
from ._namespace import array_namespace
from ._reduce import valid_count
from ._validate import check_eps, check_reduction
from .metrics import MaskedMetrics

__all__ = [
    "EpsilonRatioMSELoss",
    "MaskedMSELoss",
    "all_reduce_metrics",
    "ddp_normalizer",
    "global_valid_count",
]

Axis = int | Sequence[int] | None

_HALF_DTYPES = (torch.float16, torch.bfloat16)

# Resolve (and cache) the namespace of torch.Tensor once, eagerly: torch.compile then sees
# a dictionary lookup instead of tracing array-api-compat's detection code.
array_namespace(tensor=torch.empty(0))


def _autocast_to_float32(x: torch.Tensor) -> torch.Tensor:
    """Cast 16-bit floats to float32 inside an autocast region, as autocast does for losses.

    ``torch.nn.functional.mse_loss`` is on autocast's float32 list, so ``torch.nn.MSELoss``
    returns float32 under autocast; the masked losses keep that behaviour. Outside autocast
    the dtype is left alone (the core accumulates 16-bit inputs in float32 anyway).
    """
    if x.dtype in _HALF_DTYPES and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


class MaskedMSELoss(torch.nn.Module):
    """Mean squared error over the valid entries only: ``torch.nn.MSELoss`` with a mask.

    ``"mean"`` is ``Σ w·m·(input - target)² / Σ w·m``, and exactly 0 with zero gradient when
    nothing is valid. Masked entries contribute exactly zero value and zero gradient to
    ``input`` and ``target`` whatever they hold, NaN and ±inf included, so a missing target
    can simply be stored as NaN.

    Args:
        reduction: ``"mean"`` (over valid entries), ``"sum"`` or ``"none"`` (elementwise
            loss, exactly 0 at masked positions).

    Shape:
        - input: ``S``, real floating (any number of axes).
        - target: ``S``, exactly the shape of ``input`` (never broadcast against it).
        - mask: bool or numeric (nonzero = valid) with ``input``'s number of axes; size-1
          axes broadcast, so a per-sample mask of ``(N, D)`` data is ``mask[:, None]``.
        - weight: like ``mask``; a zero weight also masks the entry.
        - output: a scalar, ``S`` with ``reduction="none"``, or ``S`` without the ``axis``
          axes when ``axis=`` is passed to :meth:`forward`.

    Dtype: the promoted dtype of ``input`` and ``target`` (16-bit inputs are accumulated in
    float32). Under ``torch.autocast`` 16-bit inputs are computed and returned in float32,
    as ``torch.nn.MSELoss`` does.

    Example:
        >>> import torch
        >>> from masked_losses.torch import MaskedMSELoss
        >>> loss_fn = MaskedMSELoss()
        >>> pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> target = torch.tensor([1.5, float("nan"), 2.0])   # the second target is missing
        >>> loss = loss_fn(pred, target, ~target.isnan())
        >>> loss.backward()
        >>> loss.item(), pred.grad.tolist()
        (0.625, [-0.5, 0.0, 1.0])
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        *,
        axis: Axis = None,
        normalizer: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes.

        Args:
            input: predictions.
            target: targets; entries where ``mask`` is False may hold anything (NaN, inf).
            mask: which entries are valid; None means all.
            weight: per-entry weights (broadcastable like ``mask``).
            axis: reduce only these axes (e.g. ``0`` for one loss per task).
            normalizer: replaces the denominator of ``"mean"``, e.g. a valid count gathered
                over micro-batches or data-parallel ranks.

        Returns:
            The loss tensor.
        """
        return masked_mse(
            _autocast_to_float32(input),
            _autocast_to_float32(target),
            mask,
            weights=weight,
            reduction=self.reduction,
            axis=axis,
            normalizer=normalizer,
        )

    def extra_repr(self) -> str:
        """``reduction='mean'``."""
        return f"reduction={self.reduction!r}"


class EpsilonRatioMSELoss(torch.nn.Module):
    """The "epsilon-ratio" MSE ``(target - input)² · target / (target + eps)``.

    A soft mask for non-negative labels where 0 marks "missing" (see
    :func:`masked_losses.epsilon_ratio_mse`): entries with ``target == 0`` contribute
    exactly zero value and gradient, and ``"mean"`` divides by ``Σ target / (target + eps)``.
    Prefer :class:`MaskedMSELoss` for labels that can be 0 or negative.

    Args:
        eps: the softening constant, a Python float > 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check: raise :class:`masked_losses.LabelError` on negative or NaN labels at valid
            positions. Costs one host synchronisation per call in eager mode; skipped under
            ``torch.compile``.

    Shape:
        As :class:`MaskedMSELoss`. An explicit ``mask`` is optional: where it is False the
        entry is missing, exactly as a 0 label, whatever the label holds.

    Dtype: as :class:`MaskedMSELoss` (float32 under ``torch.autocast`` for 16-bit inputs).

    Example:
        >>> import torch
        >>> from masked_losses.torch import EpsilonRatioMSELoss
        >>> loss_fn = EpsilonRatioMSELoss()
        >>> pred = torch.tensor([1.0, 5.0, 3.0])
        >>> target = torch.tensor([2.0, 0.0, 3.0])   # 0 = missing
        >>> round(loss_fn(pred, target).item(), 6)
        0.5
    """

    def __init__(self, eps: float = 1e-6, reduction: str = "mean", check: bool = True) -> None:
        super().__init__()
        check_eps(eps)
        check_reduction(reduction)
        self.eps = eps
        self.reduction = reduction
        self.check = check

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        *,
        axis: Axis = None,
        normalizer: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see the class docstring for shapes.

        Args:
            input: predictions.
            target: non-negative labels, 0 = missing.
            mask: optional extra validity; where False the label counts as missing (0).
            weight: per-entry weights (broadcastable like ``mask``).
            axis: reduce only these axes.
            normalizer: replaces the denominator of ``"mean"``.

        Returns:
            The loss tensor.
        """
        return epsilon_ratio_mse(
            _autocast_to_float32(input),
            _autocast_to_float32(target),
            eps=self.eps,
            mask=mask,
            weights=weight,
            reduction=self.reduction,
            axis=axis,
            normalizer=normalizer,
            check=self.check,
        )

    def extra_repr(self) -> str:
        """``eps=1e-06, reduction='mean', check=True``."""
        return f"eps={self.eps!r}, reduction={self.reduction!r}, check={self.check!r}"


# ---- Data-parallel normalisation (torch.distributed) --------------------------------------
# The helpers below compute normalisers only (no loss math): the valid count of a batch that
# is split across the ranks of a process group, to pass as ``normalizer=`` to the losses.
# See docs/distributed.md for the derivation and the full DDP / gradient-accumulation recipe.


def _process_group_size(group: Any) -> int | None:
    """The world size of ``group``, or None when torch.distributed is not initialised."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return int(dist.get_world_size(group))


def global_valid_count(
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    group: Any = None,
    axis: Axis = None,
) -> torch.Tensor:
    """The valid count (or valid weight total) of the global batch, summed over all ranks.

    Every rank passes its own ``mask`` (and ``weights``); the local
    :func:`masked_losses.valid_count` is all-reduced (sum) over ``group``. Without an
    initialised ``torch.distributed`` (a single process) it is the local count, so the same
    code runs with and without a launcher. It is a collective: every rank of ``group`` must
    call it, in the same order as its other collectives.

    The result is detached: it is a normaliser, a constant for autograd.

    Args:
        mask: bool or numeric (nonzero = valid), this rank's batch, shape ``S``.
        weights: optional numeric weights with ``mask``'s number of axes (size-1 axes
            broadcast); then the result is the total valid weight ``Σ w·m``.
        group: the ``torch.distributed`` process group; None is the default (world) group.
        axis: reduce only these axes (e.g. ``0`` for one count per task, to pair with the
            losses' ``axis=0``); None reduces all.

    Returns:
        A tensor on ``mask``'s device: ``int64`` without weights, ``weights``' floating dtype
        (float32 for integer weights) with weights; shape ``S`` without the ``axis`` axes.

    Example:
        >>> import torch
        >>> from masked_losses.torch import global_valid_count
        >>> int(global_valid_count(torch.tensor([[True, False], [True, True]])))  # 1 process
        3
    """
    count = valid_count(mask, weights=weights, axis=axis).detach()
    if _process_group_size(group) is not None:
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.SUM, group=group)
    return count


def ddp_normalizer(
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    group: Any = None,
    axis: Axis = None,
) -> torch.Tensor:
    """The per-rank ``normalizer=`` that makes DDP's averaged gradient the full-batch one.

    ``DistributedDataParallel`` *averages* gradients over the ``W`` ranks. With rank ``r``'s
    loss ``L_r = Σ_{i∈r} w_i·loss_i / c`` the averaged gradient is
    ``∇ Σ_all w_i·loss_i / (W·c)``,
    which is the gradient of the full-batch masked mean exactly when ``c = N / W``, where
    ``N`` is the global valid count: that is what this returns. (Normalising each rank by
    its own count instead weighs a rank with one valid entry as much as one with thousands.)
    A global count of 0 gives 0, and the losses then return 0 with zero gradient.

    Note that each rank's loss value is then ``W`` times its share of the global mean; the
    global mean loss is the *sum* over ranks of ``L_r / W`` (``all_reduce`` it with ``AVG``
    if you log it). Without an initialised process group this is the local count.

    Args:
        mask: bool or numeric (nonzero = valid), this rank's batch (for gradient
            accumulation: the masks of all micro-batches of the step, concatenated).
        weights: optional numeric weights, as for :func:`global_valid_count`.
        group: the process group DDP averages over; None is the default group.
        axis: reduce only these axes (to pair with the loss's ``axis=``).

    Returns:
        A floating tensor ``N / W`` on ``mask``'s device (detached).

    Example:
        >>> import torch
        >>> from masked_losses.torch import MaskedMSELoss, ddp_normalizer
        >>> pred, target = torch.zeros(4, 1), torch.tensor([[1.0], [float("nan")], [3.0], [1.0]])
        >>> mask = ~target.isnan()
        >>> loss = MaskedMSELoss()(pred, target, mask, normalizer=ddp_normalizer(mask))
        >>> round(loss.item(), 4)   # one process: the ordinary masked mean
        3.6667
    """
    count = global_valid_count(mask, weights, group=group, axis=axis)
    world = _process_group_size(group) or 1
    if not count.is_floating_point():
        count = count.to(torch.get_default_dtype())
    return count / world


def all_reduce_metrics(state: MaskedMetrics, *, group: Any = None) -> MaskedMetrics:
    """Merge the :class:`masked_losses.MaskedMetrics` of all ranks (sum all-reduce).

    Merging metric states is elementwise addition, so this is one ``all_reduce`` per field.
    The input state is not modified. Without an initialised process group it is returned
    unchanged.

    Args:
        state: this rank's metrics state (torch tensors, same shape on every rank).
        group: the process group; None is the default group.

    Returns:
        The merged state, identical on every rank.

    Example:
        >>> import torch
        >>> from masked_losses import metrics_init, metrics_update
        >>> from masked_losses.torch import all_reduce_metrics
        >>> pred = torch.tensor([[1.0], [2.0]])
        >>> state = metrics_update(metrics_init(pred), pred, torch.zeros(2, 1))
        >>> all_reduce_metrics(state).compute().mse.tolist()   # 1 process: unchanged
        [2.5]
    """
    if _process_group_size(group) is None:
        return state
    fields = []
    for field in state:
        field = field.detach().clone()
        torch.distributed.all_reduce(field, op=torch.distributed.ReduceOp.SUM, group=group)
        fields.append(field)
    return MaskedMetrics(*fields)
