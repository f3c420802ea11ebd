"""Run every benchmark module (or those named): ``python -m benchmarks [name ...]``.

Each module in this folder exposes ``main(argv) -> int`` and prints its own
table of measurements and ratios. Results are also written as JSON under
``benchmarks/results/`` so a run can be compared with the next.

Modules in :data:`ONLY_WHEN_NAMED` run only when named (``gpu`` and
``gpu_backends``: ``make bench-gpu`` and ``make bench-gpu-backends``, for a machine
with an NVIDIA GPU; ``ray_cluster``, which ``scale`` runs); a bare
``python -m benchmarks`` (``make bench``) runs every other one.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

#: Benchmarks that a bare ``python -m benchmarks`` skips (each has its own make target).
ONLY_WHEN_NAMED = frozenset({"gpu", "gpu_backends", "ray_cluster"})


def available() -> list[str]:
    """Every benchmark module, by name."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def discover() -> list[str]:
    """The benchmarks a bare ``python -m benchmarks`` runs."""
    return [name for name in available() if name not in ONLY_WHEN_NAMED]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = argv or discover()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    status = 0
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        t0 = time.perf_counter()
        status |= importlib.import_module(f"benchmarks.{name}").main([])
        print(f"--- {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
