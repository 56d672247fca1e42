"""Guarantee 6: ``import masked_losses`` (and using it on NumPy arrays) imports no ML framework."""

from __future__ import annotations

import json
import subprocess
import sys

import masked_losses as ml

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras", "flax", "optax")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys, json\n{code}\n"
        f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
