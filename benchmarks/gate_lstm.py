"""Training speed of GateLSTM against keras.layers.LSTM and a naive four-matmul cell.

Every variant trains the same model shape (an LSTM layer of 64 units on
(60 steps, 8 features) windows, a Dense(1) head, batch 64, Adam, MSE) on the
same data. After one warm-up epoch each (tracing and compiling), epochs are
timed interleaved, ABCD ABCD ..., so drifts in machine load hit every variant
alike. That whole interleaved comparison is repeated ``--repeat`` times
(rounds, 5 by default), each round starting with a different variant; a
round's ratio is a variant's median epoch time over that of
``keras.layers.LSTM`` in a model compiled with ``jit_compile=True``, and the
table reports the minimum, median and maximum of the rounds' ratios, so the
spread shows how far one figure can be trusted. The process CPU time of each
epoch is recorded and compared the same way: on a shared machine it is less
disturbed by other work than the wall time, though it also counts the time a
second thread spends.

An epoch is timed from ``on_epoch_begin`` to ``on_epoch_end`` inside
``model.fit(epochs=1)``. The whole ``fit`` call is recorded as well but not
ranked: after the last batch, releasing fit's ``tf.data`` iterator sometimes
stalls for 0.1-0.3 s (the same for every model, seen on the 2-core CPU), which
would decide the ratio by chance on a 0.4 s epoch.

A second table times what the walk-forward does: a fresh ``LstmForecaster``
(window 20, units [32], 5 epochs, batch 64) fit on 1000 bars, then fresh ones
on 1000, 1250 and 900 bars. Only the first fit should pay XLA's compilation of
the GateLSTM loop; the refits reuse it whatever their training length.
Results go to ``benchmarks/results/gate_lstm.json``.

Usage: ``python -m benchmarks gate_lstm`` or ``python -m benchmarks.gate_lstm
[--quick] [--repeat N] [--epochs N] [--samples N] [--skip-refit]``.
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
import pandas as pd  # noqa: E402
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
        "GateLSTM, compile() defaults (row blocks: one per core)",
        lambda: _model(GateLSTM(UNITS)),
    ),
    "gate_lstm_1_block": (
        "GateLSTM(batch_shards=1): one XLA loop over the whole batch, defaults",
        lambda: _model(GateLSTM(UNITS, batch_shards=1)),
    ),
    "gate_lstm_no_xla": (
        "GateLSTM(jit_compile=False): Keras's generic RNN loop over GateLSTMCell, defaults",
        lambda: _model(GateLSTM(UNITS, jit_compile=False)),
    ),
}
# The reference of every ratio: keras.layers.LSTM in a model compiled with jit_compile=True.
REFERENCE = "keras_lstm_xla"


class _EpochClock(keras.callbacks.Callback):
    """Wall and process CPU time from ``on_epoch_begin`` to ``on_epoch_end``."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = (time.perf_counter() - self.start[0], time.process_time() - self.start[1])


def _epoch_seconds(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Wall and process CPU seconds of one training epoch, and of the whole ``fit`` call."""
    clock = _EpochClock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return (*clock.seconds, time.perf_counter() - start)


def run(samples: int, epochs: int, rounds: int, names: list[str]) -> dict:
    """Time ``epochs`` interleaved epochs per variant, ``rounds`` times over."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, STEPS, FEATURES)).astype("float32")
    y = x[:, -5:, 0].mean(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    models = {name: VARIANTS[name][1]() for name in names}
    warmup = {name: _epoch_seconds(model, x, y)[0] for name, model in models.items()}
    # name -> round -> one (wall s, cpu s, fit call s) per epoch
    timed: dict[str, list[list[tuple[float, float, float]]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            timed[name].append([])
        for _ in range(epochs):
            for name in order:
                timed[name][r].append(_epoch_seconds(models[name], x, y))
    reference = REFERENCE if REFERENCE in names else names[0]
    import tensorflow as tf

    return {
        "shape": {
            "samples_per_epoch": samples,
            "batch": BATCH,
            "steps": STEPS,
            "features": FEATURES,
            "units": UNITS,
        },
        "rounds": rounds,
        "epochs_per_round": epochs,
        "reference": reference,
        "variants": {
            name: _variant_result(name, models[name], warmup[name], timed, reference)
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


def _variant_result(
    name: str, model: keras.Model, warmup_s: float, timed: dict, reference: str
) -> dict:
    """One variant's times, and its per-round ratios to ``reference`` summarised."""

    def round_medians(variant: str, column: int) -> list[float]:
        return [statistics.median(t[column] for t in epochs) for epochs in timed[variant]]

    def spread(ratios: list[float]) -> dict:
        return {
            "min": min(ratios),
            "median": statistics.median(ratios),
            "max": max(ratios),
            "per_round": ratios,
        }

    wall, cpu = round_medians(name, 0), round_medians(name, 1)
    ref_wall, ref_cpu = round_medians(reference, 0), round_medians(reference, 1)
    return {
        "description": VARIANTS[name][0],
        "layer_config": _layer_config(model),
        "warmup_epoch_s": warmup_s,
        "median_epoch_s": statistics.median(t[0] for r in timed[name] for t in r),
        "median_epoch_cpu_s": statistics.median(t[1] for r in timed[name] for t in r),
        "ratio_to_reference": spread([a / b for a, b in zip(wall, ref_wall, strict=True)]),
        "cpu_ratio_to_reference": spread([a / b for a, b in zip(cpu, ref_cpu, strict=True)]),
        "epoch_s": [[t[0] for t in r] for r in timed[name]],
        "epoch_cpu_s": [[t[1] for t in r] for r in timed[name]],
        "fit_call_s": [[t[2] for t in r] for r in timed[name]],
    }


def _layer_config(model: keras.Model) -> dict:
    """The recurrent layer's settings that decide how it runs (e.g. GateLSTM's row blocks)."""
    layer = model.layers[0]
    config = {"class": type(layer).__name__}
    if isinstance(layer, GateLSTM):
        config.update(
            jit_compile=layer.jit_compile,
            batch_shards=layer.batch_shards,
            row_blocks_used=layer._shards(BATCH) if layer.jit_compile else 1,
        )
    return config


def _bars(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic daily OHLCV bars (AR(1) log returns), enough for the forecaster."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    for t in range(1, n):
        returns[t] = 0.3 * returns[t - 1] + rng.normal(0.0, 0.01)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, n)))
    index = pd.bdate_range("2010-01-01", periods=n, name="date")
    return pd.DataFrame(
        {
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1e6, 3e6, n),
        },
        index=index,
    )


REFIT_LENGTHS = (1000, 1000, 1250, 900)
REFIT_PARAMS = {"window": 20, "units": [32], "epochs": 5, "batch_size": 64, "patience": 5}


def refit(lengths: tuple[int, ...] = REFIT_LENGTHS) -> dict:
    """Seconds of fresh ``LstmForecaster`` fits on training segments of ``lengths`` bars."""
    from models.lstm import LstmForecaster

    bars = _bars(max(lengths))
    fits = []
    for k, n in enumerate(lengths):
        start = time.perf_counter()
        forecaster = LstmForecaster(seed=k, **REFIT_PARAMS).fit(bars.iloc[:n])
        fits.append(
            {
                "train_bars": n,
                "fit_s": time.perf_counter() - start,
                "epochs": forecaster.epochs_trained_,
                "fit_samples": forecaster.n_fit_samples_,
            }
        )
    return {"params": REFIT_PARAMS, "fits": fits}


def _print_refit(result: dict) -> None:
    print(f"fresh LstmForecaster fits, {result['params']}:")
    for k, row in enumerate(result["fits"]):
        label = "first fit (compiles)" if k == 0 else "fresh model refit"
        print(
            f"  {label:<21} {row['train_bars']:>5} bars {row['fit_samples']:>5} samples "
            f"{row['epochs']} epochs {row['fit_s']:>7.2f} s"
        )


def _print_table(result: dict) -> None:
    shape = result["shape"]
    print(
        f"epoch = {shape['samples_per_epoch']} samples, batch {shape['batch']}, "
        f"{shape['steps']} steps x {shape['features']} features, {shape['units']} units; "
        f"{result['rounds']} rounds of {result['epochs_per_round']} interleaved epochs; "
        f"gpus: {result['environment']['gpus'] or 'none'}"
    )
    print(
        f"{'variant':<18} {'median s':>9} {'warm-up s':>10} {'ratio min/med/max':>20} "
        f"{'cpu ratio min/med/max':>22}  description"
    )

    def spread(summary: dict) -> str:
        return f"{summary['min']:.2f}/{summary['median']:.2f}/{summary['max']:.2f}"

    for name, row in result["variants"].items():
        print(
            f"{name:<18} {row['median_epoch_s']:>9.3f} {row['warmup_epoch_s']:>10.2f} "
            f"{spread(row['ratio_to_reference']):>20} "
            f"{spread(row['cpu_ratio_to_reference']):>22}  {row['description']}"
        )
    print(
        f"ratio = a round's median epoch wall time / that of {result['reference']} in the "
        f"same round (cpu ratio: CPU time); min, median and max over the rounds"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate_lstm", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="512 samples, 3 epochs a round")
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of the whole interleaved comparison"
    )
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per round")
    parser.add_argument("--samples", type=int, default=None, help="samples per epoch")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--skip-refit", action="store_true", help="no fresh-forecaster timings")
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--repeat and --epochs must be at least 1")
    samples = args.samples or (512 if args.quick else 2048)
    epochs = args.epochs or (3 if args.quick else 5)
    result = run(samples, epochs, args.repeat, args.variants)
    _print_table(result)
    if not args.skip_refit:
        result["refit"] = refit()
        _print_refit(result["refit"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
