"""masked_losses: losses over partially-labelled data, exact on every array library.

Masked entries contribute exactly zero value and exactly zero gradient, whatever they hold
(NaN and ±inf included); ``"mean"`` divides by the valid count, and is 0 when nothing is
valid. The functions take NumPy, PyTorch, JAX, TensorFlow or any Array API arrays and
import no ML framework themselves.
"""

from __future__ import annotations

from ._errors import (
    ArgumentError,
    BackendError,
    DTypeError,
    LabelError,
    MaskedLossError,
    ShapeError,
)
from ._losses import MaskedLoss, epsilon_ratio_mse, masked, masked_mse
from ._reduce import masked_mean, masked_sum, valid_count
from .metrics import (
    MaskedMetrics,
    MetricValues,
    metrics_compute,
    metrics_init,
    metrics_merge,
    metrics_update,
)

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "BackendError",
    "DTypeError",
    "LabelError",
    "MaskedLoss",
    "MaskedLossError",
    "MaskedMetrics",
    "MetricValues",
    "ShapeError",
    "__version__",
    "epsilon_ratio_mse",
    "masked",
    "masked_mean",
    "masked_mse",
    "masked_sum",
    "metrics_compute",
    "metrics_init",
    "metrics_merge",
    "metrics_update",
    "valid_count",
]
