"""The exceptions raised by masked_losses.

Every error subclasses the built-in exception a caller would expect (`ValueError` for a bad
value or shape, `TypeError` for a bad type), so ``except ValueError`` keeps working, while
``except masked_losses.MaskedLossError`` catches exactly this library's complaints.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "BackendError",
    "DTypeError",
    "LabelError",
    "MaskedLossError",
    "ShapeError",
]


class MaskedLossError(Exception):
    """Base class of every error raised by masked_losses."""

    # TensorFlow's autograph re-raises an error from inside tf.function as its own type only
    # when ``type(err).__init__ is Exception.__init__``; otherwise it becomes a StagingError.
    __init__ = Exception.__init__


class ShapeError(MaskedLossError, ValueError):
    """Arrays whose shapes do not fit together (pred vs target, mask/weights vs pred)."""


class ArgumentError(MaskedLossError, ValueError):
    """An option with a value outside its domain (``reduction``, ``axis``, ``eps``, ...)."""


class LabelError(MaskedLossError, ValueError):
    """Labels that the chosen loss cannot handle (e.g. negative labels for epsilon-ratio MSE)."""


class DTypeError(MaskedLossError, TypeError):
    """An array of a dtype the loss cannot use (integer or bool predictions, complex masks)."""


class BackendError(MaskedLossError, TypeError):
    """Inputs that are not arrays, or arrays from different libraries mixed in one call."""
