"""Run every benchmark module (or those named): ``python -m benchmarks [name ...]``.

Each module in this folder exposes ``main(argv) -> int`` and prints its own
table of measurements and ratios. Results are also written as JSON under
``benchmarks/results/`` so a run can be compared with the next.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = argv or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(discover())}")
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
