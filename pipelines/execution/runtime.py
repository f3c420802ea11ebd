"""Where the models run (CPU or GPU) and how reproducibly.

``configure(cfg)`` must run before TensorFlow executes its first op:

- ``device: cpu`` hides every GPU from TensorFlow;
- ``device: gpu`` requires one (a clear ConfigError when TensorFlow sees none);
- ``device: auto`` uses the first GPU TensorFlow sees, else the CPU.

With ``deterministic: true`` (the default) TensorFlow's op determinism is on,
so two runs with the same seed give bit-identical results on the CPU (on a GPU
too, at some cost in speed). Seeds are set per model with
``keras.utils.set_random_seed`` (``seed_everything``).

The train stage's worker processes (``executor: {kind: local}`` or ``ray``) run
``configure_worker``, which is ``configure`` plus GPU memory growth, so that
several workers can share one GPU. A Ray worker that runs only CPU units
(``GATECAST_UNIT_DEVICE=cpu``, set by ``pipelines.execution.ray_executor``) is configured
for the CPU whatever the config's device, so it needs no GPU of its own.

TensorFlow starts quietly (``import_tensorflow``, which ``configure`` uses):
its C++ INFO and WARNING lines are off (``TF_CPP_MIN_LOG_LEVEL=2`` unless set),
``device: cpu``, and ``device: auto`` on a machine with no NVIDIA device,
hide the GPUs from CUDA before TensorFlow loads (``CUDA_VISIBLE_DEVICES=""``),
and the lines TensorFlow writes to stderr while it loads, before absl's
logging is set up and so beyond any setting (oneDNN, cuda drivers, cuInit,
cuDNN/cuFFT/cuBLAS factories, CPU instructions), are dropped; any other line
is passed on. ``TF_ENABLE_ONEDNN_OPTS`` is left alone: turning oneDNN off
would change the numerics (TensorFlow's own line says so) and the speed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common.errors import ConfigError
from pipelines.config import Config

log = logging.getLogger("gatecast.runtime")

#: TensorFlow reads these when it starts (an executor's workers set them to cap its
#: threads); ``tf.config.threading`` is the fallback once it has started.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# What TensorFlow 2.21 writes to stderr as it loads and finds its devices, whatever the settings.
_START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on"
    r"|Could not find cuda drivers|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) "
    r"factory|computation_placer|cpu_feature_guard|rebuild TensorFlow with the appropriate "
    r"compiler flags|TF-TRT Warning|Unable to register cuDNN"
)


@dataclass(frozen=True)
class DeviceInfo:
    """The device the models run on.

    Args:
        requested: ``device`` from the config (auto, cpu, gpu).
        kind: What was chosen: ``cpu`` or ``gpu``.
        name: Human-readable device name (CPU model or GPU name).
        tf_device: TensorFlow device string, e.g. ``/CPU:0``; None where no forecaster
            computes with TensorFlow (``configure(cfg, needed=False)``).
        deterministic: Whether op determinism is on.
    """

    requested: str
    kind: str
    name: str
    tf_device: str | None
    deterministic: bool

    def tags(self) -> dict[str, str]:
        """MLflow tags recording the choice."""
        return {
            "gatecast.device": self.kind,
            "gatecast.device_name": self.name,
            "gatecast.device_requested": self.requested,
            "gatecast.deterministic": str(self.deterministic).lower(),
        }


def cpu_name() -> str:
    """The CPU model, e.g. ``Intel(R) Xeon(R) ...`` (``platform.processor()`` as a fallback)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA device (Linux device files; WSL's ``/dev/dxg``)."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists()


def quiet_environment(device: str = "auto") -> None:
    """Set TensorFlow's start-up settings; only has effect before TensorFlow is imported.

    Args:
        device: The config's ``device``: ``cpu`` (and ``auto`` where no GPU is
            present) hides the GPUs from CUDA, so TensorFlow does not try to
            start it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device == "auto" and not gpu_present():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@contextlib.contextmanager
def _start_up_lines_dropped() -> Iterator[None]:
    """Catch what is written to file descriptor 2 in the block; pass on all but start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if failed or not _START_UP_NOISE.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow(device: str = "auto") -> tuple[Any, list[Any]]:
    """TensorFlow, started quietly (module docstring), and the GPUs it sees."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf, tf.config.list_physical_devices("GPU")
    quiet_environment(device)
    with _start_up_lines_dropped():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")  # CUDA's start-up lines come here
    return tf, gpus


def uses_device(cfg: Config, names: Iterable[str] | None = None) -> bool:
    """Whether an enabled forecaster (one of ``names``, where given) declares ``device``
    (computes with TensorFlow)."""
    declared = cfg.forecasters.with_capability("device")
    return bool(set(declared) if names is None else set(declared) & set(names))


def configure(cfg: Config, needed: bool = True) -> DeviceInfo:
    """Choose the device and switch op determinism on or off, as the config says.

    ``needed=False`` (no forecaster of the stage declares ``device``: ``uses_device``)
    leaves TensorFlow unstarted, which costs seconds in every process that imports it:
    the forecasters run on the CPU and ``device_scope`` does nothing.
    """
    if not needed:
        return DeviceInfo(cfg.device, "cpu", cpu_name(), None, cfg.deterministic)
    tf, gpus = import_tensorflow(cfg.device)
    if cfg.device == "gpu" and not gpus:
        raise ConfigError(
            "device: gpu, but TensorFlow sees no GPU (check the CUDA driver and "
            "CUDA_VISIBLE_DEVICES, or set device: auto or device: cpu)"
        )
    use_gpu = bool(gpus) and cfg.device in {"gpu", "auto"}
    if not use_gpu and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            # TensorFlow already initialised its devices in this process; the
            # device scope (device_scope) still pins every op to the CPU.
            log.debug("GPUs already initialised; pinning ops to /CPU:0 instead of hiding them")
    if use_gpu:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = str(details.get("device_name") or gpus[0].name)
        kind, tf_device = "gpu", "/GPU:0"
    else:
        name, kind, tf_device = cpu_name(), "cpu", "/CPU:0"
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf.config.experimental.disable_op_determinism()
    info = DeviceInfo(cfg.device, kind, name, tf_device, cfg.deterministic)
    log.info(
        "device: %s (%s; requested %s), op determinism %s",
        kind,
        name,
        cfg.device,
        "on" if cfg.deterministic else "off",
    )
    return info


def configure_stage(cfg: Config, in_process: bool, needed: bool) -> DeviceInfo:
    """``configure`` for a stage's driver, which starts TensorFlow only where it must.

    Where no forecaster the stage runs declares ``device`` (``needed`` False:
    ``uses_device``), nowhere (``configure(cfg, needed=False)``).
    Where the units run in other processes (``in_process`` False: a pool or Ray), each
    worker configures itself (``configure_worker``), and the driver starts TensorFlow
    only where the device may be a GPU (``device: gpu``, or ``auto`` on a machine with an
    NVIDIA device), which only TensorFlow can confirm; otherwise the units' device is
    the CPU, as TensorFlow would find with the GPUs hidden (``quiet_environment``).
    """
    maybe_gpu = cfg.device == "gpu" or (cfg.device == "auto" and gpu_present())
    if not needed or in_process or maybe_gpu or "tensorflow" in sys.modules:
        return configure(cfg, needed)
    quiet_environment(cfg.device)
    info = DeviceInfo(cfg.device, "cpu", cpu_name(), "/CPU:0", cfg.deterministic)
    log.info(
        "device: cpu (%s; requested %s), op determinism %s in the workers",
        info.name,
        cfg.device,
        "on" if cfg.deterministic else "off",
    )
    return info


def configure_worker(cfg: Config) -> DeviceInfo:
    """``configure`` in a worker process (``pipelines.execution.executors``,
    ``pipelines.execution.ray_executor``).

    On a GPU, memory is allocated as it is needed instead of all at once, so
    several workers can share one device. A worker whose units run on CPUs only
    (``GATECAST_UNIT_DEVICE=cpu``) is configured with ``device: cpu``.
    """
    if os.environ.get("GATECAST_UNIT_DEVICE") == "cpu" and cfg.device != "cpu":
        cfg = cfg.model_copy(update={"device": "cpu"})
    tf, gpus = import_tensorflow(cfg.device)
    if cfg.device != "cpu":
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised in this process
                log.debug("GPU memory growth not set: TensorFlow already initialised %s", gpu)
    return configure(cfg)


def unit_gpus(cfg: Config, device: DeviceInfo) -> float | None:
    """GPUs one fit of a forecaster that declares ``device`` (a train unit, a search
    trial) asks an executor for: ``executor.gpus_per_lstm_unit`` (default 1) on a GPU
    device, else None (CPUs only)."""
    if device.kind != "gpu":
        return None
    wanted = cfg.executor.gpus_per_lstm_unit
    return 1.0 if wanted is None else wanted


@contextlib.contextmanager
def device_scope(info: DeviceInfo) -> Iterator[None]:
    """Place TensorFlow ops on the chosen device inside the block (nothing to place, and
    TensorFlow not started, where ``info.tf_device`` is None)."""
    if info.tf_device is None:
        yield
        return
    import tensorflow as tf

    with tf.device(info.tf_device):
        yield


def seed_everything(seed: int, backend: bool = True) -> None:
    """Seed Python, NumPy and, with ``backend``, Keras and TensorFlow
    (``keras.utils.set_random_seed``, which seeds the first two alike). A forecaster
    that does not declare ``device`` computes without Keras: ``backend=False`` seeds it
    without starting TensorFlow."""
    if not backend:
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002 (the global state, as Keras seeds it)
        return
    import keras

    keras.utils.set_random_seed(seed)
