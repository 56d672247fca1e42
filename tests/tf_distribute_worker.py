"""Keras ``model.fit`` under ``tf.distribute.MirroredStrategy`` on 2 logical CPUs.

Run as ``python tests/tf_distribute_worker.py IN.npz OUT.npz`` (by tests/test_ddp.py). The
logical devices must be configured before TensorFlow initialises, hence a fresh process. For
each scenario it trains a ``Dense`` layer from the given initial weights for one epoch of
``len(x) / batch`` SGD steps (no shuffling) and saves the final weights and the reported loss.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import masked_losses.keras as mk  # noqa: E402

# One strategy for every model: TensorFlow caches collective instances per process, and a
# second MirroredStrategy can collide with the first one's cached instance shapes.
STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def fit(data: dict[str, np.ndarray], loss: keras.losses.Loss, y: np.ndarray,
        sample_weight: np.ndarray | None) -> tuple[list[np.ndarray], float]:
    assert STRATEGY.num_replicas_in_sync == 2
    with STRATEGY.scope():
        model = keras.Sequential([keras.Input(data["x"].shape[1:]), keras.layers.Dense(y.shape[1])])
        model.layers[0].set_weights([data["W0"], data["b0"]])
        model.compile(optimizer=keras.optimizers.SGD(float(data["lr"])), loss=loss)
    history = model.fit(
        data["x"], y, sample_weight=sample_weight, batch_size=int(data["batch"]), epochs=1,
        shuffle=False, verbose=0,
    )
    return model.layers[0].get_weights(), float(history.history["loss"][0])


def main(in_file: str, out_file: str) -> None:
    data = dict(np.load(in_file))
    out: dict[str, np.ndarray] = {}
    scenarios = {
        "masked": (mk.MaskedMeanSquaredError(), data["y"], None),
        "weighted": (mk.MaskedMeanSquaredError(), data["y"], data["sample_weight"]),
        "ratio": (mk.EpsilonRatioMeanSquaredError(), data["y_ratio"], None),
    }
    for name, (loss, y, sw) in scenarios.items():
        (kernel, bias), value = fit(data, loss, y, sw)
        out[f"{name}_kernel"], out[f"{name}_bias"], out[f"{name}_loss"] = kernel, bias, value
    # without the global count (each replica's own masked mean): must NOT match the oracle
    mk._replica_context = lambda: None
    (kernel, _), _ = fit(data, mk.MaskedMeanSquaredError(), data["y"], None)
    out["local_kernel"] = kernel
    np.savez(out_file, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
