"""GateLSTM on an NVIDIA GPU: the same numbers as Keras's cuDNN LSTM, its speed, the smoke run.

``make bench-gpu`` (``python -m benchmarks.gpu``). On a machine where
TensorFlow sees a GPU (``tf.config.list_physical_devices("GPU")``) it checks,
in order, within :data:`BUDGET_SECONDS` (5 minutes):

1. **Equivalence** and 2. **speed** as ``benchmarks.gpu_backends`` checks them
   on any backend (its ``check_equivalence`` and ``time_epochs``), here on
   TensorFlow, where GateLSTM runs its XLA fast path: the same weights in
   GateLSTM and ``keras.layers.LSTM(use_cudnn=True)``, outputs and gradients
   within its tolerances with TF32 off; then epoch times of each at batch 64
   and 512, interleaved ``--repeat`` times, min/median/max.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks import gpu_backends as backends  # noqa: E402 -- after KERAS_BACKEND is set

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu.json"
BUDGET_SECONDS = 300.0
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
    parser.add_argument(
        "--samples", type=int, default=backends.SAMPLES, help="samples per timed epoch"
    )
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
    result["equivalence"] = backends.check_equivalence("tensorflow", args.cpu)
    backends.print_equivalence(result["equivalence"])
    result["timing"] = {}
    for batch in backends.BATCHES:
        timing = backends.time_epochs(batch, args.cpu, args.repeat, args.samples)
        result["timing"][str(batch)] = timing
        backends.print_timing(timing)
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

    from pipelines.execution.runtime import cpu_name

    if cpu:
        return cpu_name()
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return str(details.get("device_name", "GPU"))


def _print_smoke(smoke: dict) -> None:
    where = smoke.get("device") or {}
    outcome = "passed" if smoke.get("passed") else f"FAILED: {smoke.get('error')}"
    print(
        f"  smoke pipeline ({', '.join(smoke['executor'])}): {smoke['seconds']:.0f} s, "
        f"ran on {where.get('kind', '?')} ({where.get('name', '?')}): {outcome}"
    )


if __name__ == "__main__":
    sys.exit(main())
