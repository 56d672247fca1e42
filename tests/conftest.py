"""Shared fixtures: one ``xp`` fixture over every backend, and per-backend test counts.

``xp`` yields a :class:`Backend`: the namespace plus converters from/to NumPy, a ``run``
that calls a loss (under ``jax.jit`` for the ``jax.jit`` member), and, for autodiff
backends, ``value_and_grad``. In CI (``CI`` set) a missing framework is an error; locally it
is a skip, so a user can run the subset they have installed.
"""

from __future__ import annotations

import collections
import functools
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

IN_CI = bool(os.environ.get("CI"))

ALL_BACKENDS = ("array_api_strict", "numpy", "torch", "jax", "jax.jit", "tensorflow")
AUTODIFF_BACKENDS = ("torch", "jax", "jax.jit", "tensorflow")


def require(module: str) -> Any:
    """Import ``module``; skip the test locally when it is missing, fail in CI."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module)


@dataclass(frozen=True)
class Backend:
    """One array library as the tests see it."""

    name: str
    xp: Any
    asarray: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    jit: Callable[[Callable[..., Any]], Callable[..., Any]]
    grad: Callable[..., tuple[np.ndarray, ...]] | None = None
    has_float16: bool = True

    def run(self, fn: Callable[..., Any], *arrays: Any, **options: Any) -> Any:
        """Call ``fn(*arrays, **options)``; options are static (closed over under jit)."""
        return self.jit(functools.partial(fn, **options))(*arrays)

    def value_and_grad(
        self,
        fn: Callable[..., Any],
        *arrays: Any,
        argnums: tuple[int, ...] = (0, 1),
        **options: Any,
    ) -> tuple[np.ndarray, ...]:
        """``(sum(fn(...)), d/d arrays[i] for i in argnums)`` as NumPy arrays."""
        assert self.grad is not None, f"{self.name} has no autodiff"
        return self.grad(functools.partial(fn, **options), arrays, argnums)

    @property
    def float_dtypes(self) -> tuple[str, ...]:
        """Names of the floating dtypes this library holds (JAX: float64 only with x64)."""
        if self.name == "array_api_strict":
            return ("float32", "float64")
        if self.name == "numpy":
            return ("float16", "float32", "float64")
        if self.name.startswith("jax"):
            x64 = bool(importlib.import_module("jax").config.jax_enable_x64)
            return ("float16", "bfloat16", "float32", *(("float64",) if x64 else ()))
        return ("float16", "bfloat16", "float32", "float64")

    def cast(self, x: Any, dtype: str) -> Any:
        """``x`` cast to the dtype named ``dtype`` (e.g. ``"bfloat16"``) in its own library."""
        if self.name == "tensorflow":
            return self.xp.cast(x, getattr(self.xp, dtype))
        return self.xp.astype(x, getattr(self.xp, dtype))

    def dtype_name(self, x: Any) -> str:
        """The dtype of ``x`` as a plain name: ``"float32"``, ``"bfloat16"``, ``"int64"``."""
        found = re.search(r"b?float\d+|u?int\d+|bool|complex\d+", str(x.dtype))
        assert found is not None, x.dtype
        return found.group(0)


def _identity_jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def _numpy() -> Backend:
    import array_api_compat.numpy as xp

    return Backend("numpy", xp, np.asarray, np.asarray, _identity_jit)


def _strict() -> Backend:
    xps = require("array_api_strict")
    xps.set_array_api_strict_flags(boolean_indexing=False, data_dependent_shapes=False)
    return Backend(
        "array_api_strict", xps, xps.asarray, lambda x: np.asarray(x), _identity_jit,
        has_float16=False,
    )


def _torch() -> Backend:
    torch = require("torch")
    import array_api_compat.torch as xp

    def to_numpy(x: Any) -> np.ndarray:
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()

    def grad(fn: Callable[..., Any], arrays: tuple[Any, ...], argnums: tuple[int, ...]) -> Any:
        leaves = [
            a.detach().clone().requires_grad_(i in argnums) if hasattr(a, "requires_grad") else a
            for i, a in enumerate(arrays)
        ]
        out = fn(*leaves)
        total = out.sum()
        grads = torch.autograd.grad(total, [leaves[i] for i in argnums], allow_unused=True)
        grads = [
            torch.zeros_like(leaves[i]) if g is None else g
            for i, g in zip(argnums, grads, strict=True)
        ]
        return (to_numpy(total), *(to_numpy(g) for g in grads))

    return Backend(
        "torch", xp, lambda a: torch.from_numpy(np.array(a)), to_numpy, _identity_jit, grad
    )


def _jax(jit: bool) -> Backend:
    jax = require("jax")
    jnp = require("jax.numpy")

    def grad(fn: Callable[..., Any], arrays: tuple[Any, ...], argnums: tuple[int, ...]) -> Any:
        def total(*a: Any) -> Any:
            return jnp.sum(fn(*a))

        vg = jax.value_and_grad(total, argnums=argnums)
        if jit:
            vg = jax.jit(vg)
        value, grads = vg(*arrays)
        return (np.asarray(value), *(np.asarray(g) for g in grads))

    return Backend(
        "jax.jit" if jit else "jax", jnp, jnp.asarray, np.asarray,
        jax.jit if jit else _identity_jit, grad,
    )


def _tensorflow() -> Backend:
    tf = require("tensorflow")

    def grad(fn: Callable[..., Any], arrays: tuple[Any, ...], argnums: tuple[int, ...]) -> Any:
        with tf.GradientTape() as tape:
            for i in argnums:
                tape.watch(arrays[i])
            total = tf.reduce_sum(fn(*arrays))
        grads = tape.gradient(
            total, [arrays[i] for i in argnums],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return (total.numpy(), *(g.numpy() for g in grads))

    return Backend(
        "tensorflow", tf, lambda a: tf.constant(a),
        # np.asarray of a bfloat16 tf.Tensor fails: go through float32, as torch does
        lambda x: np.asarray(tf.cast(x, tf.float32) if x.dtype == tf.bfloat16 else x),
        _identity_jit, grad,
    )


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "numpy": _numpy,
    "array_api_strict": _strict,
    "torch": _torch,
    "jax": functools.partial(_jax, False),
    "jax.jit": functools.partial(_jax, True),
    "tensorflow": _tensorflow,
}


@pytest.fixture(params=ALL_BACKENDS)
def xp(request: pytest.FixtureRequest) -> Backend:
    """Every backend: array_api_strict, numpy, torch, jax (eager and jit), tensorflow."""
    return _FACTORIES[request.param]()


@pytest.fixture(params=AUTODIFF_BACKENDS)
def ad(request: pytest.FixtureRequest) -> Backend:
    """The backends with automatic differentiation: torch, jax (eager and jit), tensorflow."""
    return _FACTORIES[request.param]()


# ---- per-backend counts in the terminal summary --------------------------------------------

_COUNTS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def _backend_of(item_id: str) -> str:
    params = item_id.rsplit("[", 1)[-1].rstrip("]").split("-") if "[" in item_id else []
    for name in ALL_BACKENDS:
        if name in params:
            return name
    return "backend-neutral"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _COUNTS[_backend_of(report.nodeid)][report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("tests per backend")
    for name in (*ALL_BACKENDS, "backend-neutral"):
        c = _COUNTS.get(name)
        if c:
            terminalreporter.write_line(
                f"{name:>17}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
            )
