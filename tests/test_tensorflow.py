"""TensorFlow: the core on ``tf.Tensor`` through the Array-API shim, and the adapter module.

Oracles are float64 NumPy on the valid subset. Covered: exact zero gradients at masked
NaN/inf entries (GradientTape), ``tf.function(jit_compile=True)`` equal to eager (values and
gradients, also with unknown dimensions), ``tf.Variable`` inputs, the shim's promotion rules,
``is_traced``, and that ``import masked_losses.tensorflow`` imports no other framework.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

tf = require("tensorflow")

import masked_losses as ml  # noqa: E402
import masked_losses.tensorflow as mltf  # noqa: E402
from masked_losses._namespace import array_namespace, is_traced  # noqa: E402
from masked_losses._tf_shim import namespace as shim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _data(shape=(6, 4), seed=0, p_valid=0.5):
    """pred, clean target, mask, and a target with NaN/inf at masked positions."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape)
    target = rng.normal(size=shape)
    mask = rng.random(shape) < p_valid
    mask.flat[0] = True  # at least one valid, one missing
    mask.flat[-1] = False
    garbage = np.where(rng.random(shape) < 0.5, np.nan, np.inf)
    return pred, target, mask, np.where(mask, target, garbage)


def _tape(fn, *arrays):
    """(value, gradients w.r.t. every array) with a GradientTape."""
    with tf.GradientTape() as tape:
        for a in arrays:
            tape.watch(a)
        value = fn(*arrays)
    grads = tape.gradient(value, list(arrays), unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value.numpy(), [g.numpy() for g in grads]


def _mse_oracle(pred, target, mask, weights=None):
    w = np.ones_like(pred) if weights is None else np.broadcast_to(weights, pred.shape)
    w = np.where(mask, w, 0.0)
    den = w.sum()
    value = (w * np.where(mask, pred - target, 0.0) ** 2).sum() / den if den else 0.0
    grad_pred = 2 * w * np.where(mask, pred - target, 0.0) / den if den else np.zeros_like(pred)
    return value, grad_pred


# ---- guarantee 1: exact zero gradient at masked NaN/inf, in pred and in target ---------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_tape_masked_nan_targets_have_zero_gradient(dtype):
    pred, target, mask, target_bad = _data()
    p, t, m = tf.constant(pred, dtype), tf.constant(target_bad, dtype), tf.constant(mask)
    value, (gp, gt) = _tape(lambda p, t: mltf.masked_mse(p, t, m), p, t)
    expected, expected_gp = _mse_oracle(pred, target, mask)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(value, expected, rtol=rtol)
    np.testing.assert_allclose(gp, expected_gp, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(gt, -expected_gp, rtol=rtol, atol=1e-7)
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    assert np.all(np.isfinite(gp))
    assert np.all(np.isfinite(gt))


def test_gradient_tape_masked_nan_preds_have_zero_gradient():
    pred, target, mask, _ = _data(seed=1)
    pred_bad = np.where(mask, pred, np.nan)
    p, t, m = (tf.constant(a) for a in (pred_bad, target, mask))
    value, (gp, gt) = _tape(lambda p, t: mltf.masked_mse(p, t, m), p, t)
    expected, expected_gp = _mse_oracle(pred, target, mask)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(gp, expected_gp, rtol=1e-12, atol=1e-15)
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)


def test_gradient_tape_masked_lifted_loss_and_reductions():
    pred, target, mask, target_bad = _data(seed=2)
    p, t, m = (tf.constant(a) for a in (pred, target_bad, mask))
    masked_mae = mltf.masked(lambda a, b: tf.abs(a - b))
    value, (gp, gt) = _tape(lambda p, t: masked_mae(p, t, m), p, t)
    np.testing.assert_allclose(value, np.abs(pred - target)[mask].mean(), rtol=1e-12)
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    assert np.all(np.isfinite(gp))

    value, (gv,) = _tape(lambda v: mltf.masked_mean(v, m), t)
    np.testing.assert_allclose(value, target[mask].mean(), rtol=1e-12)
    np.testing.assert_array_equal(gv, np.where(mask, 1.0 / mask.sum(), 0.0))

    value, (gv,) = _tape(lambda v: mltf.masked_sum(v, m), t)
    np.testing.assert_allclose(value, target[mask].sum(), rtol=1e-12)
    np.testing.assert_array_equal(gv, mask.astype(float))


def test_gradient_tape_epsilon_ratio_missing_labels_zero_gradient():
    pred, target, mask, _ = _data(seed=3)
    labels = np.where(mask, np.abs(target) + 0.5, 0.0)
    pred_bad = np.where(mask, pred, np.nan)  # garbage predictions where the label is missing
    p, t = tf.constant(pred_bad), tf.constant(labels)
    eps = 1e-6
    value, (gp, gt) = _tape(lambda p, t: mltf.epsilon_ratio_mse(p, t, eps=eps), p, t)
    r = np.where(mask, labels / (labels + eps), 0.0)
    expected = (r * np.where(mask, pred - labels, 0.0) ** 2).sum() / r.sum()
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    assert np.all(np.isfinite(gt))


def test_all_missing_is_zero_with_zero_gradient():
    pred, _, _, _ = _data()
    p, t = tf.constant(pred), tf.constant(np.full(pred.shape, np.nan))
    m = tf.zeros(pred.shape, tf.bool)
    value, (gp, gt) = _tape(lambda p, t: mltf.masked_mse(p, t, m), p, t)
    assert value == 0.0
    assert np.all(gp == 0)
    assert np.all(gt == 0)


# ---- guarantee 5: tf.function(jit_compile=True) == eager -------------------------------------

CASES = {
    "mask": {},
    "weights": {"weights": "w"},
    "axis0": {"axis": 0},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
    "row-mask": {"row_mask": True},
}


@pytest.mark.parametrize("case", list(CASES))
def test_jit_compile_matches_eager_value_and_gradient(case):
    options = dict(CASES[case])
    pred, target, mask, target_bad = _data(seed=4)
    if options.pop("row_mask", False):  # a per-sample mask of shape (N, 1)
        mask = mask[:, :1]
        target_bad = np.where(mask, target, np.nan)
    if options.get("weights") == "w":
        options["weights"] = tf.constant(np.linspace(0.0, 2.0, pred.shape[1])[None, :], tf.float32)
    p, t = tf.constant(pred, tf.float32), tf.constant(target_bad, tf.float32)
    m = tf.constant(mask)

    def total(p, t, m):
        return tf.reduce_sum(mltf.masked_mse(p, t, m, **options))

    def value_and_grads(p, t, m):
        with tf.GradientTape() as tape:
            tape.watch([p, t])
            value = total(p, t, m)
        return (value, *tape.gradient(value, [p, t]))

    eager = [x.numpy() for x in value_and_grads(p, t, m)]
    compiled = [x.numpy() for x in tf.function(value_and_grads, jit_compile=True)(p, t, m)]
    for e, c in zip(eager, compiled, strict=True):
        assert np.all(np.isfinite(c))
        np.testing.assert_allclose(c, e, rtol=1e-6, atol=1e-7)
    if mask.shape == pred.shape:  # masked entries: exactly zero gradient in both
        assert np.all(compiled[1][~mask] == 0)
        assert np.all(compiled[2][~mask] == 0)


@pytest.mark.parametrize(
    "kind", ["mask", "no-mask", "weights(1,D)", "epsilon", "valid_count", "masked_mean"]
)
def test_jit_compile_with_unknown_batch_dimension(kind):
    """An input_signature with a None batch dim: one trace, correct values for two sizes."""
    d = 3
    spec = tf.TensorSpec([None, d], tf.float32)
    mspec = tf.TensorSpec([None, d], tf.bool)
    w = np.array([[0.5, 1.0, 2.0]])
    fns = {
        "mask": (lambda p, t, m: mltf.masked_mse(p, t, m), [spec, spec, mspec]),
        "no-mask": (lambda p, t, m: mltf.masked_mse(p, tf.where(m, t, p)), [spec, spec, mspec]),
        "weights(1,D)": (
            lambda p, t, m: mltf.masked_mse(p, t, m, weights=tf.constant(w, tf.float32)),
            [spec, spec, mspec],
        ),
        "epsilon": (
            lambda p, t, m: mltf.epsilon_ratio_mse(p, tf.where(m, tf.abs(t), 0.0)),
            [spec, spec, mspec],
        ),
        "valid_count": (lambda p, t, m: mltf.valid_count(m, axis=0), [spec, spec, mspec]),
        "masked_mean": (lambda p, t, m: mltf.masked_mean(t, m, axis=1), [spec, spec, mspec]),
    }
    fn, signature = fns[kind]
    compiled = tf.function(fn, jit_compile=True, input_signature=signature)
    for n, seed in ((5, 0), (8, 1)):
        pred, target, mask, target_bad = _data((n, d), seed=seed)
        args = (
            tf.constant(pred, tf.float32), tf.constant(target_bad, tf.float32), tf.constant(mask)
        )
        got = compiled(*args).numpy()
        pred32, target32 = pred.astype(np.float32), target.astype(np.float32)
        if kind == "mask":
            expected = _mse_oracle(pred32, target32, mask)[0]
        elif kind == "no-mask":
            expected = _mse_oracle(pred32, target32, mask)[0] * mask.sum() / mask.size
        elif kind == "weights(1,D)":
            expected = _mse_oracle(pred32, target32, mask, w)[0]
        elif kind == "epsilon":
            lab = np.abs(target32.astype(np.float64))
            r = np.where(mask, lab / (lab + 1e-6), 0.0)
            expected = (r * (pred32 - lab) ** 2).sum() / r.sum()
        elif kind == "valid_count":
            expected = mask.sum(axis=0)
            assert got.dtype == np.int64
        else:
            counts = mask.sum(axis=1)
            sums = np.where(mask, target32, 0.0).sum(axis=1)
            expected = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    assert compiled.experimental_get_tracing_count() == 1


def test_epsilon_ratio_label_check_eager_only():
    labels = tf.constant([1.0, -1.0, 0.0])
    pred = tf.constant([0.0, 0.0, 0.0])
    with pytest.raises(ml.LabelError, match="negative"):
        mltf.epsilon_ratio_mse(pred, labels)
    # under tf.function the check is skipped (no data-dependent Python branch)
    value = tf.function(lambda p, t: mltf.epsilon_ratio_mse(p, t), jit_compile=True)(
        pred, tf.constant([1.0, 2.0, 0.0])
    )
    np.testing.assert_allclose(value.numpy(), (1.0 * 1 / (1 + 1e-6) + 4 * 2 / (2 + 1e-6))
                               / (1 / (1 + 1e-6) + 2 / (2 + 1e-6)), rtol=1e-6)


# ---- inputs: variables, dtypes, errors -------------------------------------------------------


def test_variables_are_accepted_and_differentiated():
    pred, target, mask, target_bad = _data(seed=5)
    v = tf.Variable(pred)
    t, m = tf.constant(target_bad), tf.constant(mask)
    with tf.GradientTape() as tape:
        value = mltf.masked_mse(v, t, m)
    g = tape.gradient(value, v).numpy()
    expected, expected_gp = _mse_oracle(pred, target, mask)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(g, expected_gp, rtol=1e-12, atol=1e-15)
    assert array_namespace(pred=v) is shim


@pytest.mark.parametrize(
    ("pdt", "tdt", "out"),
    [
        ("float16", "float16", "float16"),
        ("bfloat16", "bfloat16", "bfloat16"),
        ("float16", "bfloat16", "float32"),
        ("float16", "float32", "float32"),
        ("float32", "float64", "float64"),
    ],
)
def test_mixed_dtypes_promote_and_accumulate_in_float32(pdt, tdt, out):
    pred, target, mask, target_bad = _data(shape=(64, 8), seed=6)
    p, t = tf.cast(tf.constant(pred), pdt), tf.cast(tf.constant(target_bad), tdt)
    value = mltf.masked_mse(p, t, tf.constant(mask))
    assert value.dtype == tf.as_dtype(out)
    p64 = tf.cast(p, tf.float64).numpy()
    t64 = tf.cast(tf.cast(tf.constant(target), tdt), tf.float64).numpy()
    expected = _mse_oracle(p64, t64, mask)[0]
    rtol = {"float16": 1e-3, "bfloat16": 1e-2}.get(out, 1e-6)
    np.testing.assert_allclose(tf.cast(value, tf.float64).numpy(), expected, rtol=rtol)


def test_integer_mask_and_weights():
    pred, target, mask, target_bad = _data(seed=7)
    weights = np.arange(pred.shape[0], dtype=np.int32)[:, None]
    value = mltf.masked_mse(
        tf.constant(pred), tf.constant(target_bad), tf.constant(mask.astype(np.int64)),
        weights=tf.constant(weights),
    )
    np.testing.assert_allclose(value.numpy(), _mse_oracle(pred, target, mask, weights)[0],
                               rtol=1e-12)


def test_errors_name_the_argument():
    p = tf.zeros((4, 1))
    with pytest.raises(ml.ShapeError, match="trailing size-1"):
        mltf.masked_mse(p, tf.zeros((4,)))
    with pytest.raises(ml.ShapeError, match="mask"):
        mltf.masked_mse(tf.zeros((4, 2)), tf.zeros((4, 2)), tf.ones((4,), tf.bool))
    with pytest.raises(ml.DTypeError, match="pred"):
        mltf.masked_mse(tf.zeros((3,), tf.int32), tf.zeros((3,)))
    with pytest.raises(ml.BackendError, match="tensorflow"):
        mltf.masked_mse(tf.zeros((3,)), np.zeros((3,), np.float32))


# ---- the shim itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [
        ("float16", "bfloat16", "float32"),
        ("bfloat16", "float32", "float32"),
        ("float32", "float64", "float64"),
        ("int32", "float16", "float16"),
        ("bool", "float32", "float32"),
        ("int8", "uint8", "int16"),
        ("uint32", "int64", "int64"),
        ("int16", "int64", "int64"),
        ("bool", "bool", "bool"),
    ],
)
def test_shim_result_type_table(a, b, out):
    assert shim.result_type(tf.as_dtype(a), tf.as_dtype(b)) == tf.as_dtype(out)
    assert shim.result_type(tf.as_dtype(b), tf.as_dtype(a)) == tf.as_dtype(out)
    # the same as NumPy (and the Array API) wherever NumPy has both dtypes
    if "bfloat16" not in (a, b) and {a, b} != {"int32", "float16"}:
        assert np.result_type(a, b) == np.dtype(out)


def test_shim_python_scalars_are_weak():
    x16 = tf.constant([1.0, 2.0], tf.float16)
    assert shim.where(tf.constant([True, False]), x16, 0.0).dtype == tf.float16
    assert shim.where(tf.constant([True, False]), 1, x16).dtype == tf.float16
    assert shim.result_type(x16, 1.0, 2) == tf.float16
    np.testing.assert_array_equal(
        shim.where(tf.constant([True, False]), x16, 0.0).numpy(), np.array([1.0, 0.0])
    )
    assert shim.result_type(True) == tf.bool
    assert shim.result_type(tf.int32, 0.5) == tf.float32  # a higher-kind scalar lifts (JAX)
    assert shim.result_type(tf.bool, 2) == tf.int64
    np.testing.assert_array_equal(
        shim.where(tf.constant([True, False]), tf.constant([1, 2]), 0.5).numpy(), [1.0, 0.5]
    )


def test_shim_reductions_and_dtypes():
    b = tf.constant([[True, False, True], [False, False, True]])
    c = shim.count_nonzero(b, axis=1)
    assert c.dtype == tf.int64
    np.testing.assert_array_equal(c.numpy(), [2, 1])
    assert shim.sum(b).dtype == tf.int64
    assert int(shim.sum(b)) == 3
    assert shim.sum(tf.constant([1.5, 2.5]), dtype=tf.float64).dtype == tf.float64
    np.testing.assert_array_equal(shim.sum(tf.ones((2, 3)), axis=()).numpy(), np.ones((2, 3)))
    assert bool(shim.any(b))
    assert not bool(shim.any(tf.zeros((2,))))
    assert float(shim.min(tf.constant([3.0, -1.0]))) == -1.0
    np.testing.assert_array_equal(shim.isnan(tf.constant([1.0, np.nan])).numpy(), [False, True])
    assert not bool(shim.any(shim.isnan(tf.constant([1, 2]))))
    assert shim.isdtype(tf.bfloat16, "real floating")
    assert shim.isdtype(tf.uint8, ("bool", "integral"))
    assert not shim.isdtype(tf.uint8, "bool")
    assert shim.astype(tf.constant([1, 2]), shim.float32).dtype == tf.float32
    assert shim.asarray([1.0, 2.0], dtype=shim.float64).dtype == tf.float64
    np.testing.assert_array_equal(
        shim.broadcast_to(tf.constant([[1.0], [2.0]]), (2, 3)).numpy(), [[1.0] * 3, [2.0] * 3]
    )
    for dtype in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        info = shim.finfo(dtype)
        assert info.bits == dtype.size * 8
        assert info.max == pytest.approx(dtype.max, rel=1e-3)
        assert 1.0 + info.eps != 1.0
    assert shim.finfo(tf.bfloat16).eps == 2.0**-7
    with pytest.raises(ml.DTypeError):
        shim.finfo(tf.int32)


def test_shim_broadcast_to_unknown_dimension():
    @tf.function(input_signature=[tf.TensorSpec([None, 1]), tf.TensorSpec([None, 3])])
    def ok(col, full):
        return shim.broadcast_to(col, (None, 1)), shim.broadcast_to(full, (None, 3))

    a, b = ok(tf.ones((2, 1)), tf.ones((2, 3)))
    assert a.shape == (2, 1)
    assert b.shape == (2, 3)

    @tf.function(input_signature=[tf.TensorSpec([1, 3])])
    def bad(row):
        return shim.broadcast_to(row, (None, 3))

    with pytest.raises(ml.ShapeError, match="unknown at trace time"):
        bad.get_concrete_function()


def test_is_traced():
    x = tf.constant([1.0])
    v = tf.Variable([1.0])
    assert not is_traced(x)
    assert not is_traced(v)
    seen = []

    @tf.function
    def f(x):
        seen.append((is_traced(x), is_traced(v)))
        return x

    f(x)
    assert seen == [(True, True)]
    with tf.GradientTape():
        assert not is_traced(x)


# ---- guarantee 6: the adapter imports only TensorFlow ----------------------------------------
