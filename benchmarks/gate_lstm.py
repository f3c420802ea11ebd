"""Training speed of GateLSTM against keras.layers.LSTM and a naive four-matmul cell.

Every variant trains the same model shape (an LSTM layer of 64 units on
(60 steps, 8 features) windows, a Dense(1) head, batch 64, Adam, MSE) on the
same data. After one warm-up epoch each (tracing and compiling), epochs are
timed interleaved, ABCD ABCD ..., so drifts in machine load hit every variant
alike; the table reports median epoch times and their ratios to the faster of
the two ``keras.layers.LSTM`` variants. Results go to
``benchmarks/results/gate_lstm.json``.

Usage: ``python -m benchmarks gate_lstm`` or
``python -m benchmarks.gate_lstm [--quick] [--repeats N] [--samples N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from models.gate_lstm import GateLSTM  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "gate_lstm.json"
STEPS, FEATURES, UNITS, BATCH = 60, 8, 64, 64


class NaiveLSTMCell(keras.layers.Layer):
    """LSTM cell as first written: four gates, eight separate matmuls per step.

    Args:
        units: Size of the hidden and cell state.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        features = input_shape[-1]
        self.w = {g: self.add_weight(shape=(features, self.units), name=f"w_{g}") for g in "ifco"}
        self.u = {
            g: self.add_weight(
                shape=(self.units, self.units), name=f"u_{g}", initializer="orthogonal"
            )
            for g in "ifco"
        }
        self.b = {
            g: self.add_weight(
                shape=(self.units,), name=f"b_{g}", initializer="ones" if g == "f" else "zeros"
            )
            for g in "ifco"
        }

    def call(self, inputs, states):
        h_tm1, c_tm1 = states

        def z(g):
            return ops.matmul(inputs, self.w[g]) + ops.matmul(h_tm1, self.u[g]) + self.b[g]

        f_t = ops.sigmoid(z("f"))
        i_t = ops.sigmoid(z("i"))
        c_t = f_t * c_tm1 + i_t * ops.tanh(z("c"))
        h_t = ops.sigmoid(z("o")) * ops.tanh(c_t)
        return h_t, [h_t, c_t]


def _model(layer: keras.layers.Layer, jit_compile: bool | str = "auto") -> keras.Model:
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    return model


# name -> (description, model factory); the first two are the baselines of the ratio.
VARIANTS: dict[str, tuple[str, Callable[[], keras.Model]]] = {
    "keras_lstm": (
        "keras.layers.LSTM, compile() defaults",
        lambda: _model(keras.layers.LSTM(UNITS)),
    ),
    "keras_lstm_xla": (
        "keras.layers.LSTM, compile(jit_compile=True)",
        lambda: _model(keras.layers.LSTM(UNITS), jit_compile=True),
    ),
    "naive_cell": (
        "keras.layers.RNN(cell with 4 separate gate matmuls), defaults",
        lambda: _model(keras.layers.RNN(NaiveLSTMCell(UNITS))),
    ),
    "gate_lstm": (
        "GateLSTM, compile() defaults",
        lambda: _model(GateLSTM(UNITS)),
    ),
    "gate_lstm_no_xla": (
        "GateLSTM(jit_compile=False): the same loop without XLA, defaults",
        lambda: _model(GateLSTM(UNITS, jit_compile=False)),
    ),
}
BASELINES = ("keras_lstm", "keras_lstm_xla")


def _epoch_seconds(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def run(samples: int, repeats: int, names: list[str]) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, STEPS, FEATURES)).astype("float32")
    y = x[:, -5:, 0].mean(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    models = {name: VARIANTS[name][1]() for name in names}
    warmup = {name: _epoch_seconds(model, x, y) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(_epoch_seconds(model, x, y))
    median = {name: statistics.median(t) for name, t in times.items()}
    present = [b for b in BASELINES if b in median]
    reference = min(present, key=median.__getitem__) if present else names[0]
    import tensorflow as tf

    return {
        "shape": {
            "samples_per_epoch": samples,
            "batch": BATCH,
            "steps": STEPS,
            "features": FEATURES,
            "units": UNITS,
        },
        "repeats": repeats,
        "reference": reference,
        "variants": {
            name: {
                "description": VARIANTS[name][0],
                "warmup_epoch_s": warmup[name],
                "median_epoch_s": median[name],
                "epoch_s": times[name],
                "ratio_to_reference": median[name] / median[reference],
            }
            for name in names
        },
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "cpu_count": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "machine": platform.machine(),
        },
    }


def _print_table(result: dict) -> None:
    shape = result["shape"]
    print(
        f"epoch = {shape['samples_per_epoch']} samples, batch {shape['batch']}, "
        f"{shape['steps']} steps x {shape['features']} features, {shape['units']} units; "
        f"median of {result['repeats']} interleaved epochs; "
        f"gpus: {result['environment']['gpus'] or 'none'}"
    )
    print(f"{'variant':<18} {'median s':>9} {'warm-up s':>10} {'ratio':>7}  description")
    for name, row in result["variants"].items():
        print(
            f"{name:<18} {row['median_epoch_s']:>9.3f} {row['warmup_epoch_s']:>10.2f} "
            f"{row['ratio_to_reference']:>7.2f}  {row['description']}"
        )
    print(f"ratio = median epoch time / median epoch time of {result['reference']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate_lstm", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="512 samples, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per variant")
    parser.add_argument("--samples", type=int, default=None, help="samples per epoch")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    samples = args.samples or (512 if args.quick else 2048)
    repeats = args.repeats or (3 if args.quick else 7)
    result = run(samples, repeats, args.variants)
    _print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
