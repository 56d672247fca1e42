"""Guarantee 6: ``import masked_losses`` imports no ML framework; an adapter only its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import masked_losses as ml
from tests.conftest import require

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras", "flax", "optax")


def _run_probe(probe: str, env: dict[str, str] | None = None) -> object:
    """Run ``probe`` in a fresh interpreter; return the JSON on its last output line."""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
        env=None if env is None else {**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys, json\n{code}\n"
        f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
    )
    return _run_probe(probe)


def test_import_loads_no_framework():
    assert _loaded_after("import masked_losses") == []


def test_numpy_calls_load_no_framework():
    code = (
        "import numpy as np, masked_losses as ml\n"
        "p, t, m = np.ones((4, 3)), np.full((4, 3), np.nan), np.zeros((4, 1), bool)\n"
        "assert float(ml.masked_mse(p, t, m)) == 0\n"
        "ml.masked(lambda a, b: abs(a - b))(p, p, m, reduction='none')\n"
        "ml.epsilon_ratio_mse(p, p, axis=0); ml.masked_mean(p, m, axis=-1)\n"
        "ml.valid_count(m, weights=np.ones((1, 3)))\n"
        "try:\n    ml.masked_mse([1.0], [1.0])\nexcept ml.BackendError:\n    pass\n"
    )
    assert _loaded_after(code) == []


def test_public_api_is_complete():
    for name in ("masked_mse", "epsilon_ratio_mse", "masked_sum", "masked_mean", "valid_count",
                 "masked", "MaskedLossError", "ShapeError", "ArgumentError", "LabelError",
                 "DTypeError", "BackendError"):
        assert name in ml.__all__, name
        assert hasattr(ml, name), name
    assert isinstance(ml.__version__, str)
    assert ml.__version__.count(".") >= 1


# Frameworks that must stay unloaded after ``import masked_losses.<adapter>``. TensorFlow
# itself imports keras (tf.keras) and, when installed, jax; the Keras adapter is probed on
# the JAX Keras backend, so jax is its own framework there.
MUST_NOT_LOAD = {
    "torch": {"jax", "tensorflow", "keras"},
    "jax": {"torch", "tensorflow", "keras"},
    "tensorflow": {"torch"},
    "keras": {"torch", "tensorflow"},
}


@pytest.mark.slow
@pytest.mark.parametrize("adapter", sorted(MUST_NOT_LOAD))
def test_adapter_imports_only_its_own_framework(adapter):
    require(adapter)
    probe = (
        f"import sys, json\nimport {adapter}\nbefore = set(sys.modules)\n"
        f"import masked_losses.{adapter}\n"
        "added = sorted({name.split('.')[0] for name in set(sys.modules) - before})\n"
        "print(json.dumps([added, sorted(sys.modules)]))"
    )
    added, loaded = _run_probe(probe, env={"KERAS_BACKEND": "jax"})
    # on top of its own framework, the adapter brings in only this package and its deps
    assert set(added) <= {"masked_losses", "array_api_compat"}, added
    assert not MUST_NOT_LOAD[adapter] & set(loaded), MUST_NOT_LOAD[adapter] & set(loaded)
