"""Quickstart: why a {0, 1} mask is not enough when missing targets are stored as NaN.

The situation: a regression target (an object's size) that exists only for positive samples.
The missing sizes are stored as NaN, and a mask says which entries are valid. Three ways to
compute the loss over the valid entries, side by side, in NumPy and in PyTorch (with the
gradient from autograd):

- naive masked loss ``((p - t)**2 * m).sum() / m.sum()``: NaN, the value and the gradient
  at every masked entry (hence at every shared weight), because ``0 * NaN = NaN``; and
  ``0 / 0 = NaN`` when a batch has no valid entry;
- zero imputation (replace the missing sizes by 0, average over every sample): finite, but
  it asks the model to predict size 0 for negatives, which biases the head toward 0;
- ``masked_losses.masked_mse``: the mean over the valid subset, exactly 0 gradient at the
  masked entries, and 0 (not NaN) for an all-masked batch.

Run: ``python examples/quickstart.py`` (a couple of seconds, mostly importing torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from masked_losses import masked_mse

# ----------------------------------------------------------------------------- the data


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six samples; the size target exists only for the three positives (NaN elsewhere).

    Returns:
        ``(pred, target, mask)``: float64 predictions and targets of shape (6,), bool mask.
    """
    positive = np.array([True, False, True, False, False, True])
    size = np.array([6.0, np.nan, 4.0, np.nan, np.nan, 8.0])  # object size, NaN = no object
    pred = np.array([5.5, 1.0, 4.5, 0.5, 2.0, 7.0])  # what a model predicts today
    return pred, size, positive


# ------------------------------------------------------------------- the three losses
# Each takes arrays of one library (NumPy or torch) and returns a 0-d array of that library.


def _where(cond: Any, a: Any, b: float) -> Any:
    """``where`` of the arrays' own library (NumPy or torch)."""
    if isinstance(a, np.ndarray):
        return np.where(cond, a, b)
    import torch

    return torch.where(cond, a, b)


def naive_masked(pred: Any, target: Any, mask: Any) -> Any:
    """The textbook masked mean: ``((p - t)**2 * m).sum() / m.sum()``."""
    m = mask * 1.0
    return ((pred - target) ** 2 * m).sum() / m.sum()


def zero_imputed(pred: Any, target: Any, mask: Any) -> Any:
    """Missing targets replaced by 0, mean over every sample (finite but biased)."""
    filled = _where(mask, target, 0.0)
    return ((pred - filled) ** 2).mean()


def with_masked_mse(pred: Any, target: Any, mask: Any) -> Any:
    """``masked_losses.masked_mse``: the mean over the valid entries only."""
    return masked_mse(pred, target, mask)


LOSSES: dict[str, Callable[[Any, Any, Any], Any]] = {
    "naive  ((p-t)**2*m).sum()/m.sum()": naive_masked,
    "zero-imputed  mean((p-t0)**2)": zero_imputed,
    "masked_mse(p, t, m)": with_masked_mse,
}


def numpy_values(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Each loss's value on NumPy arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 is the point being made
        return {name: float(fn(pred, target, mask)) for name, fn in LOSSES.items()}


def torch_values_and_grads(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> dict[str, tuple[float, np.ndarray]]:
    """Each loss's value and its gradient with respect to ``pred``, by torch autograd."""
    import torch

    out: dict[str, tuple[float, np.ndarray]] = {}
    for name, fn in LOSSES.items():
        p = torch.tensor(pred, requires_grad=True)
        loss = fn(p, torch.tensor(target), torch.tensor(mask))
        loss.backward()
        assert p.grad is not None
        out[name] = (float(loss.detach()), p.grad.numpy().copy())
    return out


def oracle(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error on the valid subset (float64), and its gradient (0 where masked)."""
    n = int(mask.sum())
    if n == 0:
        return 0.0, np.zeros_like(pred)
    value = float(np.mean((pred[mask] - target[mask]) ** 2))
    grad = np.zeros_like(pred)
    grad[mask] = 2.0 * (pred[mask] - target[mask]) / n
    return value, grad


# -------------------------------------------------------------------------- printing


def _fmt_grad(g: np.ndarray) -> str:
    return "[" + " ".join(f"{v:6.3f}" for v in g) + "]"


def _print_case(title: str, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
    print(f"\n=== {title} ===")
    print(f"  pred   = {_fmt_grad(pred)}")
    print(f"  target = {_fmt_grad(target)}   (NaN = no object, size undefined)")
    print(f"  mask   = [{' '.join(f'{int(v):6d}' for v in mask)}]   (1 = valid)")
    np_vals = numpy_values(pred, target, mask)
    torch_vg = torch_values_and_grads(pred, target, mask)
    ref_value, ref_grad = oracle(pred, target, mask)
    width = max(len(k) for k in LOSSES) + 2
    print(f"\n  {'loss':<{width}}{'NumPy':>10}{'PyTorch':>10}   d loss / d pred (PyTorch autograd)")
    for name in LOSSES:
        value, grad = torch_vg[name]
        print(f"  {name:<{width}}{np_vals[name]:>10.4f}{value:>10.4f}   {_fmt_grad(grad)}")
    print(f"  {'oracle: MSE over valid subset':<{width}}{ref_value:>10.4f}{'':>10}   "
          f"{_fmt_grad(ref_grad)}")


def main() -> None:
    pred, target, mask = make_data()
    _print_case("a batch with 3 of 6 targets present", pred, target, mask)
    print(
        "\n  naive: 0 * NaN = NaN: the value is NaN, and so is the gradient at every masked"
        "\n         entry; backpropagated into the shared weights, those NaNs poison the whole"
        "\n         update."
        "\n  zero-imputed: finite, but it trains the head to predict size 0 for negatives,"
        "\n         and its gradient pushes every negative's prediction toward 0."
        "\n  masked_mse: the MSE over the 3 valid entries; gradient exactly 0 where masked."
    )
    none = np.zeros_like(mask)
    _print_case("an all-masked batch (no positive sample)", pred, np.full_like(target, np.nan),
                none)
    print(
        "\n  naive: 0 / 0 = NaN.  masked_mse: 0 with zero gradient (nothing to learn here)."
    )


if __name__ == "__main__":
    main()
