"""Keras 3: ``MaskedMeanSquaredError`` and ``EpsilonRatioMeanSquaredError``.

In-process tests run on the active Keras backend (TensorFlow unless ``KERAS_BACKEND`` says
otherwise) against float64 NumPy oracles on the valid subset: values, ``sample_weight``
masking, the all-missing batch, exact zero gradients at missing entries, Keras masks,
serialisation (``get_config``, ``keras.saving`` round trip of a compiled model).

The motivating multi-task CNN is trained with ``model.fit`` in one subprocess per Keras
backend (``tests/keras_multitask_fit.py``); the three subprocesses run concurrently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

keras = require("keras")

import masked_losses as ml  # noqa: E402
from masked_losses.keras import (  # noqa: E402
    EpsilonRatioMeanSquaredError,
    MaskedMeanSquaredError,
)

ROOT = Path(__file__).resolve().parents[1]
FIT_SCRIPT = ROOT / "tests" / "keras_multitask_fit.py"
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
BACKEND = keras.backend.backend()


def _data(shape=(8, 3), seed=0, p_valid=0.6):
    rng = np.random.default_rng(seed)
    y_pred = rng.normal(size=shape).astype("float32")
    y_clean = rng.normal(size=shape).astype("float32")
    valid = rng.random(shape) < p_valid
    valid.flat[0], valid.flat[-1] = True, False
    return y_clean, np.where(valid, y_clean, np.nan).astype("float32"), y_pred, valid


def _oracle(y_true, y_pred, valid, weights=None):
    """(mean over valid entries, its gradient w.r.t. y_pred), float64."""
    w = np.ones(y_pred.shape) if weights is None else np.broadcast_to(weights, y_pred.shape)
    w = np.where(valid, w, 0.0)
    diff = np.where(valid, y_pred.astype(np.float64) - y_true, 0.0)
    den = w.sum()
    if den == 0:
        return 0.0, np.zeros(y_pred.shape)
    return float((w * diff**2).sum() / den), 2 * w * diff / den


def _value_and_grad(fn, y_pred):
    """``fn(y_pred)`` and its gradient w.r.t. ``y_pred`` on the active Keras backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        p = tf.constant(y_pred)
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = fn(p)
        return float(value), tape.gradient(value, p).numpy()
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(jax.numpy.asarray(y_pred))
        return float(value), np.asarray(grad)
    if BACKEND == "torch":
        import torch

        p = torch.tensor(y_pred, requires_grad=True)
        value = fn(p)
        value.backward()
        return float(value.detach()), p.grad.numpy()
    pytest.fail(f"no gradient helper for Keras backend {BACKEND}")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---- values ----------------------------------------------------------------------------------


def test_value_equals_oracle_on_valid_subset():
    y_clean, y_true, y_pred, valid = _data()
    value = _np(MaskedMeanSquaredError()(y_true, y_pred))
    assert value.shape == ()
    assert value.dtype == np.float32
    np.testing.assert_allclose(value, _oracle(y_clean, y_pred, valid)[0], rtol=1e-6)
    # Keras' own MSE is NaN on the same batch: the motivating failure
    assert np.isnan(_np(keras.losses.MeanSquaredError()(y_true, y_pred)))


def test_mean_is_over_valid_entries_not_batch_size():
    y_clean, y_true, y_pred, valid = _data(shape=(16, 1), p_valid=0.25)
    value = float(_np(MaskedMeanSquaredError()(y_true, y_pred)))
    total = ((y_pred - y_clean)[valid].astype(np.float64) ** 2).sum()
    np.testing.assert_allclose(value, total / valid.sum(), rtol=1e-6)
    assert abs(value - total / valid.size) > 1e-3 * value  # not Keras' sum_over_batch_size


def test_sentinel_mask_value():
    y_clean, _, y_pred, valid = _data(seed=1)
    y_true = np.where(valid, y_clean, -1.0).astype("float32")
    y_true[1, 1] = np.nan  # NaN stays missing with a sentinel
    valid = valid & ~np.isnan(y_true)
    value = _np(MaskedMeanSquaredError(mask_value=-1.0)(y_true, y_pred))
    np.testing.assert_allclose(value, _oracle(y_clean, y_pred, valid)[0], rtol=1e-6)


def test_rank_one_targets_align_with_a_size_one_output_axis():
    y_clean, y_true, y_pred, valid = _data(shape=(10, 1), seed=2)
    value = _np(MaskedMeanSquaredError()(y_true[:, 0], y_pred))  # (N,) against (N, 1)
    np.testing.assert_allclose(value, _oracle(y_clean, y_pred, valid)[0], rtol=1e-6)
    elementwise = _np(MaskedMeanSquaredError(reduction="none")(y_true[:, 0], y_pred))
    assert elementwise.shape == (10, 1)  # never broadcast to (10, 10)


def test_reductions_sum_and_none():
    y_clean, y_true, y_pred, valid = _data(seed=3)
    sq = np.where(valid, (y_pred.astype(np.float64) - y_clean) ** 2, 0.0)
    np.testing.assert_allclose(
        _np(MaskedMeanSquaredError(reduction="sum")(y_true, y_pred)), sq.sum(), rtol=1e-6
    )
    none = _np(MaskedMeanSquaredError(reduction="none")(y_true, y_pred))
    np.testing.assert_allclose(none, sq, rtol=1e-6)
    assert np.all(none[~valid] == 0)
    np.testing.assert_allclose(_np(MaskedMeanSquaredError().call(y_true, y_pred)), sq, rtol=1e-6)
    with pytest.raises(ml.ArgumentError, match="sum_over_batch_size"):
        MaskedMeanSquaredError(reduction="sum_over_batch_size")


def test_float64_inputs_are_cast_to_the_loss_dtype():
    y_clean, y_true, y_pred, valid = _data(seed=4)
    value = _np(MaskedMeanSquaredError()(y_true.astype("float64"), y_pred.astype("float64")))
    assert value.dtype == np.float32
    np.testing.assert_allclose(value, _oracle(y_clean, y_pred, valid)[0], rtol=1e-6)


# ---- sample_weight ---------------------------------------------------------------------------


def test_zero_sample_weight_masks_entries():
    y_clean, y_true, y_pred, valid = _data(shape=(12, 3), seed=5)
    sw = np.linspace(0.0, 2.0, 12).astype("float32")
    sw[[2, 5, 7]] = 0.0
    y_true[[2, 5, 7]] = np.inf  # garbage at zero-weight rows: still masked exactly
    value = _np(MaskedMeanSquaredError()(y_true, y_pred, sample_weight=sw))
    rows = sw != 0
    expected = _oracle(y_clean, y_pred, valid & rows[:, None], sw[:, None])[0]
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    full = np.broadcast_to(sw[:, None], y_pred.shape)
    value_full = _np(MaskedMeanSquaredError()(y_true, y_pred, sample_weight=full))
    np.testing.assert_allclose(value_full, expected, rtol=1e-6)
    # a (N, 1) weight against (N,) targets is squeezed, as in Keras
    value_col = _np(MaskedMeanSquaredError()(y_true[:, 0], y_pred[:, 0], sample_weight=sw[:, None]))
    expected_col = _oracle(y_clean[:, 0], y_pred[:, 0], valid[:, 0] & rows, sw)[0]
    np.testing.assert_allclose(value_col, expected_col, rtol=1e-6)


def test_sample_weight_that_does_not_line_up_is_an_error():
    _, y_true, y_pred, _ = _data(shape=(4, 3))
    with pytest.raises(ml.ShapeError, match="sample_weight"):
        MaskedMeanSquaredError()(y_true, y_pred, sample_weight=np.ones((4, 3, 2), "float32"))


def test_all_missing_batch_is_zero_not_nan():
    _, _, y_pred, _ = _data()
    y_true = np.full(y_pred.shape, np.nan, "float32")
    loss = MaskedMeanSquaredError()
    value, grad = _value_and_grad(lambda p: loss(y_true, p), y_pred)
    assert value == 0.0
    assert np.all(grad == 0)
    weighted = loss(np.zeros_like(y_pred), y_pred, sample_weight=np.zeros(len(y_pred), "float32"))
    assert float(_np(weighted)) == 0.0


# ---- gradients -------------------------------------------------------------------------------


def test_gradient_wrt_y_pred_is_exactly_zero_at_missing_entries():
    y_clean, y_true, y_pred, valid = _data(shape=(10, 4), seed=6)
    sw = np.arange(1, 11).astype("float32")
    loss = MaskedMeanSquaredError()
    value, grad = _value_and_grad(lambda p: loss(y_true, p, sample_weight=sw), y_pred)
    expected, expected_grad = _oracle(y_clean, y_pred, valid, sw[:, None])
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.all(grad[~valid] == 0)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_gradient_through_a_model_has_no_nan():
    """One optimizer step on NaN-labelled data leaves every weight finite."""
    _, y_true, _, _ = _data(shape=(16, 2), seed=7)
    x = np.random.default_rng(7).normal(size=(16, 5)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=MaskedMeanSquaredError())
    before = [_np(w).copy() for w in model.weights]
    loss = model.train_on_batch(x, y_true)
    after = [_np(w) for w in model.weights]
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_tensorflow_xla_with_unknown_batch_dimension():
    """The loss inside tf.function(jit_compile=True) with a None batch dim, as Keras traces."""
    if BACKEND != "tensorflow":
        pytest.skip("tf.function needs the TensorFlow Keras backend")
    import tensorflow as tf

    loss = MaskedMeanSquaredError()
    spec = tf.TensorSpec([None, 3], tf.float32)

    @tf.function(jit_compile=True, input_signature=[spec, spec, tf.TensorSpec([None])])
    def step(y_true, y_pred, sw):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred, sample_weight=sw)
        return value, tape.gradient(value, y_pred)

    for n, seed in ((5, 12), (9, 13)):
        y_clean, y_true, y_pred, valid = _data(shape=(n, 3), seed=seed)
        sw = np.linspace(0.0, 1.0, n).astype("float32")
        value, grad = step(y_true, y_pred, sw)
        expected, expected_grad = _oracle(y_clean, y_pred, valid, sw[:, None])
        np.testing.assert_allclose(float(value), expected, rtol=1e-5)
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-4, atol=1e-6)
        assert np.all(grad.numpy()[~valid] == 0)
    assert step.experimental_get_tracing_count() == 1


def test_keras_mask_on_y_pred_masks_timesteps():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    x[0, 3:] = 0.0  # padded timesteps, masked by the Masking layer
    x[2, 1:] = 0.0
    y_clean = rng.normal(size=x.shape).astype("float32")
    y_true = y_clean.copy()
    y_true[x == 0] = np.nan  # padded targets may hold anything
    y_pred = keras.layers.Masking(0.0)(x)
    steps = np.any(x != 0, axis=-1)
    value = _np(MaskedMeanSquaredError()(y_true, y_pred))
    expected = _oracle(y_clean, x, np.broadcast_to(steps[..., None], x.shape))[0]
    np.testing.assert_allclose(value, expected, rtol=1e-6)


# ---- epsilon-ratio ---------------------------------------------------------------------------


def test_epsilon_ratio_value_weights_and_zero_labels():
    rng = np.random.default_rng(9)
    y_pred = rng.normal(size=(12, 2)).astype("float32")
    labels = np.abs(rng.normal(size=(12, 2))).astype("float32") + 0.1
    labels[rng.random((12, 2)) < 0.4] = 0.0
    sw = rng.random(12).astype("float32")
    sw[3] = 0.0
    eps = 1e-3
    loss = EpsilonRatioMeanSquaredError(eps=eps)
    value, grad = _value_and_grad(lambda p: loss(labels, p, sample_weight=sw), y_pred)
    lab = labels.astype(np.float64)
    r = lab / (lab + eps) * sw[:, None]
    expected = (r * (y_pred - lab) ** 2).sum() / r.sum()
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    missing = (labels == 0) | (sw[:, None] == 0)
    assert np.all(grad[missing] == 0)
    assert np.all(np.isfinite(grad))
    with pytest.raises(ml.LabelError):
        loss(-labels - 1.0, y_pred)  # eager: negative labels are rejected
    with pytest.raises(ml.ArgumentError, match="eps"):
        EpsilonRatioMeanSquaredError(eps=0.0)


# ---- serialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        MaskedMeanSquaredError(),
        MaskedMeanSquaredError(mask_value=-1.0, reduction="sum", name="head3"),
        EpsilonRatioMeanSquaredError(eps=1e-3, reduction="none", check=False),
    ],
    ids=["mse-default", "mse-sentinel", "epsilon"],
)
def test_get_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == config
    name = keras.saving.get_registered_name(type(loss))
    assert name == f"masked_losses>{type(loss).__name__}"
    y_clean, y_true, y_pred, _ = _data(seed=10)
    if isinstance(loss, EpsilonRatioMeanSquaredError):
        y_true = np.abs(y_clean)
    np.testing.assert_array_equal(_np(restored(y_true, y_pred)), _np(loss(y_true, y_pred)))


def test_saved_model_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(20, 4)).astype("float32")
    y = rng.normal(size=(20, 1)).astype("float32")
    y[rng.random(20) < 0.5] = -1.0  # the sentinel marks missing targets
    y[0] = -1.0
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=MaskedMeanSquaredError(mask_value=-1.0, name="head3"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, MaskedMeanSquaredError)
    assert loaded.loss.mask_value == -1.0
    assert loaded.loss.name == "head3"
    original = model.evaluate(x, y, batch_size=20, verbose=0)
    again = loaded.evaluate(x, y, batch_size=20, verbose=0)
    pred = np.asarray(model.predict(x, batch_size=20, verbose=0), np.float64)
    valid = y != -1.0
    np.testing.assert_allclose(again, original, rtol=1e-6)
    np.testing.assert_allclose(original, np.mean((pred[valid] - y[valid]) ** 2), rtol=1e-5)


# ---- the motivating model, on every Keras backend --------------------------------------------


def _fit_command(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, str(FIT_SCRIPT)], env


@pytest.fixture(scope="module")
def fit_runs(request):
    """Start the selected backends' training subprocesses together; yield the handles."""
    wanted = [
        item.callspec.params["backend"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_multitask_cnn_trains_on_keras_backend"
    ]
    procs = {}
    for backend in dict.fromkeys(wanted):
        cmd, env = _fit_command(backend)
        procs[backend] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_multitask_cnn_trains_on_keras_backend(backend, fit_runs):
    if backend != "tensorflow":
        require(backend)
    proc = fit_runs[backend]
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    history = result["history"]
    for key in ("loss", "cls_loss", "reg_all_loss", "reg_pos_loss"):
        assert len(history[key]) == 3, (key, history)
        assert np.all(np.isfinite(history[key])), (key, history)
    assert result["weights_finite"]
    assert result["jit_compile"] == (backend != "torch")  # XLA on TensorFlow, jit on JAX
    assert 0 < result["n_valid_fixed_batch"] < 32  # the fixed batch has missing targets
    np.testing.assert_allclose(result["head3_loss"], result["head3_oracle"], rtol=1e-5)
