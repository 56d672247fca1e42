"""The motivating multi-task model in Keras 3, trained with ``model.fit`` on one backend.

Run by ``tests/test_keras.py`` once per backend: ``KERAS_BACKEND=jax python
tests/keras_multitask_fit.py``. A small CNN has one image input and three heads: a sigmoid
classifier, a regression valid for every sample, and a regression valid only for the positive
samples (its labels are NaN for the negatives), trained with ``MaskedMeanSquaredError``.

Prints one JSON object (the last line of stdout) for the test to check: the backend, the
per-epoch losses, whether every weight is finite after training, and, for a fixed batch,
the head-3 loss from ``model.evaluate`` next to a float64 NumPy oracle on the valid subset.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

from masked_losses.keras import MaskedMeanSquaredError

N, SIDE, EPOCHS, BATCH = 96, 8, 3, 32


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SIDE, SIDE, 1)).astype("float32")
    score = x[:, 2:6, 2:6, 0].mean(axis=(1, 2)) * 4.0  # ~N(0, 1)
    positive = score > 0
    y = {
        "cls": positive.astype("float32")[:, None],
        "reg_all": x.mean(axis=(1, 2, 3))[:, None] * 8.0,
        # valid only for positives: NaN marks the missing targets
        "reg_pos": np.where(positive, 1.0 + score, np.nan).astype("float32")[:, None],
    }
    return x, y


def build_model() -> keras.Model:
    inputs = keras.Input((SIDE, SIDE, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = {
        "cls": keras.layers.Dense(1, activation="sigmoid", name="cls")(h),
        "reg_all": keras.layers.Dense(1, name="reg_all")(h),
        "reg_pos": keras.layers.Dense(1, name="reg_pos")(h),
    }
    return keras.Model(inputs, outputs)


def main() -> None:
    keras.utils.set_random_seed(0)
    x, y = make_data(N)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={
            "cls": keras.losses.BinaryCrossentropy(),
            "reg_all": keras.losses.MeanSquaredError(),
            "reg_pos": MaskedMeanSquaredError(),
        },
        # XLA on TensorFlow (JAX always compiles); eager on PyTorch
        jit_compile=keras.backend.backend() != "torch",
    )
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)

    # a fixed batch: evaluate's head-3 loss against a NumPy oracle on the valid subset
    xb = x[:BATCH]
    yb = {k: v[:BATCH] for k, v in y.items()}
    evaluated = model.evaluate(xb, yb, batch_size=BATCH, return_dict=True, verbose=0)
    pred = np.asarray(model.predict(xb, batch_size=BATCH, verbose=0)["reg_pos"], np.float64)
    target = yb["reg_pos"].astype(np.float64)
    valid = ~np.isnan(target)
    oracle = float(np.mean((pred[valid] - target[valid]) ** 2))

    weights_finite = all(
        bool(np.all(np.isfinite(keras.ops.convert_to_numpy(w)))) for w in model.weights
    )
    result = {
        "backend": keras.backend.backend(),
        "jit_compile": bool(model.jit_compile),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "weights_finite": weights_finite,
        "n_valid_fixed_batch": int(valid.sum()),
        "head3_loss": float(evaluated["reg_pos_loss"]),
        "head3_oracle": oracle,
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
