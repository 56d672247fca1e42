"""Per-backend kernels for the hot path of :func:`masked_losses.masked_mse`.

The generic core sanitises ``pred`` and ``target`` with two ``where`` calls, squares and
sums. That is exact everywhere, and free under a compiler (XLA, Inductor) that fuses it,
but in eager NumPy and PyTorch each call is a separate pass over memory. The kernels here
compute the same number, ``Σ w·(p - t)²`` over the valid entries, in fewer passes:

* NumPy (no autodiff): subtract once, zero the invalid entries by AND-ing their bits with
  0 (exact: +0.0; branch-free, unlike ``np.where`` on a random mask), and fuse the square
  and the sum into one BLAS dot product. Without weights this runs over blocks of 2**16
  entries in two reused buffers that stay in cache: at 1e7 entries a fresh full-size
  temporary costs more (page faults, memory traffic) than all the arithmetic.
* PyTorch: ``where(valid, p - t, 0)`` (one ``where``, after the subtraction: subtraction is
  linear, so the gradient that reaches ``p`` and ``t`` at masked positions is
  ``where``'s exact 0 — no NaN can leak in), then a dot product in eager mode without
  autograd, else ``sum(d * d)`` (Inductor fuses it into one kernel; eagerly its backward
  is cheaper than the dot product's).
* TensorFlow under XLA (``tf.function(jit_compile=True)``): ``where(valid, p - t, 0)``
  as for PyTorch, then ``sum(where(valid, d * d, 0))``. The outer ``where`` changes no
  value, but XLA on CPU sums a fusion that ends in a select in one vectorised pass, while
  one that ends in ``d * d`` is first split into a tree of partial sums (~5% at 1e7
  entries). Eagerly, and in graphs XLA does not compile, the extra ``where`` and its
  gradient are one more pass: there the generic path is faster, so the kernel declines.

A kernel returns None where it does not apply; the caller then uses the generic path.
The kernels are chosen by the namespace's name, so nothing here imports a framework.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["divide_by_count", "squared_error_sum"]

Array = Any


_NUMPY_BLOCK = 1 << 16


def _numpy_blocked_squared_error_sum(
    np: Any, p: Array, t: Array, valid: Array | None, dtype: Any
) -> Array:
    """``Σ (p - t)²`` over valid entries, block by block (``valid`` has ``p``'s shape)."""
    p, t = p.reshape(-1), t.reshape(-1)
    v = None if valid is None else valid.reshape(-1)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    d = np.empty(min(_NUMPY_BLOCK, p.size), dtype)
    keep = np.empty(d.size, uint)
    bits = d.view(uint)
    total = 0.0  # the block sums are added in float64
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, p.size, _NUMPY_BLOCK):
            stop = min(start + _NUMPY_BLOCK, p.size)
            n = stop - start
            np.subtract(p[start:stop], t[start:stop], out=d[:n], dtype=dtype)
            if v is not None:  # True -> all ones, False -> 0: AND zeroes the invalid entries
                np.negative(v[start:stop], out=keep[:n], dtype=uint, casting="unsafe")
                np.bitwise_and(bits[:n], keep[:n], out=bits[:n])
            total += float(np.dot(d[:n], d[:n]))
    return np.asarray(total, dtype=dtype)


def _numpy_squared_error_sum(
    p: Array, t: Array, valid: Array | None, weights: Array | None, dtype: Any
) -> Array | None:
    import numpy as np

    if dtype not in (np.float32, np.float64):
        return None
    if weights is None and p.size and (valid is None or valid.shape == p.shape):
        return _numpy_blocked_squared_error_sum(np, p, t, valid, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.asarray(np.subtract(p, t, dtype=dtype))  # a fresh array, ours to modify
    if valid is not None:
        bits = d.view(np.uint32 if dtype == np.float32 else np.uint64)
        keep = np.asarray(np.broadcast_to(valid, d.shape).astype(bits.dtype))
        np.negative(keep, out=keep)  # 1 -> all ones, 0 -> 0
        np.bitwise_and(bits, keep, out=bits)
    flat = d.reshape(-1)
    if weights is None:
        return np.asarray(np.dot(flat, flat))
    return np.asarray(np.dot(flat, (d * weights).reshape(-1)))


def _torch_squared_error_sum(
    p: Array, t: Array, valid: Array | None, weights: Array | None, dtype: Any
) -> Array | None:
    torch = sys.modules["torch"]
    compiling = torch.compiler.is_compiling()
    tracked = weights is not None and weights.requires_grad
    tracked = torch.is_grad_enabled() and (p.requires_grad or t.requires_grad or tracked)
    d = p - t
    if valid is not None:
        bits = {torch.float32: torch.int32, torch.float64: torch.int64}.get(d.dtype)
        if tracked or bits is None or compiling:
            d = torch.where(valid, d, 0.0)
        else:  # no autograd graph to keep: zero the invalid bits in place, branch-free
            keep = valid.expand(d.shape).to(bits).neg_()  # True -> all ones
            d = d.view(bits).bitwise_and_(keep).view(d.dtype)
    if weights is not None:
        return torch.sum(d * d * weights)
    if compiling or tracked:  # d * d's backward is cheaper than dot's (~7 µs at (256, 3))
        return torch.sum(d * d)
    flat = d.reshape(-1)
    return torch.dot(flat, flat)


def _in_xla_context() -> bool:
    """Whether TensorFlow is tracing a graph that XLA will compile (``jit_compile=True``)."""
    tf = sys.modules["tensorflow"]
    if tf.executing_eagerly():
        return False
    try:  # not a public API, but the one TensorFlow's own ops use to pick XLA variants
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow that moved it: the generic path
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _tensorflow_squared_error_sum(
    p: Array, t: Array, valid: Array | None, weights: Array | None, dtype: Any
) -> Array | None:
    if valid is None or not _in_xla_context():
        return None
    tf = sys.modules["tensorflow"]
    zero = tf.zeros((), dtype)
    d = tf.where(valid, p - t, zero)
    terms = d * d if weights is None else d * d * weights
    return tf.reduce_sum(tf.where(valid, terms, zero))


_KERNELS = {
    "array_api_compat.numpy": _numpy_squared_error_sum,
    "array_api_compat.torch": _torch_squared_error_sum,
    "tensorflow": _tensorflow_squared_error_sum,
}


def squared_error_sum(
    xp: Any, p: Array, t: Array, valid: Array | None, weights: Array | None, dtype: Any
) -> Array | None:
    """``Σ w·(p - t)²`` over every axis, counting only valid entries; None if no kernel.

    Args:
        xp: the array namespace of the inputs.
        p: predictions already in ``dtype``; may hold anything where not valid.
        t: targets already in ``dtype``, same shape as ``p``.
        valid: bool array broadcastable to ``p``'s shape, or None (all valid).
        weights: weights broadcastable to ``p``'s shape, zero where not valid, or None.
        dtype: the compute dtype.

    Returns:
        A 0-d array in ``dtype``, or None when this backend/dtype has no kernel.
    """
    kernel = _KERNELS.get(getattr(xp, "__name__", ""))
    return None if kernel is None else kernel(p, t, valid, weights, dtype)


def divide_by_count(xp: Any, num: Array, count: Array, dtype: Any) -> Array:
    """``num / max(count, 1)`` for an integer ``count``: the mean, 0 where nothing is valid.

    Where ``count`` is 0 every term of ``num`` is exactly 0, so dividing by 1 instead gives
    exactly 0 with zero gradient: no ``where`` needed. PyTorch divides a float tensor by an
    integer one directly (array-api-compat's scalar promotion costs more than the division).
    """
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return num / sys.modules["torch"].clamp_min(count, 1)
    return num / xp.maximum(xp.astype(count, dtype), 1.0)
