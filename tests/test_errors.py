"""Every error of issue 2 section 3: the class, its built-in base, and a message that names
the argument, what was seen and the fix. Array checks run on every backend (under jax.jit
they fire at trace time, from static shapes and dtypes only)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import masked_losses as ml
from masked_losses import ArgumentError, BackendError, DTypeError, LabelError, ShapeError
from tests.conftest import require


def _f32(b: Any, *shape: int) -> Any:
    return b.asarray(np.ones(shape, np.float32))


@contextlib.contextmanager
def raises(exc: type[Exception], base: type[Exception], *fragments: str) -> Iterator[Any]:
    """``pytest.raises(exc)`` that also checks the built-in base and message fragments."""
    with pytest.raises(exc) as info:
        yield info
    err = info.value
    assert isinstance(err, base)
    assert isinstance(err, ml.MaskedLossError)
    for fragment in fragments:
        assert fragment in str(err), f"{fragment!r} not in message: {err}"


def test_exception_hierarchy():
    for exc, base in ((ShapeError, ValueError), (ArgumentError, ValueError),
                      (LabelError, ValueError), (DTypeError, TypeError),
                      (BackendError, TypeError)):
        assert issubclass(exc, base)
        assert issubclass(exc, ml.MaskedLossError)


# ---- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss", [ml.masked_mse, ml.epsilon_ratio_mse, ml.masked(lambda p, t: abs(p - t))]
)
def test_pred_target_shape_mismatch_is_never_broadcast(xp, loss):
    with raises(ShapeError, ValueError, "pred", "target", "(4, 1)", "(4,)", "target[..., None]"):
        xp.run(loss, _f32(xp, 4, 1), _f32(xp, 4))
    with raises(ShapeError, ValueError, "(3, 2)", "(2, 3)"):
        xp.run(loss, _f32(xp, 3, 2), _f32(xp, 2, 3))


@pytest.mark.parametrize("name", ["mask", "weights"])
def test_mask_or_weights_of_lower_rank_is_an_error_with_a_hint(xp, name):
    short = xp.asarray(np.ones(4, bool if name == "mask" else np.float32))
    kwargs = {name: short}
    with raises(ShapeError, ValueError, name, "(4,)", "(4, 3)", f"{name}[:, None]"):
        if name == "mask":
            xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), short)
        else:
            xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), **kwargs)
    with raises(ShapeError, ValueError, name, "(4,)", "values of shape (4, 3)"):
        xp.run(ml.masked_sum, _f32(xp, 4, 3), **kwargs)
    high = xp.asarray(np.ones((4, 3, 1), bool))
    with raises(ShapeError, ValueError, "mask", "(4, 3, 1)", "(4, 3)"):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), high)


def test_mask_or_weights_not_broadcastable(xp):
    with raises(ShapeError, ValueError, "mask", "(4, 2)", "(4, 3)", "axis 1"):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), xp.asarray(np.ones((4, 2), bool)))
    with raises(ShapeError, ValueError, "weights", "(2, 3)", "(4, 3)", "axis 0"):
        xp.run(ml.masked_mean, _f32(xp, 4, 3), weights=_f32(xp, 2, 3))
    with raises(ShapeError, ValueError, "weights", "(4,)", "(4, 3)", "weights[:, None]"):
        xp.run(ml.epsilon_ratio_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), weights=_f32(xp, 4))


def test_valid_count_mask_and_weights_must_line_up(xp):
    mask = xp.asarray(np.ones((4, 3), bool))
    with raises(ShapeError, ValueError, "mask", "weights", "(4, 3)", "(4,)", "weights[:, None]"):
        xp.run(ml.valid_count, mask, weights=_f32(xp, 4))
    with raises(ShapeError, ValueError, "(4, 3)", "(4, 2)", "axis 1"):
        xp.run(ml.valid_count, mask, weights=_f32(xp, 4, 2))
    # size-1 axes of either broadcast: (4, 1) mask with (1, 3) weights counts over (4, 3)
    out = xp.run(
        ml.valid_count, xp.asarray(np.ones((4, 1), bool)), weights=_f32(xp, 1, 3)
    )
    assert float(xp.to_numpy(out)) == 12


def test_normalizer_array_must_fit_the_reduced_shape(xp):
    with raises(ShapeError, ValueError, "normalizer", "(4,)", "(3,)"):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), axis=0, normalizer=_f32(xp, 4))


def test_elementwise_fn_that_reduces_is_an_error(xp):
    def total(p: Any, t: Any) -> Any:
        return ml.masked_sum(p - t)  # reduces: not elementwise

    with raises(ShapeError, ValueError, "total", "()", "(4, 3)", "elementwise"):
        xp.run(ml.masked(total), _f32(xp, 4, 3), _f32(xp, 4, 3))

    def compare(p: Any, t: Any) -> Any:
        return p > t

    with raises(DTypeError, TypeError, "bool", "floats"):
        xp.run(ml.masked(compare), _f32(xp, 4, 3), _f32(xp, 4, 3))


# ---- options -----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["avg", "elementwise_mean", "MEAN", None])
def test_unknown_reduction(xp, reduction):
    with raises(ArgumentError, ValueError, "reduction", repr(reduction), "'mean'"):
        xp.run(ml.masked_mse, _f32(xp, 4), _f32(xp, 4), reduction=reduction)


@pytest.mark.parametrize(
    ("axis", "fragment"),
    [(2, "axis 2 is out of range"), (-3, "axis -3 is out of range"), ((0, 5), "axis 5"),
     ((0, -2), "twice"), ((1, 1), "twice"), (1.0, "1.0"), ("0", "'0'"), (True, "True"),
     ((0, 1.5), "1.5")],
)
def test_bad_axis(xp, axis, fragment):
    with raises(ArgumentError, ValueError, "axis", fragment):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), axis=axis)
    with raises(ArgumentError, ValueError, "axis", fragment):
        xp.run(ml.masked_mean, _f32(xp, 4, 3), axis=axis)
    with raises(ArgumentError, ValueError, "axis"):
        xp.run(ml.valid_count, xp.asarray(np.ones((4, 3), bool)), axis=axis)


def test_out_of_range_axis_names_the_valid_range(xp):
    with raises(ArgumentError, ValueError, "[-2, 1]", "2 axes"):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), axis=2)


def test_axis_with_reduction_none(xp):
    with raises(ArgumentError, ValueError, "axis=0", "reduction='none'"):
        xp.run(ml.masked_mse, _f32(xp, 4, 3), _f32(xp, 4, 3), reduction="none", axis=0)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_normalizer_needs_reduction_mean(xp, reduction):
    with raises(ArgumentError, ValueError, "normalizer", f"reduction={reduction!r}"):
        xp.run(ml.masked_mse, _f32(xp, 4), _f32(xp, 4), reduction=reduction, normalizer=3.0)


@pytest.mark.parametrize("normalizer", [-1.0, math.inf, math.nan, True])
def test_bad_scalar_normalizer(xp, normalizer):
    with raises(ArgumentError, ValueError, "normalizer"):
        xp.run(ml.masked_mse, _f32(xp, 4), _f32(xp, 4), normalizer=normalizer)


@pytest.mark.parametrize("eps", [0.0, -1e-6, math.inf, math.nan, "1e-6", None, True])
def test_bad_eps(xp, eps):
    with raises(ArgumentError, ValueError, "eps"):
        xp.run(ml.epsilon_ratio_mse, _f32(xp, 4), _f32(xp, 4), eps=eps)


def test_bad_eps_message_shows_the_value():
    with raises(ArgumentError, ValueError, "eps", "-1e-06", "> 0"):
        ml.epsilon_ratio_mse(np.ones(3), np.ones(3), eps=-1e-6)


# ---- dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_or_bool_pred_or_target(xp, dtype):
    bad = xp.asarray(np.ones((4,), dtype))
    good = _f32(xp, 4)
    name = xp.dtype_name(bad)
    with raises(DTypeError, TypeError, "pred", name, "float"):
        xp.run(ml.masked_mse, bad, good)
    with raises(DTypeError, TypeError, "target", name):
        xp.run(ml.masked_mse, good, bad)
    with raises(DTypeError, TypeError, "pred", name):
        xp.run(ml.epsilon_ratio_mse, bad, good)
    with raises(DTypeError, TypeError, "values", name):
        xp.run(ml.masked_mean, bad)


def test_complex_mask_is_a_dtype_error():
    with raises(DTypeError, TypeError, "mask", "complex"):
        ml.masked_mse(np.ones(3), np.ones(3), np.ones(3, np.complex64))
    with raises(DTypeError, TypeError, "weights", "complex"):
        ml.masked_sum(np.ones(3), weights=np.ones(3, np.complex64))


# ---- libraries -----------------------------------------------------------------------------


def test_arrays_from_different_libraries():
    torch = require("torch")
    with raises(BackendError, TypeError, "pred", "numpy", "target", "torch", "asarray"):
        ml.masked_mse(np.ones(3, np.float32), torch.ones(3))
    with raises(BackendError, TypeError, "mask", "torch"):
        ml.masked_mse(np.ones(3), np.ones(3), torch.ones(3, dtype=torch.bool))
    with raises(BackendError, TypeError, "weights", "numpy"):
        ml.masked_sum(torch.ones(3), weights=np.ones(3))
    with raises(BackendError, TypeError, "normalizer"):
        ml.masked_mse(torch.ones(3), torch.ones(3), normalizer=np.asarray(2.0))


def test_non_array_input(xp):
    with raises(BackendError, TypeError, "pred", "list", "asarray"):
        ml.masked_mse([1.0, 2.0], _f32(xp, 2))
    with raises(BackendError, TypeError, "target", "tuple"):
        ml.masked_mse(_f32(xp, 2), (1.0, 2.0))
    with raises(BackendError, TypeError, "mask", "list"):
        ml.masked_mse(_f32(xp, 2), _f32(xp, 2), [True, False])
    with raises(BackendError, TypeError, "values", "float"):
        ml.masked_sum(3.0)


# ---- labels ---------------------------------------------------------------------------------


def test_negative_and_nan_labels_are_counted_in_the_message():
    target = np.array([1.0, -2.0, -0.5, np.nan, 0.0])
    with raises(LabelError, ValueError, "target", "2 negative", "1 NaN", "masked_mse",
                "check=False"):
        ml.epsilon_ratio_mse(np.ones(5), target)


def test_error_messages_are_one_line():
    with raises(ShapeError, ValueError, "mask[:, None]") as info:
        ml.masked_mse(np.ones((4, 3)), np.ones((4, 3)), np.ones(4, bool))
    assert "\n" not in str(info.value)
