"""GateLSTM against Keras's cuDNN LSTM on a GPU, on any Keras backend with a GPU build.

``python -m benchmarks.gpu_backends --backends jax,torch`` runs, for each named
Keras backend in a fresh process (``KERAS_BACKEND`` is read once, at import):

1. **Which kernel runs.** ``keras.layers.LSTM(use_cudnn=True)`` raises where
   the backend cannot call cuDNN, so a reference that builds is a cuDNN one.
2. **Equivalence.** GateLSTM and ``keras.layers.LSTM(use_cudnn=True)`` with
   the same weights (Keras's kernels copied into GateLSTM, a random bias so a
   gate-order slip shows) on one batch: every output (the sequence, ``h`` and
   ``c``) within :data:`OUTPUT_ATOL` and the gradients of a random projection
   of all of them, with respect to the input and every weight, within
   :data:`GRAD_TOL` (absolute plus relative). TF32 matmuls are off for this
   check only: TF32 keeps 10 mantissa bits, so two correct float32 LSTMs differ
   by about 1e-3 with it on.
3. **Speed.** One training epoch of an LSTM of :data:`UNITS` units over
   (:data:`STEPS` steps, :data:`FEATURES` features), Dense(1), Adam, at batch
   64 and 512 (:data:`SAMPLES` samples an epoch), with each layer after a
   warm-up epoch, timed interleaved ``--repeat`` times (TF32 at the backend's
   default): min/median/max of each, and of GateLSTM's time over cuDNN's per
   round. Beside it, where the time goes: one forward pass and one training
   step of each layer alone at batch 512.

GateLSTM on JAX or PyTorch runs Keras's generic RNN loop over
``GateLSTMCell`` (``jax.lax.scan``; a Python loop on PyTorch); its fused XLA
path (``models/gate_lstm_xla.py``) is TensorFlow's. This script exists beside
``benchmarks.gpu`` (TensorFlow only) because a GPU machine need not have a CUDA
build of TensorFlow: it needs Keras and one backend that sees the GPU, nothing
else of gatecast's dependencies.

It prints a table and writes ``--out`` (default
``benchmarks/results/gpu-backends.json``); exit 1 when an equivalence check
fails or a backend cannot run. ``--cpu`` runs the same on the CPU against
Keras's non-cuDNN LSTM, to try the script where there is no GPU; its timings
say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu-backends.json"
OUTPUT_ATOL = 1e-5
GRAD_TOL = 1e-4
CHECK_SHAPE, CHECK_UNITS = (32, 30, 8), 16
STEPS, FEATURES, UNITS = 60, 8, 64
BATCHES = (64, 512)
SAMPLES = 16384
PROFILE_BATCH, PROFILE_CALLS = 512, 20


# ---------------------------------------------------------------- one backend


def run_backend(cpu: bool, repeat: int, samples: int = SAMPLES) -> dict:
    """Every check of the module docstring on the backend of this process's ``KERAS_BACKEND``."""
    import keras

    backend = keras.backend.backend()
    result: dict = {"backend": backend, "keras": keras.__version__}
    result.update(_device(backend, cpu))
    if not cpu:
        result["cudnn"] = _probe_cudnn()
        if result["cudnn"] is not True:
            cpu = True  # no cuDNN kernel: measure against Keras's generic loop, said so
    result["equivalence"] = check_equivalence(backend, cpu)
    result["timing"] = {str(batch): time_epochs(batch, cpu, repeat, samples) for batch in BATCHES}
    result["profile"] = profile_layers(backend, cpu)
    return result


def _probe_cudnn() -> bool | str:
    """True where ``keras.layers.LSTM(use_cudnn=True)`` runs here, else the error it raised."""
    import keras
    import numpy as np

    try:
        keras.layers.LSTM(4, use_cudnn=True)(np.zeros((2, 3, 2), "float32"))
    except Exception as error:  # noqa: BLE001 -- any failure means no cuDNN path
        return " ".join(f"{type(error).__name__}: {error}".split())[:400]
    return True


def _reference(units: int, cpu: bool, **options):
    import keras

    return keras.layers.LSTM(units, use_cudnn=not cpu, **options)


def _device(backend: str, cpu: bool) -> dict:
    """The backend's library version and the device it computes on."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return {"library": f"jax {jax.__version__}", "device": device.device_kind}
    if backend == "torch":
        import torch

        name = "cpu" if cpu else torch.cuda.get_device_name(0)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"library": f"torch {torch.__version__} (cuDNN {cudnn})", "device": name}
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    name = "cpu"
    if gpus and not cpu:
        name = str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU"))
    return {"library": f"tensorflow {tf.__version__}", "device": name}


def _full_precision(backend: str, on: bool) -> None:
    """TF32 matmuls off (``on``) or back at the backend's default."""
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest" if on else None)
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default
        torch.backends.cudnn.allow_tf32 = not on
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(not on)


def check_equivalence(backend: str, cpu: bool) -> dict:
    """GateLSTM against the reference LSTM with copied weights: outputs and gradients."""
    import numpy as np

    from models.gate_lstm import GateLSTM

    _full_precision(backend, True)
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=CHECK_SHAPE).astype("float32")
        options = {"return_sequences": True, "return_state": True}
        ref = _reference(CHECK_UNITS, cpu, **options)
        ref(x)
        kernel, recurrent_kernel, bias = ref.get_weights()
        bias = rng.normal(scale=0.5, size=bias.shape).astype("float32")
        ref.set_weights([kernel, recurrent_kernel, bias])
        ours = GateLSTM(CHECK_UNITS, **options)
        ours(x)
        ours.set_weights(ref.get_weights())
        theirs_out, theirs_grad = _outputs_and_grads(backend, ref, x)
        ours_out, ours_grad = _outputs_and_grads(backend, ours, x)
    finally:
        _full_precision(backend, False)
    pairs_out = list(zip(ours_out, theirs_out, strict=True))
    pairs_grad = list(zip(ours_grad, theirs_grad, strict=True))
    outputs_ok = all(np.allclose(a, b, atol=OUTPUT_ATOL, rtol=0) for a, b in pairs_out)
    grads_ok = all(
        np.all(np.isfinite(a)) and np.allclose(a, b, atol=GRAD_TOL, rtol=GRAD_TOL)
        for a, b in pairs_grad
    )
    return {
        "reference": "keras.layers.LSTM" + ("" if cpu else "(use_cudnn=True)"),
        "shape": list(CHECK_SHAPE),
        "units": CHECK_UNITS,
        "max_output_diff": max(float(np.max(np.abs(a - b))) for a, b in pairs_out),
        "max_gradient_diff": max(float(np.max(np.abs(a - b))) for a, b in pairs_grad),
        "output_atol": OUTPUT_ATOL,
        "gradient_tol": GRAD_TOL,
        "passed": bool(outputs_ok and grads_ok),
    }


def _outputs_and_grads(backend: str, layer, x) -> tuple[list, list]:
    """The layer's outputs on ``x`` and the gradients of a fixed random projection of them all.

    Returns numpy arrays: the outputs, then the gradients with respect to ``x``
    and each trainable weight, in the layer's order.
    """
    import keras
    import numpy as np

    flat = keras.tree.flatten(layer(x, training=True))
    probes_rng = np.random.default_rng(3)
    probes = [probes_rng.normal(size=tuple(o.shape)).astype("float32") for o in flat]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(inputs, trainable):
            outs, _ = layer.stateless_call(trainable, non_trainable, inputs, training=True)
            return sum(
                jnp.sum(o * p) for o, p in zip(keras.tree.flatten(outs), probes, strict=True)
            )

        trainable = [v.value for v in layer.trainable_variables]
        g_x, g_w = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), trainable)
        grads = [g_x, *g_w]
    elif backend == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        inputs = torch.tensor(x, device=get_device(), requires_grad=True)
        outs = keras.tree.flatten(layer(inputs, training=True))
        loss = sum(
            (o * torch.tensor(p, device=o.device)).sum() for o, p in zip(outs, probes, strict=True)
        )
        weights = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad(loss, [inputs, *weights])
    else:
        import tensorflow as tf

        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outs = tf.nest.flatten(layer(inputs, training=True))
            loss = tf.add_n([tf.reduce_sum(o * p) for o, p in zip(outs, probes, strict=True)])
        grads = tape.gradient(loss, [inputs, *layer.trainable_weights])
    numpy = keras.ops.convert_to_numpy
    return [numpy(o) for o in flat], [numpy(g) for g in grads]


def _model(layer):
    import keras

    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def _data(samples: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, STEPS, FEATURES)).astype("float32")
    return x, x[:, -5:, 0].mean(axis=1, keepdims=True)


def _epoch_seconds(model, x, y, batch: int) -> float:
    """Wall seconds of one training epoch; the epoch's loss is read (a device sync) inside."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return clock.seconds


def time_epochs(batch: int, cpu: bool, repeat: int, samples: int) -> dict:
    """Epoch seconds of GateLSTM and the reference LSTM at ``batch``, interleaved."""
    import keras

    from models.gate_lstm import GateLSTM

    x, y = _data(samples)
    keras.utils.set_random_seed(0)
    models = {"keras_lstm": _model(_reference(UNITS, cpu)), "gate_lstm": _model(GateLSTM(UNITS))}
    warmup = {name: _epoch_seconds(model, x, y, batch) for name, model in models.items()}
    epochs: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(repeat):
        for name in names[r % 2 :] + names[: r % 2]:
            epochs[name].append(_epoch_seconds(models[name], x, y, batch))
    ratios = [a / b for a, b in zip(epochs["gate_lstm"], epochs["keras_lstm"], strict=True)]
    return {
        "batch": batch,
        "samples_per_epoch": samples,
        "warmup_epoch_s": warmup,
        "epoch_s": {name: spread(times) for name, times in epochs.items()},
        "gate_over_keras": spread(ratios),
    }


def profile_layers(backend: str, cpu: bool) -> dict:
    """Milliseconds of one forward pass and one training step of each layer alone.

    Each is compiled or warmed first, then timed ``PROFILE_CALLS`` times with a
    device sync after each; medians. The backward pass's share is the step's
    time less the forward's.
    """
    import numpy as np

    from models.gate_lstm import GateLSTM

    x = np.random.default_rng(1).normal(size=(PROFILE_BATCH, STEPS, FEATURES)).astype("float32")
    out: dict = {"batch": PROFILE_BATCH, "calls": PROFILE_CALLS}
    for name, layer in (("keras_lstm", _reference(UNITS, cpu)), ("gate_lstm", GateLSTM(UNITS))):
        layer(x)
        forward, step = _layer_callables(backend, layer, x)
        out[name] = {"forward_ms": _median_ms(forward), "train_step_ms": _median_ms(step)}
        out[name]["backward_ms"] = out[name]["train_step_ms"] - out[name]["forward_ms"]
    return out


def _layer_callables(backend: str, layer, x):
    """(forward, forward+backward) of ``layer`` on ``x``, each returning after a device sync."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        inputs = jnp.asarray(x)

        @jax.jit
        def forward(w):
            return layer.stateless_call(w, non_trainable, inputs, training=False)[0]

        @jax.jit
        def step(w):
            return jax.grad(lambda w: jnp.sum(forward(w) ** 2))(w)

        return (
            lambda: jax.block_until_ready(forward(trainable)),
            lambda: jax.block_until_ready(step(trainable)),
        )
    if backend == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        inputs = torch.tensor(x, device=get_device())
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

        def forward():
            with torch.no_grad():
                layer(inputs, training=False)
            sync()

        def step():
            loss = (layer(inputs, training=True) ** 2).sum()
            torch.autograd.grad(loss, [v.value for v in layer.trainable_variables])
            sync()

        return forward, step
    import tensorflow as tf

    inputs = tf.constant(x)

    @tf.function(jit_compile=None)
    def forward():
        return layer(inputs, training=False)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs, training=True) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    return (lambda: forward().numpy()), (lambda: [g.numpy() for g in step()])


def _median_ms(call) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(PROFILE_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def spread(values: list[float]) -> dict:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "all": values,
    }


# ---------------------------------------------------------------- the driver


def main(argv: list[str] | None = None) -> int:
    """Run every named backend in its own process; print and write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_backends", description=__doc__)
    parser.add_argument("--backends", default="jax,torch", help="comma-separated Keras backends")
    parser.add_argument("--repeat", type=int, default=5, help="timed epochs of each layer")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="samples per epoch")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no cuDNN)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per backend")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: this backend, JSON on stdout
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be at least 5 (min/median/max of at least 5)")
    if args.one:
        print(json.dumps(run_backend(args.cpu, args.repeat, args.samples)))
        return 0
    result: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "backends": {},
    }
    ok = True
    for backend in args.backends.split(","):
        start = time.perf_counter()
        one = _child(backend, args)
        one["seconds"] = time.perf_counter() - start
        result["backends"][backend] = one
        _print_backend(backend, one)
        ok = ok and one.get("equivalence", {}).get("passed", False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if ok else 1


def _child(backend: str, args) -> dict:
    argv = [sys.executable, "-m", "benchmarks.gpu_backends", "--one", backend]
    argv += ["--repeat", str(args.repeat), "--samples", str(args.samples)]
    argv += ["--cpu"] if args.cpu else []
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        print(f"{backend}: timed out after {args.timeout:.0f} s", file=sys.stderr)
        return {"error": f"timed out after {args.timeout:.0f} s"}
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        print(f"{backend}: failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _print_backend(backend: str, one: dict) -> None:
    if "error" in one:
        print(f"{backend}: FAILED")
        return
    print(f"{backend}: keras {one['keras']}, {one['library']}, on {one['device']}")
    if one.get("cudnn", True) is not True:
        print(f"  no cuDNN LSTM on this backend ({one['cudnn']}): reference is Keras's loop")
    print_equivalence(one["equivalence"])
    for timing in one["timing"].values():
        print_timing(timing)
    p = one["profile"]
    for name in ("keras_lstm", "gate_lstm"):
        q = p[name]
        print(
            f"  {name} alone, batch {p['batch']}: forward {q['forward_ms']:.2f} ms, "
            f"train step {q['train_step_ms']:.2f} ms (backward {q['backward_ms']:.2f} ms)"
        )
    print(f"  {one['seconds']:.0f} s")


def print_equivalence(check: dict) -> None:
    """One line: the largest differences against their tolerances, and the verdict."""
    print(
        f"  GateLSTM vs {check['reference']}, copied weights, {check['shape']} x "
        f"{check['units']} units, TF32 off: max |output diff| {check['max_output_diff']:.1e} "
        f"(tol {check['output_atol']:.0e}), max |gradient diff| "
        f"{check['max_gradient_diff']:.1e} (tol {check['gradient_tol']:.0e} abs + rel): "
        + ("passed" if check["passed"] else "FAILED")
    )


def print_timing(timing: dict) -> None:
    """Each layer's epoch seconds and GateLSTM's ratio, min / median / max."""
    print(f"  batch {timing['batch']}, epoch of {timing['samples_per_epoch']} samples:")
    for name, s in timing["epoch_s"].items():
        print(
            f"    {name:<11} min {s['min']:.3f} s  median {s['median']:.3f} s  max {s['max']:.3f} s"
        )
    r = timing["gate_over_keras"]
    print(
        f"    GateLSTM / reference: min {r['min']:.2f}x  median {r['median']:.2f}x  "
        f"max {r['max']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
