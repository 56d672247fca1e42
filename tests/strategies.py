"""Hypothesis drawing helpers shared by the property tests of every backend.

Values are drawn through ``make_strategies_namespace`` of the backend's own namespace for
array_api_strict and NumPy (float32/float64, the Array API dtypes), through
``hypothesis.extra.numpy`` for the others, and converted with ``Backend.asarray``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra.array_api import make_strategies_namespace

# the ``xp``/``ad`` fixtures return immutable Backend objects: safe across examples
FIXTURE_SETTINGS = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
XPS_BACKENDS = ("array_api_strict", "numpy")
RTOL = {"float64": 1e-9, "float32": 3e-5, "float16": 3e-3, "bfloat16": 1.6e-2}


@functools.cache
def _xps(namespace: Any) -> Any:
    return make_strategies_namespace(namespace)


def draw_np(data: st.DataObject, b: Any, dtype: str, shape: tuple[int, ...], elements: Any) -> Any:
    """A NumPy array drawn through ``b``'s own namespace where hypothesis supports it."""
    if b.name in XPS_BACKENDS and dtype not in ("float16", "bfloat16"):  # not Array API dtypes
        arr = data.draw(_xps(b.xp).arrays(getattr(b.xp, dtype), shape, elements=elements))
        return np.asarray(b.to_numpy(arr))
    np_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    return data.draw(hnp.arrays(np_dtype, shape, elements=elements))


def exact_in(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` (bfloat16 by truncation), returned as float64."""
    with np.errstate(over="ignore"):
        if dtype == "bfloat16":
            bits = a.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
            return bits.view(np.float32).astype(np.float64)
        return a.astype(dtype).astype(np.float64)


def to_backend(b: Any, a: np.ndarray, dtype: str) -> Any:
    """Float64 ``a`` (exactly representable in ``dtype``) as a ``dtype`` array of ``b``."""
    if dtype == "bfloat16":
        return b.cast(b.asarray(a.astype(np.float32)), "bfloat16")
    return b.asarray(a.astype(dtype))
