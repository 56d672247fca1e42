"""A minimal Array-API namespace over TensorFlow ops, exactly what the core uses.

array-api-compat does not support TensorFlow, so :mod:`masked_losses._namespace` routes
``tf.Tensor`` and ``tf.Variable`` here (importing this module, and TensorFlow, only when such a
tensor is seen). The module-level object :data:`namespace` provides ``where``, ``sum``,
``count_nonzero``, ``astype``, ``asarray``, ``broadcast_to``, ``any``, ``min``, ``isnan``,
``isdtype``, ``result_type``, ``finfo`` and the dtype attributes (``float32``, ...).

Two things TensorFlow does not do and this shim does:

* **Type promotion.** TensorFlow refuses mixed dtypes; :meth:`TensorFlowNamespace.result_type`
  implements the Array API lattice with the JAX/NumPy extensions (``float16`` with
  ``bfloat16`` gives ``float32``, an integer or bool with a float gives the float), and
  :meth:`TensorFlowNamespace.where` promotes its branches with it.
* **Weak Python scalars.** A Python ``bool``/``int``/``float`` next to a tensor takes the
  tensor's dtype (``where(valid, x, 0.0)`` keeps ``x``'s dtype), as the Array API requires.

Everything is a plain TensorFlow op: it works eagerly, inside ``tf.GradientTape`` and under
``tf.function(jit_compile=True)``, where an unknown dimension is ``None``.

Example:
    >>> import tensorflow as tf
    >>> from masked_losses._tf_shim import namespace as xp
    >>> xp.result_type(xp.float16, xp.bfloat16).name
    'float32'
    >>> int(xp.count_nonzero(xp.asarray([True, False, True])))
    2
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ._errors import DTypeError, ShapeError

__all__ = ["TensorFlowNamespace", "namespace"]

Axis = int | Sequence[int] | None

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_SIGNED = (tf.int8, tf.int16, tf.int32, tf.int64)
_UNSIGNED = (tf.uint8, tf.uint16, tf.uint32, tf.uint64)
_COMPLEX = (tf.complex64, tf.complex128)


@dataclass(frozen=True)
class FInfo:
    """Machine limits of a TensorFlow floating dtype (the Array API ``finfo`` object)."""

    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: tf.DType


def _finfo(dtype: tf.DType) -> FInfo:
    if dtype == tf.bfloat16:  # NumPy does not know bfloat16: 8 exponent bits, 7 mantissa bits
        return FInfo(16, 2.0**-7, float(dtype.max), float(dtype.min), 2.0**-126, dtype)
    info = np.finfo(dtype.as_numpy_dtype)
    return FInfo(
        int(info.bits), float(info.eps), float(info.max), float(info.min),
        float(info.smallest_normal), dtype,
    )


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (bool, int, float))


def _axis(axis: Axis) -> list[int] | int | None:
    if axis is None or isinstance(axis, int):
        return axis
    return list(axis)


def _promote_pair(a: tf.DType, b: tf.DType) -> tf.DType:
    """Array API promotion of two dtypes, with the JAX/NumPy mixed-kind extensions."""
    if a == b:
        return a
    if a == tf.bool or b == tf.bool:
        return b if a == tf.bool else a
    a_float, b_float = a in _FLOATS, b in _FLOATS
    if a_float and b_float:
        if {a, b} == {tf.float16, tf.bfloat16}:
            return tf.float32  # neither contains the other (as in JAX)
        return a if a.size > b.size else b
    if a_float or b_float:  # integer with float: the float (JAX/NumPy behaviour)
        return a if a_float else b
    if a in _COMPLEX or b in _COMPLEX:
        raise DTypeError(f"masked_losses does not promote complex dtypes, got {a} and {b}.")
    a_signed, b_signed = a in _SIGNED, b in _SIGNED
    if a_signed == b_signed:
        return a if a.size > b.size else b
    signed, unsigned = (a, b) if a_signed else (b, a)
    if signed.size > unsigned.size:
        return signed
    if unsigned.size < 8:
        return tf.as_dtype(f"int{unsigned.size * 16}")
    raise DTypeError(
        f"no integer dtype holds both {signed} and {unsigned}; cast one of them first, "
        "e.g. with tf.cast(x, tf.int64)."
    )


class TensorFlowNamespace:
    """The Array API subset used by masked_losses, implemented with TensorFlow ops.

    Attributes are the TensorFlow dtypes under their Array API names (``float32``,
    ``bool``, ``int64``, ...). Methods mirror the Array API functions of the same name.
    """

    __name__ = "tensorflow"

    bool = tf.bool
    int8, int16, int32, int64 = _SIGNED
    uint8, uint16, uint32, uint64 = _UNSIGNED
    float16, bfloat16, float32, float64 = _FLOATS
    complex64, complex128 = _COMPLEX

    def __repr__(self) -> str:
        return "<masked_losses TensorFlow Array API shim>"

    # ---- dtypes -------------------------------------------------------------------------

    @staticmethod
    def _dtype_of(x: Any) -> tf.DType:
        if isinstance(x, tf.DType):
            return x
        dtype = getattr(x, "dtype", None)
        return tf.as_dtype(dtype if dtype is not None else x)

    def isdtype(self, dtype: Any, kind: Any) -> builtins.bool:
        """Whether ``dtype`` is of ``kind`` (a dtype, a kind name, or a tuple of those).

        Args:
            dtype: a TensorFlow dtype (or anything ``tf.as_dtype`` accepts).
            kind: ``"bool"``, ``"signed integer"``, ``"unsigned integer"``, ``"integral"``,
                ``"real floating"``, ``"complex floating"``, ``"numeric"``, a dtype, or a
                tuple of these.

        Returns:
            True when ``dtype`` matches any of the kinds.
        """
        dtype = self._dtype_of(dtype)
        if isinstance(kind, tuple):
            return any(self.isdtype(dtype, k) for k in kind)
        if not isinstance(kind, str):
            return dtype == self._dtype_of(kind)
        groups = {
            "bool": (tf.bool,),
            "signed integer": _SIGNED,
            "unsigned integer": _UNSIGNED,
            "integral": _SIGNED + _UNSIGNED,
            "real floating": _FLOATS,
            "complex floating": _COMPLEX,
            "numeric": _SIGNED + _UNSIGNED + _FLOATS + _COMPLEX,
        }
        if kind not in groups:
            raise ValueError(f"unknown dtype kind {kind!r}; expected one of {sorted(groups)}.")
        return dtype in groups[kind]

    def result_type(self, *arrays_and_dtypes: Any) -> tf.DType:
        """The promoted dtype of tensors, dtypes and (weak) Python scalars.

        Python scalars are weak: they take the dtype of the tensors, as in the Array API,
        unless they are of a higher kind (a ``float`` with integer tensors gives
        ``float32``, an ``int`` with bool tensors ``int64``, as in JAX); alone they give
        ``bool``, ``int64`` or ``float32``.

        Args:
            *arrays_and_dtypes: tensors, TensorFlow dtypes, or Python scalars.

        Returns:
            The promoted ``tf.DType`` (``float16`` with ``bfloat16`` gives ``float32``).
        """
        dtypes = [self._dtype_of(x) for x in arrays_and_dtypes if not _is_scalar(x)]
        if not dtypes:
            scalars = [x for x in arrays_and_dtypes if _is_scalar(x)]
            if not scalars:
                raise ValueError("result_type needs at least one array, dtype or scalar.")
            if any(isinstance(s, float) for s in scalars):
                return tf.float32
            return tf.bool if all(isinstance(s, bool) for s in scalars) else tf.int64
        out = dtypes[0]
        for d in dtypes[1:]:
            out = _promote_pair(out, d)
        for s in arrays_and_dtypes:  # a scalar of a higher kind lifts the kind (as in JAX)
            if isinstance(s, float) and out not in _FLOATS + _COMPLEX:
                out = tf.float32
            elif isinstance(s, int) and not isinstance(s, bool) and out == tf.bool:
                out = tf.int64
        return out

    def finfo(self, type: Any) -> FInfo:
        """Machine limits (``bits``, ``eps``, ``max``, ``min``, ``smallest_normal``).

        Args:
            type: a floating TensorFlow dtype or a floating tensor.

        Returns:
            An :class:`FInfo`.
        """
        dtype = self._dtype_of(type)
        if dtype not in _FLOATS:
            raise DTypeError(f"finfo needs a real floating dtype, got {dtype}.")
        return _finfo(dtype)

    # ---- creation and conversion ---------------------------------------------------------

    def asarray(
        self, obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None
    ) -> tf.Tensor:
        """``obj`` as a tensor (of ``dtype`` when given); ``device``/``copy`` are ignored.

        Args:
            obj: a tensor, NumPy array, nested sequence or Python scalar.
            dtype: optional target dtype.
            device: ignored (TensorFlow places ops itself).
            copy: ignored (tensors are immutable).

        Returns:
            A ``tf.Tensor``.
        """
        del device, copy
        if isinstance(obj, (tf.Tensor, tf.Variable)):
            return obj if dtype is None else tf.cast(obj, dtype)
        return tf.convert_to_tensor(obj, dtype=dtype)

    def astype(
        self, x: Any, dtype: Any, /, *, copy: builtins.bool = True, device: Any = None
    ) -> Any:
        """``x`` cast to ``dtype`` (unchanged when it already has it and ``copy=False``).

        Args:
            x: a tensor.
            dtype: the target dtype.
            copy: whether a same-dtype input may be returned as is (tensors are immutable,
                so this only skips an identity op).
            device: ignored.

        Returns:
            A tensor of ``dtype``.
        """
        del device
        if not copy and x.dtype == dtype:
            return x
        return tf.cast(x, dtype)

    def broadcast_to(self, x: Any, /, shape: Sequence[int | None]) -> Any:
        """Broadcast ``x`` to ``shape``, where a ``None`` (unknown) dimension is allowed.

        An unknown target dimension is taken from ``x`` itself, so ``x`` must already have
        it (it cannot grow from size 1 to a size nobody knows at trace time).

        Args:
            x: a tensor with ``len(shape)`` axes (or fewer, when ``shape`` is fully known).
            shape: the target shape; ``None`` marks a dimension unknown at trace time.

        Returns:
            A tensor of shape ``shape``.

        Raises:
            ShapeError: a size-1 axis of ``x`` should broadcast to an unknown dimension.
        """
        shape = tuple(shape)
        if None not in shape:
            if tuple(x.shape) == shape:
                return x
            return tf.broadcast_to(x, shape)
        xs = tuple(x.shape)
        if len(xs) != len(shape):
            raise ShapeError(
                f"cannot broadcast a tensor of shape {xs} to {shape} with unknown dimensions; "
                "give it the same number of axes."
            )
        dims: list[Any] = []
        for i, (have, want) in enumerate(zip(xs, shape, strict=True)):
            if want is not None:
                dims.append(want)
            elif have is None or have != 1:
                dims.append(tf.shape(x)[i])
            else:
                raise ShapeError(
                    f"cannot broadcast axis {i} of size 1 (shape {xs}) to a dimension unknown "
                    f"at trace time (shape {shape}). Broadcast mask/weights to pred's shape "
                    "before the call, or give tf.function a fully known input_signature."
                )
        if all(isinstance(d, int) for d in dims) and xs == tuple(dims):
            return x
        return tf.broadcast_to(x, tf.stack([tf.cast(d, tf.int32) for d in dims]))

    # ---- elementwise ---------------------------------------------------------------------

    def where(self, condition: Any, x1: Any, x2: Any, /) -> tf.Tensor:
        """Elementwise ``x1`` where ``condition`` else ``x2``, broadcasting all three.

        Python scalars take the other branch's dtype; two tensors are promoted with
        :meth:`result_type`.

        Args:
            condition: a bool tensor (other dtypes are compared with 0).
            x1: tensor or Python scalar.
            x2: tensor or Python scalar.

        Returns:
            A tensor of the promoted dtype.
        """
        condition = self.asarray(condition)
        if condition.dtype != tf.bool:
            condition = tf.not_equal(condition, tf.zeros((), condition.dtype))
        dtype = self.result_type(x1, x2)
        return tf.where(condition, self.asarray(x1, dtype=dtype), self.asarray(x2, dtype=dtype))

    def maximum(self, x1: Any, x2: Any, /) -> tf.Tensor:
        """Elementwise maximum, promoting like :meth:`where` (Python scalars welcome)."""
        dtype = self.result_type(x1, x2)
        return tf.maximum(self.asarray(x1, dtype=dtype), self.asarray(x2, dtype=dtype))

    def isnan(self, x: Any, /) -> tf.Tensor:
        """Elementwise NaN test; always False for integer and bool tensors."""
        if x.dtype in _FLOATS:
            return tf.math.is_nan(x)
        return tf.zeros_like(x, dtype=tf.bool)

    # ---- reductions ------------------------------------------------------------------------

    def sum(
        self, x: Any, /, *, axis: Axis = None, dtype: Any = None, keepdims: builtins.bool = False
    ) -> tf.Tensor:
        """Sum over ``axis`` (all axes when None; no axis when ``()``).

        Args:
            x: a tensor.
            axis: int, tuple of ints, or None.
            dtype: accumulate and return in this dtype; by default floats keep their dtype
                and bool/integer tensors are summed in ``int64``.
            keepdims: keep the reduced axes with size 1.

        Returns:
            The sum.
        """
        if dtype is None and x.dtype not in _FLOATS + _COMPLEX:
            dtype = tf.uint64 if x.dtype in _UNSIGNED else tf.int64
        if dtype is not None and x.dtype != dtype:
            x = tf.cast(x, dtype)
        return tf.reduce_sum(x, axis=_axis(axis), keepdims=keepdims)

    def count_nonzero(
        self, x: Any, /, *, axis: Axis = None, keepdims: builtins.bool = False
    ) -> tf.Tensor:
        """Number of nonzero (True) entries over ``axis``, as ``int64``.

        Summed in ``int32`` when ``x`` has a known size below 2**31 (no count can overflow
        it), else in ``int64``: XLA on CPU vectorises the int32 sum, not the int64 one that
        ``tf.math.count_nonzero`` does (~15% of ``masked_mse``'s time at 1e5-1e7 entries).
        """
        x = self.asarray(x)
        if x.dtype != tf.bool:
            x = tf.not_equal(x, tf.zeros((), x.dtype))
        size = x.shape.num_elements()
        acc = tf.int32 if size is not None and size < 2**31 else tf.int64
        count = tf.reduce_sum(tf.cast(x, acc), axis=_axis(axis), keepdims=keepdims)
        return count if acc == tf.int64 else tf.cast(count, tf.int64)

    def any(self, x: Any, /, *, axis: Axis = None, keepdims: builtins.bool = False) -> tf.Tensor:
        """Whether any entry over ``axis`` is nonzero (True)."""
        if x.dtype != tf.bool:
            x = tf.not_equal(x, tf.zeros((), x.dtype))
        return tf.reduce_any(x, axis=_axis(axis), keepdims=keepdims)

    def min(self, x: Any, /, *, axis: Axis = None, keepdims: builtins.bool = False) -> tf.Tensor:
        """Minimum over ``axis``."""
        return tf.reduce_min(x, axis=_axis(axis), keepdims=keepdims)


namespace = TensorFlowNamespace()
"""The shim instance :func:`masked_losses._namespace.array_namespace` returns for TensorFlow."""
