"""Ray's overhead against a cluster that is already up: ``python -m benchmarks.ray_cluster``.

Starts ``tools/ray_cluster.sh`` in namespaces of its own (``cluster_command``): a head
with no CPUs, which the driver joins, and one worker node with ``NODE_CPUS`` CPUs that
cannot see the project's files (the units reach it through ``runtime_env``
``py_modules``). As that cluster's driver, it times the train stage on the synthetic
universe of 32 (``benchmarks.scale``: ``configs/smoke.yaml`` with ``UNIVERSE_SETTINGS``,
the universe from ``make_universe``) with ``executor: {kind: ray, address: <the head>}``,
``--repeats`` times (default 5), each in a fresh process, with ``benchmarks.scale``'s
child and ``summarise``. The cluster stays up across the repeats, as a user's would.

The figure is ``benchmarks.scale``'s overhead: the start-up the driver waits for
(joining the cluster and sending the code, then from handing over the first units to
the first one starting: the node starts a job's workers afresh, and their TensorFlow
import is waited for only where it outlasts the driver's own set-up) + tear-down +
the idle gaps between consecutive units on each worker, divided by the workers, as a
share of the stage's wall time; min/median/max over the repeats (goal < 5%). Beside it,
how much of the first unit's wait its worker spent in the driver's setup (importing
TensorFlow and Keras), and the overhead less that part.

``run`` returns the figures as a plain dict (``{"skipped": why}`` where namespaces or
Ray are missing); ``main`` prints them and writes ``benchmarks/results/ray_cluster.json``.
It needs root or user namespaces, ``unshare`` and ``ip``, and the ray extra.
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
from typing import Any

from benchmarks import scale

REPO_ROOT = scale.REPO_ROOT
RESULTS = REPO_ROOT / "benchmarks" / "results" / "ray_cluster.json"
CLUSTER = REPO_ROOT / "tools" / "ray_cluster.sh"
NAMESPACES = ("unshare", "--net", "--mount", "--fork", "--pid", "--mount-proc")
NODE_CPUS = scale.WORKERS  # as many as the local Ray of ``benchmarks.scale`` gets
SIZE, REPEATS = 32, 5
CHILD = "import sys, benchmarks.ray_cluster as b; sys.exit(b.child(sys.argv[1:]))"


def cluster_command() -> list[str] | str:
    """The ``unshare`` command that runs ``tools/ray_cluster.sh`` here, or why none can."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} (util-linux, iproute2)"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "needs the ray extra: pip install 'gatecast[ray]'"
    command = list(NAMESPACES)
    if os.geteuid() != 0:  # root in a user namespace of its own
        command[1:1] = ["--user", "--map-root-user"]
    tried = subprocess.run([*command, "true"], capture_output=True, text=True)
    if tried.returncode != 0:
        return f"cannot make namespaces (needs root or user namespaces): {tried.stderr.strip()}"
    return command


def child(argv: list[str]) -> int:
    """``benchmarks.scale.child`` on a cluster whose nodes cannot import the benchmarks:
    its timed unit function travels by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(scale)
    return scale.child(argv)


def measure_on_cluster(config: str, settings: list[str], store: Path) -> dict:
    """``benchmarks.scale.measure``, with ``child`` as the measured process."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-ray-cluster-") as tmp:
        argv = ["--config", config, "--set", f"output_directory={tmp}/build"]
        for item in settings:
            argv += ["--set", item]
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *argv],
            cwd=REPO_ROOT,
            env=scale._env(store),
            capture_output=True,
            text=True,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(scale.MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stdout[-1500:] + "\n" + done.stderr[-3000:]).strip()
        raise RuntimeError(f"train stage failed (exit {done.returncode}): {tail}")
    return scale.summarise(json.loads(lines[-1].removeprefix(scale.MARK)))


def inside(out: Path, repeats: int, size: int) -> None:
    """In the cluster, as its driver: the universe, one MLflow store, ``repeats`` measured
    stages; their summaries to ``out`` (JSON)."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-ray-cluster-") as tmp:
        store, universe = Path(tmp) / "store", Path(tmp) / "universe"
        store.mkdir()
        code = "import mlflow; mlflow.MlflowClient().search_experiments()"  # made before
        subprocess.run([sys.executable, "-c", code], env=scale._env(store), check=True)
        names = scale.make_universe(universe, size)
        settings = [
            *scale.UNIVERSE_SETTINGS,
            f"data.directory={universe}",
            f"data.instruments=[{','.join(names)}]",
            "executor.kind=ray",
            f"executor.address={os.environ['RAY_ADDRESS']}",
        ]
        runs = []
        for repeat in range(repeats):
            print(f"  universe/{size}/ray-cluster repeat {repeat + 1} ...", end=" ", flush=True)
            runs.append(measure_on_cluster("configs/smoke.yaml", settings, store))
            last = runs[-1]
            print(
                f"{last['stage_seconds']:.1f} s, overhead {100 * last['overhead_share']:.1f}%",
                flush=True,
            )
    out.write_text(json.dumps(runs))


def run(repeats: int = REPEATS, size: int = SIZE) -> dict[str, Any]:
    """Start the cluster, measure ``repeats`` stages of ``size`` instruments; the figures."""
    command = cluster_command()
    if isinstance(command, str):
        return {"skipped": f"a local Ray cluster in namespaces of its own {command}"}
    started, load = time.monotonic(), [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-ray-cluster-") as tmp:
        out = Path(tmp) / "runs.json"
        code = f"import pathlib, benchmarks.ray_cluster as b; b.inside(pathlib.Path({str(out)!r}), "
        code += f"{repeats}, {size})"
        cluster = [str(CLUSTER), "--nodes", "1", "--cpus", str(NODE_CPUS)]
        done = subprocess.run([*command, *cluster, "--", sys.executable, "-c", code], cwd=REPO_ROOT)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the cluster or its driver failed (exit {done.returncode})")
        runs = json.loads(out.read_text())
    load.append(os.getloadavg()[0])
    return figures(runs, size, time.monotonic() - started, load)


def figures(runs: list[dict], size: int, seconds: float, load: list[float]) -> dict[str, Any]:
    """The overhead's spread and its parts, from the repeats' ``summarise`` results."""
    share = scale.spread([r["overhead_share"] for r in runs])
    return {
        "executor": "ray",
        "cluster": (
            "tools/ray_cluster.sh: a head with no CPUs (the driver's) and 1 worker node with "
            f"{NODE_CPUS} CPUs that cannot see the project's files, on 127.0.0.1"
        ),
        "instruments": size,
        "units": runs[0]["units"],
        "workers": runs[0]["workers"],
        "repeats": len(runs),
        "overhead_share": share,
        "goal_overhead_share": scale.GOAL_OVERHEAD_SHARE,
        "goal_met": share["median"] < scale.GOAL_OVERHEAD_SHARE,
        "overhead_less_setup_share": scale.spread([r["overhead_less_setup_share"] for r in runs]),
        "setup_in_wait_seconds": scale.spread([r["setup_in_wait_seconds"] for r in runs]),
        "stage_seconds": scale.spread([r["stage_seconds"] for r in runs]),
        "startup_seconds": scale.spread([r["startup_seconds"] for r in runs]),
        "enter_seconds": scale.spread([r["enter_seconds"] for r in runs]),
        "first_unit_wait_seconds": scale.spread([r["first_unit_wait_seconds"] for r in runs]),
        "exit_seconds": scale.spread([r["exit_seconds"] for r in runs]),
        "median_gap_seconds": scale.spread([r["median_gap_seconds"] for r in runs]),
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": load[0], "after": load[-1]},
        "commit": _commit(),
        "seconds": seconds,
        "runs": [{k: v for k, v in r.items() if k != "worker_rss_mb"} for r in runs],
    }


def _commit() -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or None


def print_result(result: dict[str, Any]) -> None:
    """The figures of ``run``, as ``benchmarks scale`` and ``main`` print them."""
    if "skipped" in result:
        print(f"  ray cluster: skipped, {result['skipped']}")
        return
    share, stage = result["overhead_share"], result["stage_seconds"]
    verdict = "met" if result["goal_met"] else "NOT met"

    def median_ms(key: str) -> str:
        return f"{1000 * result[key]['median']:.0f} ms"

    print(f"\n  cluster: {result['cluster']}")
    print(
        f"  {result['units']} units on {result['workers']} CPUs; stage {stage['median']:.1f} s "
        f"(min {stage['min']:.1f}, max {stage['max']:.1f})"
    )
    print(
        f"  ray overhead on a running cluster, {result['instruments']} instruments: median "
        f"{100 * share['median']:.1f}% of the stage (min {100 * share['min']:.1f}%, max "
        f"{100 * share['max']:.1f}%; {share['n']} repeats) (goal < "
        f"{100 * result['goal_overhead_share']:.0f}%: {verdict})"
    )
    print(
        f"    medians: joining the cluster {median_ms('enter_seconds')}, waiting for the first "
        f"unit {median_ms('first_unit_wait_seconds')} (of it, its worker's setup, importing "
        f"TensorFlow and Keras: {median_ms('setup_in_wait_seconds')}), leaving "
        f"{median_ms('exit_seconds')}, {median_ms('median_gap_seconds')} between units on a worker"
    )
    less = result["overhead_less_setup_share"]
    print(
        f"    less that setup, which any process fitting the LSTM pays: median "
        f"{100 * less['median']:.1f}% (min {100 * less['min']:.1f}%, max {100 * less['max']:.1f}%)"
    )
    load = result["load_average_1min"]
    print(
        f"  machine: {result['cpus']} CPU(s), load average {load['before']:.1f} before and "
        f"{load['after']:.1f} after; commit {result['commit']}; {result['seconds']:.0f} s in all"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and save the figures to ``RESULTS``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_cluster", description=__doc__)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="stages measured")
    parser.add_argument("--size", type=int, default=SIZE, help="synthetic instruments")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 1:
        parser.error("--repeats and --size must be at least 1")
    result = run(args.repeats, args.size)
    print_result(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
