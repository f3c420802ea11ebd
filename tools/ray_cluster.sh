#!/usr/bin/env bash
# A Ray cluster on this machine whose worker nodes cannot see gatecast's files, and a
# command run as its driver: for the tests, the benchmark and anyone trying
# `executor.address`.
#
#   unshare --net --mount --fork --pid --mount-proc tools/ray_cluster.sh [--nodes N]
#       [--cpus C] [--port P] -- COMMAND [ARG...]
#
# - The head node runs here with no CPUs, so every unit runs on a worker node.
# - Each of the N worker nodes (default 1, C CPUs each, default 2) runs in a mount
#   namespace of its own, from the project's virtual environment seen at another path,
#   where empty files and folders hide the project's directory and all that installed
#   gatecast in that environment (its metadata and the editable install's path hook):
#   the node has gatecast's dependencies but not gatecast, so the units' code reaches
#   it only through `runtime_env` `py_modules`.
# - COMMAND runs as the driver, with RAY_ADDRESS set to the head (so `--set
#   executor.kind=ray` joins it); its exit status is the script's. Then every Ray
#   process is stopped.
#
# Why unshare: `ray start --head` on Linux listens on every interface and advertises
# the machine's address even with --node-ip-address=127.0.0.1, and the setting that
# keeps it on 127.0.0.1 refuses a second node. In a network namespace of its own,
# loopback is the only interface, so nothing of this cluster is reachable from outside
# (nor can it reach out: Ray's probe of 8.8.8.8 to pick its address fails harmlessly).
# The PID namespace ends every Ray process with the script, and lets `ray stop --force`
# see only this cluster's processes. The mount namespace gives this cluster its own
# /tmp/ray, apart from any other Ray on the machine. It needs root, or user namespaces
# (`unshare --user --map-root-user` in front).
#
# Environment: GATECAST_CLUSTER_VENV, the virtual environment the nodes run Ray from
# (default: the project's .venv; it needs gatecast's dependencies and Ray, at the
# driver's versions). Token authentication stays on (RAY_AUTH_MODE=token for every
# node and the driver; the token in ~/.ray/auth_token, made when missing); usage
# statistics are off.
set -euo pipefail

nodes=1
cpus=2
port=6391
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "ray_cluster.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
if [[ $# -eq 0 ]]; then
    echo "ray_cluster.sh: give the driver's command after --" >&2
    exit 2
fi

project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(cd "${GATECAST_CLUSTER_VENV:-$project/.venv}" && pwd)"

# Refuse to run where the cluster could be reached from outside: only loopback may exist.
others="$(ip -o link show | awk -F': ' '$2 != "lo" {printf "%s ", $2}')"
if [[ -n "$others" ]]; then
    echo "ray_cluster.sh: run me in a network namespace of my own (network interfaces" \
        "besides loopback: ${others% }); see the comment at the top" >&2
    exit 2
fi
ip link set lo up  # a new network namespace starts with it down

export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
# A local Ray's setting (pipelines.execution.ray_executor): it would refuse the worker nodes
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS
address="127.0.0.1:$port"

# This cluster's session files, apart from any other Ray's /tmp/ray (private mounts)
mkdir -p /tmp/ray
mount -t tmpfs -o mode=1777 tmpfs /tmp/ray
scratch="$(mktemp -d /tmp/ray/gatecast-nodes.XXXXXX)"

stop() {
    "$venv/bin/ray" stop --force >/dev/null 2>&1 || true
}
trap stop EXIT

"$venv/bin/ray" get-auth-token --generate >/dev/null  # `ray start` makes none
"$venv/bin/ray" start --head --node-ip-address=127.0.0.1 --port="$port" \
    --num-cpus=0 --include-dashboard=false --disable-usage-stats >"$scratch/head.log" 2>&1 \
    || { cat "$scratch/head.log" >&2; exit 1; }

for n in $(seq 1 "$nodes"); do
    root="$scratch/node$n"
    mkdir -p "$root/venv" "$root/empty"
    : >"$root/nothing"
    # In the node's own mount namespace: the environment first (it may sit inside the
    # project), then the project hidden under an empty folder, then what installed
    # gatecast in the environment emptied (its metadata, with the entry points, and the
    # editable install's path hook), so the node has no gatecast but what the driver sends.
    unshare --mount --propagation private env -u PYTHONPATH -C / bash -c '
        set -eu
        mount --bind "$1" "$2/venv"
        mount --bind "$2/empty" "$3"
        for installed in "$2"/venv/lib/python3*/site-packages/*gatecast*; do
            if [ ! -e "$installed" ]; then
                continue  # an environment without gatecast: nothing to hide
            elif [ -d "$installed" ]; then
                mount --bind "$2/empty" "$installed"
            else
                mount --bind "$2/nothing" "$installed"
            fi
        done
        exec "$2/venv/bin/python" -m ray.scripts.scripts start --address="$4" \
            --node-ip-address=127.0.0.1 --num-cpus="$5" --disable-usage-stats
    ' node "$venv" "$root" "$project" "$address" "$cpus" >"$scratch/node$n.log" 2>&1 \
        || { cat "$scratch/node$n.log" >&2; exit 1; }
done

# Wait until every node has joined (ray start returns before its raylet registers).
"$venv/bin/python" - "$address" "$((nodes + 1))" <<'EOF'
import sys, time
import ray

ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(f"ray_cluster.sh: {sys.argv[2]} nodes did not join in 120 s")
    time.sleep(0.2)
ray.shutdown()
EOF

export RAY_ADDRESS="$address"
set +e
"$@"
status=$?
set -e
exit "$status"
