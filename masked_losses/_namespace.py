"""Find the array namespace of the inputs without importing any ML framework.

Arrays are recognised by their type (as array-api-compat does, looking only at modules that
are already imported), and the namespace found for a type is cached, so that the per-call
cost is one dictionary lookup per argument. TensorFlow is not supported by array-api-compat:
a ``tf.Tensor`` is routed to the small shim in :mod:`masked_losses._tf_shim`, imported only
when such a tensor is seen.

The core uses only this subset of the Array API, which is what a shim must provide:
``where``, ``sum``, ``count_nonzero``, ``maximum``, ``astype``, ``asarray``,
``broadcast_to``, ``any``, ``min``, ``isnan``, ``isdtype``, ``result_type``, ``finfo``,
``float32`` and the array operators ``+ - * / == != < &`` together with ``.shape``,
``.ndim`` and ``.dtype``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import array_api_compat

from ._errors import BackendError

__all__ = ["array_namespace", "is_compiling", "is_traced"]

_NAMESPACE_BY_TYPE: dict[type, Any] = {}


def _is_tensorflow_type(cls: type) -> bool:
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return False
    return issubclass(cls, (tf.Tensor, tf.Variable))


def _namespace_of_type(cls: type, example: Any, name: str) -> Any:
    xp = _NAMESPACE_BY_TYPE.get(cls)
    if xp is not None:
        return xp
    if _is_tensorflow_type(cls):
        from . import _tf_shim

        xp = _tf_shim.namespace
    else:
        try:
            xp = array_api_compat.array_namespace(example)
        except TypeError:
            raise BackendError(
                f"{name} must be an array (NumPy, PyTorch, JAX, TensorFlow or any Array API "
                f"library), got {cls.__module__}.{cls.__qualname__}. Convert it first, e.g. "
                f"np.asarray({name}) or torch.as_tensor({name})."
            ) from None
    _NAMESPACE_BY_TYPE[cls] = xp
    return xp


def _library_name(xp: Any) -> str:
    name = getattr(xp, "__name__", type(xp).__name__)
    return name.replace("array_api_compat.", "")


def array_namespace(**arrays: Any) -> Any:
    """Return the one Array API namespace shared by the given arrays.

    Args:
        **arrays: the arrays by argument name (``None`` values are ignored). The names are
            only used in error messages.

    Returns:
        The namespace (array-api-compat wrapper, ``array_api_strict``, ``jax.numpy`` or the
        TensorFlow shim).

    Raises:
        BackendError: an argument is not an array, or arrays come from different libraries.
    """
    found: Any = None
    found_name = ""
    for name, x in arrays.items():
        if x is None:
            continue
        xp = _namespace_of_type(type(x), x, name)
        if found is None:
            found, found_name = xp, name
        elif xp is not found:
            raise BackendError(
                f"{found_name} is a {_library_name(found)} array but {name} is a "
                f"{_library_name(xp)} array; pass arrays from one library, e.g. convert "
                f"{name} with the same library's asarray()."
            )
    return found


def is_traced(x: Any) -> bool:
    """Return True when ``x`` has no concrete value (JAX tracer, torch.compile, tf.function).

    Used only to skip value checks that would need a host synchronisation or a Python
    branch on data; it never changes a computed number.
    """
    module = type(x).__module__
    if module.startswith("jax"):
        jax: ModuleType | None = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.core.Tracer)
    if module.startswith("torch"):
        torch: ModuleType | None = sys.modules.get("torch")
        if torch is None:
            return False
        return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())
    if module.startswith("tensorflow") or module.startswith("keras"):
        tf: ModuleType | None = sys.modules.get("tensorflow")
        return tf is not None and not (tf.executing_eagerly() and hasattr(x, "numpy"))
    return False


def is_compiling() -> bool:
    """True while ``torch.compile`` traces (Dynamo): skip Python-level caches then.

    Dynamo would have to hash every key of a cache dictionary, and the keys of a cache
    shared by all backends include NumPy dtypes, whose C-level hash it cannot trace.
    """
    torch: ModuleType | None = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())
