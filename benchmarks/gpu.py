"""GateLSTM on an NVIDIA GPU: the same numbers as Keras's cuDNN LSTM, its speed, the smoke run.

``make bench-gpu`` (``python -m benchmarks.gpu``). On a machine where
TensorFlow sees a GPU (``tf.config.list_physical_devices("GPU")``) it checks,
in order, within :data:`BUDGET_SECONDS` (5 minutes):

1. **Equivalence.** GateLSTM and ``keras.layers.LSTM(use_cudnn=True)`` with the
   same weights (Keras's kernels copied into GateLSTM, whose fused weights keep
   Keras's gate order, and a random bias so a gate-order slip shows) on one
   batch: every output (the sequence, ``h`` and ``c``) within
   :data:`OUTPUT_ATOL` absolutely, and the gradients of a loss that reaches
   every output, with respect to the inputs and every weight, within
   :data:`GRAD_TOL` (absolute plus relative). Both are float32 with
   TensorFlow's TF32 matmuls switched off for this check: TF32 keeps 10
   mantissa bits, so with it on, two correct float32 LSTMs differ by about 1e-3.
2. **Speed.** One training epoch of the model shape of ``benchmarks.gate_lstm``
   (an LSTM of 64 units on (60 steps, 8 features), Dense(1), batch 64, Adam)
   with each layer, after a warm-up epoch each, timed interleaved ``--repeat``
   times (default 5, TF32 at TensorFlow's default): min/median/max epoch
   seconds of each, and of GateLSTM's time over cuDNN's per repeat.
3. **The smoke pipeline** (``configs/smoke.yaml``) with ``device: gpu``, once
   with the sequential executor and once with a local pool of 2 workers sharing
   the GPU (``executor: {kind: local, workers: 2}``), each in a fresh process
   with its build folder and SQLite MLflow store in a temporary folder: it must
   finish and its train stage must report that it ran on the GPU.

It prints a table and writes ``benchmarks/results/gpu.json``; it exits 1 when a
check fails. On a machine without a GPU it says so in one line and exits 0,
without importing TensorFlow when there is no NVIDIA device at all (so ``make
bench``, which runs it only when named, stays fast). A machine with an NVIDIA
device that TensorFlow cannot see (no CUDA build of TensorFlow, say) is a
failure (exit 1), not "no GPU".

``--cpu`` runs the same checks on the CPU, against Keras's generic LSTM loop
instead of cuDNN, to try this script where there is no GPU; its timings say
nothing about GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu.json"
BUDGET_SECONDS = 300.0
OUTPUT_ATOL = 1e-5
GRAD_TOL = 1e-4
# Equivalence check shape: (batch, steps, features) and units.
CHECK_SHAPE, CHECK_UNITS = (32, 30, 8), 16
# Files and programs that an NVIDIA driver puts on a machine (/dev/dxg: WSL 2).
NVIDIA_SIGNS = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")


def nvidia_device() -> str | None:
    """What shows an NVIDIA driver here (a device file or ``nvidia-smi``), or None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    for sign in NVIDIA_SIGNS:
        if Path(sign).exists():
            return sign
    return shutil.which("nvidia-smi")


def check_equivalence(use_cudnn: bool) -> dict:
    """GateLSTM against ``keras.layers.LSTM`` with copied weights: outputs and gradients."""
    import keras
    import numpy as np
    import tensorflow as tf

    from models.gate_lstm import GateLSTM

    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=CHECK_SHAPE).astype("float32"))
        options = {"return_sequences": True, "return_state": True}
        ref = keras.layers.LSTM(CHECK_UNITS, use_cudnn=use_cudnn, **options)
        ref(x)
        kernel, recurrent_kernel, bias = ref.get_weights()
        bias = rng.normal(scale=0.5, size=bias.shape).astype("float32")
        ref.set_weights([kernel, recurrent_kernel, bias])
        ours = GateLSTM(CHECK_UNITS, **options)
        ours(x)
        ours.set_weights(ref.get_weights())
        theirs_out, theirs_grad = _outputs_and_grads(ref, x)
        ours_out, ours_grad = _outputs_and_grads(ours, x)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
    output_diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(ours_out, theirs_out, strict=True)
    )
    grad_diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(ours_grad, theirs_grad, strict=True)
    )
    outputs_ok = all(
        np.allclose(a, b, atol=OUTPUT_ATOL, rtol=0)
        for a, b in zip(ours_out, theirs_out, strict=True)
    )
    grads_ok = all(
        np.all(np.isfinite(a)) and np.allclose(a, b, atol=GRAD_TOL, rtol=GRAD_TOL)
        for a, b in zip(ours_grad, theirs_grad, strict=True)
    )
    return {
        "reference": "keras.layers.LSTM(use_cudnn=True)" if use_cudnn else "keras.layers.LSTM",
        "shape": list(CHECK_SHAPE),
        "units": CHECK_UNITS,
        "max_output_diff": output_diff,
        "max_gradient_diff": grad_diff,
        "output_atol": OUTPUT_ATOL,
        "gradient_tol": GRAD_TOL,
        "passed": bool(outputs_ok and grads_ok),
    }


def _outputs_and_grads(layer, x) -> tuple[list, list]:
    """The layer's outputs on ``x`` and the gradients of a random projection of all of them."""
    import numpy as np
    import tensorflow as tf

    probes = np.random.default_rng(3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = tf.nest.flatten(layer(x, training=True))
        loss = tf.add_n(
            [tf.reduce_sum(o * probes.normal(size=o.shape).astype("float32")) for o in outputs]
        )
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [o.numpy() for o in outputs], [g.numpy() for g in grads]


def time_epochs(use_cudnn: bool, samples: int, repeats: int) -> dict:
    """Epoch seconds of GateLSTM and Keras's (cuDNN) LSTM, interleaved, ``repeats`` times."""
    import keras
    import numpy as np

    from benchmarks.gate_lstm import FEATURES, STEPS, UNITS, _epoch_seconds, _model
    from models.gate_lstm import GateLSTM

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, STEPS, FEATURES)).astype("float32")
    y = x[:, -5:, 0].mean(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    models = {
        "keras_lstm": _model(keras.layers.LSTM(UNITS, use_cudnn=use_cudnn)),
        "gate_lstm": _model(GateLSTM(UNITS)),
    }
    warmup = {name: _epoch_seconds(model, x, y)[0] for name, model in models.items()}
    epochs: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            epochs[name].append(_epoch_seconds(models[name], x, y)[0])
    ratios = [a / b for a, b in zip(epochs["gate_lstm"], epochs["keras_lstm"], strict=True)]
    return {
        "samples_per_epoch": samples,
        "repeats": repeats,
        "reference": "keras.layers.LSTM (cuDNN)" if use_cudnn else "keras.layers.LSTM (CPU)",
        "warmup_epoch_s": warmup,
        "epoch_s": {name: _spread(times) for name, times in epochs.items()},
        "gate_over_keras": _spread(ratios),
    }


def _spread(values: list[float]) -> dict:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "all": values,
    }


def smoke_run(device: str, executor: list[str], timeout: float) -> dict:
    """The smoke pipeline with ``device`` in a fresh process: its exit code and chosen device."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-gpu-") as tmp:
        argv = [
            sys.executable, "-m", "pipelines", "run", "--config", "configs/smoke.yaml",
            "--set", f"device={device}",
            "--set", f"output_directory={tmp}/build",
            "--set", f"report.directory={tmp}/reports",
            *[item for setting in executor for item in ("--set", setting)],
        ]  # fmt: skip
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "PYTHONPATH": str(REPO_ROOT),
        }
        result: dict = {"executor": executor or ["executor.kind=sequential"]}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            result.update(seconds=timeout, rc=None, passed=False)
            result["error"] = f"timed out after {timeout:.0f} s"
            return result
        result["seconds"] = time.perf_counter() - start
        summary = Path(tmp) / "build" / "smoke" / "forecasts" / "summary.json"
        ran_on = json.loads(summary.read_text())["device"] if summary.is_file() else None
    result.update(rc=done.returncode, device=ran_on)
    result["passed"] = done.returncode == 0 and bool(ran_on) and ran_on["kind"] == device
    if not result["passed"]:
        result["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return result


def main(argv: list[str] | None = None) -> int:
    """Check and time GateLSTM on the GPU (see the module docstring); 0 when all checks pass."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed epochs of each layer")
    parser.add_argument("--samples", type=int, default=8192, help="samples per timed epoch")
    parser.add_argument("--skip-smoke", action="store_true", help="no smoke pipeline runs")
    parser.add_argument("--cpu", action="store_true", help="run the checks on the CPU instead")
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be at least 5 (min/median/max of at least 5)")
    start = time.perf_counter()
    if not args.cpu:
        reason = _no_gpu()
        if reason is not None:
            print(reason[1])
            return reason[0]
    result = {"device": _device_name(args.cpu)}
    result["equivalence"] = check_equivalence(use_cudnn=not args.cpu)
    _print_equivalence(result["equivalence"])
    result["timing"] = time_epochs(not args.cpu, args.samples, args.repeat)
    _print_timing(result["timing"])
    result["smoke"] = []
    if not args.skip_smoke:
        device = "cpu" if args.cpu else "gpu"
        for executor in ([], ["executor.kind=local", "executor.workers=2"]):
            left = BUDGET_SECONDS - (time.perf_counter() - start)
            result["smoke"].append(smoke_run(device, executor, timeout=max(left, 30.0)))
            _print_smoke(result["smoke"][-1])
    result["seconds"] = time.perf_counter() - start
    checks = [result["equivalence"]["passed"], *(s["passed"] for s in result["smoke"])]
    result["passed"] = all(checks) and result["seconds"] <= BUDGET_SECONDS
    print(
        f"  whole check: {result['seconds']:.0f} s (goal < {BUDGET_SECONDS:.0f} s); "
        + ("every check passed" if result["passed"] else "FAILED")
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0 if result["passed"] else 1


def _no_gpu() -> tuple[int, str] | None:
    """``(exit code, the one line)`` when there is no GPU to check, else None."""
    sign = nvidia_device()
    if sign is None:
        return (
            0,
            "no NVIDIA GPU on this machine (no driver device, no nvidia-smi): nothing to check",
        )
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    return 1, (
        f"an NVIDIA driver is here ({sign}) but TensorFlow sees no GPU: install TensorFlow's "
        "CUDA libraries (pip install 'tensorflow[and-cuda]') or check CUDA_VISIBLE_DEVICES"
    )


def _device_name(cpu: bool) -> str:
    import tensorflow as tf

    from pipelines.runtime import cpu_name

    if cpu:
        return cpu_name()
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return str(details.get("device_name", "GPU"))


def _print_equivalence(check: dict) -> None:
    verdict = "passed" if check["passed"] else "FAILED"
    print(
        f"  GateLSTM vs {check['reference']}, copied weights, {check['shape']} x "
        f"{check['units']} units, TF32 off: max |output diff| {check['max_output_diff']:.1e} "
        f"(tol {check['output_atol']:.0e}), max |gradient diff| {check['max_gradient_diff']:.1e} "
        f"(tol {check['gradient_tol']:.0e} abs + rel): {verdict}"
    )


def _print_timing(timing: dict) -> None:
    print(f"  epoch of {timing['samples_per_epoch']} samples, {timing['repeats']} repeats:")
    for name, s in timing["epoch_s"].items():
        print(
            f"    {name:<12} min {s['min']:.3f} s  median {s['median']:.3f} s  max {s['max']:.3f} s"
        )
    r = timing["gate_over_keras"]
    print(
        f"    GateLSTM / {timing['reference']}: min {r['min']:.2f}x  median {r['median']:.2f}x  "
        f"max {r['max']:.2f}x"
    )


def _print_smoke(smoke: dict) -> None:
    where = smoke.get("device") or {}
    outcome = "passed" if smoke.get("passed") else f"FAILED: {smoke.get('error')}"
    print(
        f"  smoke pipeline ({', '.join(smoke['executor'])}): {smoke['seconds']:.0f} s, "
        f"ran on {where.get('kind', '?')} ({where.get('name', '?')}): {outcome}"
    )


if __name__ == "__main__":
    sys.exit(main())
