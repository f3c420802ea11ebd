"""`make bench-gpu` (benchmarks/gpu.py) without a GPU, and how `make bench` runs it.

On a GPU machine the script runs its checks for minutes; these tests cover
what this (CPU-only) machine can: the one line and exit 0 without a GPU, the
failure when a driver is present but TensorFlow sees no GPU, and that a bare
``python -m benchmarks`` leaves the GPU script out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import __main__ as bench
from benchmarks import gpu
from pipelines.config import REPO_ROOT


def _without_gpu_hiding() -> dict[str, str]:
    """This process's environment, less the tests' CUDA_VISIBLE_DEVICES (conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(monkeypatch):
    env = _without_gpu_hiding()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if gpu.nvidia_device() is not None:
        pytest.skip("this machine has an NVIDIA driver: the script would run its GPU checks")
    code = (
        "import sys, benchmarks.gpu as g; rc = g.main([]); print(rc, 'tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert lines[0].startswith("no NVIDIA GPU on this machine")
    assert lines[1] == "0 False"  # exit code 0, and TensorFlow was never imported


def test_with_every_gpu_hidden_the_module_command_exits_0_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu"],
        cwd=REPO_ROOT,
        env={**_without_gpu_hiding(), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert "no NVIDIA GPU" in done.stdout


def test_a_driver_that_tensorflow_cannot_use_is_a_failure(monkeypatch, capsys):
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees a GPU here")
    monkeypatch.setattr(gpu, "nvidia_device", lambda: "/dev/nvidiactl")
    assert gpu.main([]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert "/dev/nvidiactl" in out[0]
    assert "TensorFlow sees no GPU" in out[0]


def test_hidden_devices_count_as_no_gpu(monkeypatch):
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert gpu.nvidia_device() is None


def test_make_bench_leaves_the_gpu_script_out_but_it_can_be_named():
    assert {"gpu", "gpu_backends"} <= set(bench.available())
    assert not {"gpu", "gpu_backends"} & set(bench.discover())
    assert {"pipeline", "scale"} <= set(bench.discover())
    assert bench.main(["no_such_benchmark"]) == 2


def test_makefile_has_a_bench_gpu_target_with_help():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\nbench-gpu: $(STAMP) ## " in makefile
    assert "\t$(PY) -m benchmarks.gpu\n" in makefile


def test_backends_script_checks_and_times_gatelstm_on_jax(tmp_path):
    # The GPU-machine script of `make bench-gpu-backends`, tried on the CPU: one backend
    # in a child process, GateLSTM against Keras's LSTM, outputs, gradients and timings.
    from benchmarks import gpu_backends

    out = tmp_path / "gpu-backends.json"
    argv = ["--cpu", "--backends", "jax", "--samples", "256", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_backends", *argv],
        cwd=REPO_ROOT,
        env=_without_gpu_hiding(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jax = json.loads(out.read_text())["backends"]["jax"]
    assert jax["backend"] == "jax" and jax["equivalence"]["passed"]
    assert jax["equivalence"]["max_output_diff"] < gpu_backends.OUTPUT_ATOL
    assert set(jax["timing"]) == {str(b) for b in gpu_backends.BATCHES}
    for timing in jax["timing"].values():
        assert len(timing["epoch_s"]["gate_lstm"]["all"]) == 5
        assert timing["gate_over_keras"]["min"] > 0
    assert jax["profile"]["gate_lstm"]["train_step_ms"] > jax["profile"]["gate_lstm"]["forward_ms"]
    assert "GateLSTM / reference" in done.stdout
