"""TensorFlow adapter: the core masked losses for ``tf.Tensor``.

The backend-neutral core already accepts ``tf.Tensor`` and ``tf.Variable`` through a small
Array-API shim over TensorFlow ops (:mod:`masked_losses._tf_shim`; array-api-compat does not
support TensorFlow). This module re-exports the core functions unchanged, so that
``from masked_losses.tensorflow import masked_mse`` reads like the other adapters, and
exposes the shim as :data:`namespace`. It holds no loss math and imports TensorFlow only.

Every function works eagerly, inside ``tf.GradientTape`` and under
``tf.function(jit_compile=True)``:

* masked entries contribute exactly 0 to the value and to the gradient with respect to
  ``pred`` and ``target``, whatever they hold (a missing target stored as NaN is fine);
* ``reduction="mean"`` divides by the number of valid entries (``Σ w·m`` with weights), and
  is 0 with zero gradient when nothing is valid;
* no Python branch depends on tensor values, so one trace serves every mask; under
  ``tf.function`` an unknown (``None``) dimension is handled at run time, except that a
  size-1 axis of ``mask``/``weights`` cannot be broadcast to an unknown dimension by
  :func:`valid_count` (broadcast it first, e.g. with ``tf.broadcast_to``).

Dtypes: TensorFlow has no type promotion; the shim promotes like the Array API and JAX
(``float16`` with ``bfloat16`` gives ``float32``; 16-bit inputs are accumulated in
``float32`` and returned in their own dtype). Unweighted counts are ``int64``.

``epsilon_ratio_mse(check=True)`` reads the labels back to the host in eager mode (one
synchronisation) to reject negative or NaN labels; the check is skipped inside
``tf.function``.

Shapes:
    - pred, target: ``S``, real floating, exactly the same shape.
    - mask, weights: ``pred``'s number of axes, size-1 axes broadcast (a per-sample mask of
      ``(N, D)`` data is ``mask[:, None]``); bool or numeric, nonzero = valid.
    - result: ``S`` without the reduced axes (a scalar by default).

Example:
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from masked_losses.tensorflow import masked_mse
    >>> pred = tf.constant([1.0, 2.0, 3.0])
    >>> target = tf.constant([1.5, np.nan, 2.0])     # the second target is missing
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(pred)
    ...     loss = masked_mse(pred, target, ~tf.math.is_nan(target))
    >>> float(loss)
    0.625
    >>> tape.gradient(loss, pred).numpy().tolist()   # exactly 0 at the missing entry
    [-0.5, 0.0, 1.0]
    >>> step = tf.function(masked_mse, jit_compile=True)
    >>> float(step(pred, target, ~tf.math.is_nan(target)))
    0.625
"""

from __future__ import annotations

from . import _tf_shim
from ._losses import MaskedLoss, epsilon_ratio_mse, masked, masked_mse
from ._reduce import masked_mean, masked_sum, valid_count

__all__ = [
    "MaskedLoss",
    "epsilon_ratio_mse",
    "masked",
    "masked_mean",
    "masked_mse",
    "masked_sum",
    "namespace",
    "valid_count",
]

namespace = _tf_shim.namespace
"""The Array-API shim over TensorFlow ops that the core uses for ``tf.Tensor`` inputs."""
