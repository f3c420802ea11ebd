"""A team's MLflow server on PostgreSQL: ``make server`` and ``make server-stop``
(``python -m pipelines.tracking server|server-stop``).

Everything lives in one folder (``<repo>/server`` by default, git-ignored):

- ``postgres/data``: the PostgreSQL cluster (runs, metrics, params, the model
  registry), ``postgres/socket`` its unix socket, ``postgres/postgres.log``;
- ``artifacts/``: every run's artifacts and logged models, which the server
  proxies (``--serve-artifacts``), so clients need no access to the folder;
- ``mlflow.log`` and ``server.json`` (the ``mlflow server``'s pid and address).

There is no password anywhere. PostgreSQL listens on no TCP port at all: its
only way in is the unix socket, in a folder that only the cluster's owner (and
root) can enter, with ``trust`` authentication behind it. The database is
``mlflow``, its owner ``gatecast``. PostgreSQL refuses to run as root, so under
root the cluster belongs to the ``postgres`` user and ``initdb`` and ``pg_ctl``
run as that user; otherwise they run as the current user.

The MLflow server binds ``--host`` (127.0.0.1 by default) and runs its
workers (uvicorn; each serves several clients at once) detached, with its log in
the folder. Starting a running server says so and prints the URI again; a port
in use, missing PostgreSQL programs or a missing driver are one line saying
what to do. Only the standard library and psutil: MLflow runs as a command.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from pipelines.config import REPO_ROOT
from pipelines.tracking.uri import display_uri, masked, server_environment

SERVER_DIRECTORY = REPO_ROOT / "server"
POSTGRES_VERSIONS = Path("/usr/lib/postgresql")  # Debian's <version>/bin folders
DATABASE = "mlflow"
ROLE = "gatecast"
PG_PORT = 5432  # names the socket file only: PostgreSQL opens no TCP port
WORKERS = 2
START_TIMEOUT = 120.0  # seconds for the MLflow server to answer /health (first start migrates)
_SOCKET_PATH_LIMIT = 107  # sun_path of a unix socket, less its final NUL
_INSTALL_POSTGRES = "apt-get install -y postgresql"


class ServerError(RuntimeError):
    """The server could not be started or stopped; the message is one line saying why."""


@dataclass(frozen=True)
class ServerFolder:
    """The paths of one team server's folder."""

    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "postgres"

    @property
    def data(self) -> Path:
        return self.cluster / "data"

    @property
    def socket(self) -> Path:
        return self.cluster / "socket"

    @property
    def postgres_log(self) -> Path:
        return self.cluster / "postgres.log"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    def backend_uri(self) -> str:
        """The SQLAlchemy URI of the database, through the socket (no host, no password)."""
        where = f"host={quote(str(self.socket))}&port={PG_PORT}"
        return f"postgresql+psycopg://{ROLE}@/{DATABASE}?{where}"


def client_url(host: str, port: int) -> str:
    """The address clients of this machine use for a server bound to ``host``."""
    if host in {"", "0.0.0.0", "::"}:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs: Debian's newest, else the one on PATH."""
    found = sorted(
        POSTGRES_VERSIONS.glob("*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
    )
    on_path = shutil.which("pg_ctl")
    pg_ctl = found[-1] if found else Path(on_path) if on_path else None
    if pg_ctl is None or not (pg_ctl.parent / "initdb").exists():
        raise ServerError(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
            f"{_INSTALL_POSTGRES} (or put their folder on PATH)"
        )
    return pg_ctl.parent


def check_driver() -> None:
    """MLflow reaches PostgreSQL through psycopg, the ``server`` extra."""
    if importlib.util.find_spec("psycopg") is None:
        raise ServerError(
            "MLflow's PostgreSQL driver (psycopg) is missing: "
            f"{sys.executable} -m pip install -e '.[server]' (make server installs it)"
        )


def _as_owner(command: list[str]) -> list[str]:
    """``command`` as the cluster's owner: ``postgres`` under root, else the current user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ServerError(f"could not {what}: {said[-1].strip() if said else done.returncode}")
    return done


def _owner_ids() -> tuple[int, int] | None:
    """(uid, gid) the cluster must belong to, when it is not the current user's."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            f"there is no postgres user, which PostgreSQL runs as under root: {_INSTALL_POSTGRES}"
        ) from None
    return entry.pw_uid, entry.pw_gid


def prepare_cluster(folder: ServerFolder, bindir: Path) -> None:
    """Make the folder and, the first time, the cluster; write its settings."""
    if len(str(folder.socket / f".s.PGSQL.{PG_PORT}")) > _SOCKET_PATH_LIMIT:
        raise ServerError(
            f"the server folder's path {folder.root} is too long for PostgreSQL's socket "
            f"(at most {_SOCKET_PATH_LIMIT - 30} characters): choose a shorter SERVER_DIR"
        )
    owner = _owner_ids()
    # under root, the postgres user must pass through the folder (not list it)
    folder.root.mkdir(parents=True, exist_ok=True, mode=0o711 if owner else 0o700)
    for path in (folder.cluster, folder.socket):
        path.mkdir(exist_ok=True, mode=0o700)
        if owner:
            os.chown(path, *owner)
    if owner and subprocess.run(_as_owner(["test", "-w", str(folder.cluster)])).returncode:
        raise ServerError(
            f"the postgres user cannot reach {folder.cluster} (PostgreSQL refuses to run as "
            "root): choose a SERVER_DIR under folders every user may enter (chmod o+x)"
        )
    if not (folder.data / "PG_VERSION").exists():
        initdb = [str(bindir / "initdb"), "-D", str(folder.data), "-U", ROLE, "-E", "UTF8"]
        initdb += ["--auth-local=trust", "--auth-host=reject", "--no-instructions"]
        _run(_as_owner(initdb), "create the PostgreSQL cluster")
        with (folder.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# make server: no TCP, the socket in the server folder\n")
            conf.write("include_if_exists = 'gatecast.conf'\n")
    # written at every start, so a moved folder still finds its socket
    settings = folder.data / "gatecast.conf"
    socket_dir = str(folder.socket).replace("'", "''")
    settings.write_text(
        f"listen_addresses = ''\nunix_socket_directories = '{socket_dir}'\n"
        f"unix_socket_permissions = 0700\nport = {PG_PORT}\n"
    )
    if owner:
        os.chown(settings, *owner)


def postgres_running(folder: ServerFolder, bindir: Path) -> bool:
    if not (folder.data / "PG_VERSION").exists():
        return False
    status = [str(bindir / "pg_ctl"), "-D", str(folder.data), "status"]
    return subprocess.run(_as_owner(status), capture_output=True).returncode == 0


def start_postgres(folder: ServerFolder, bindir: Path) -> None:
    """Start the cluster unless it runs, and create the database the first time."""
    if not postgres_running(folder, bindir):
        start = [str(bindir / "pg_ctl"), "-D", str(folder.data), "-l", str(folder.postgres_log)]
        try:
            _run(_as_owner([*start, "-w", "-t", "60", "start"]), "start PostgreSQL")
        except ServerError:
            lines = folder.postgres_log.read_text(errors="replace").splitlines()
            said = [line for line in lines if "FATAL" in line or "ERROR" in line] or ["?"]
            raise ServerError(
                f"could not start PostgreSQL: {said[-1].strip()} ({folder.postgres_log})"
            ) from None
    connect = ["-h", str(folder.socket), "-p", str(PG_PORT), "-U", ROLE]
    query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    psql = [str(bindir / "psql"), *connect, "-d", "postgres", "-tAc", query]
    found = _run(psql, "ask PostgreSQL for its databases")
    if found.stdout.strip() != "1":
        _run([str(bindir / "createdb"), *connect, DATABASE], "create the database")


def stop_postgres(folder: ServerFolder, bindir: Path) -> bool:
    """Stop the cluster (fast: open connections are closed); False when it was not running."""
    if not postgres_running(folder, bindir):
        return False
    stop = [str(bindir / "pg_ctl"), "-D", str(folder.data), "-m", "fast", "-w", "stop"]
    _run(_as_owner(stop), "stop PostgreSQL")
    return True


# The MLflow server ----------------------------------------------------------------------------


def running_server(folder: ServerFolder) -> dict | None:
    """``server.json`` (pid, host, port, url) when its ``mlflow server`` is alive, else None."""
    try:
        state = json.loads(folder.state.read_text())
        process = psutil.Process(int(state["pid"]))
        alive = process.status() != psutil.STATUS_ZOMBIE
        # a pid used again by another program is not the server
        same = abs(process.create_time() - state["started"]) < 1
        ours = same and "mlflow" in " ".join(process.cmdline())
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return state if alive and ours else None


def check_port(host: str, port: int) -> None:
    """One line saying how to choose another port when ``host:port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise ServerError(f"cannot listen on {host}:{port}: {err.strerror}") from None
            raise ServerError(
                f"port {port} on {host} is in use by another program: stop it, or choose "
                f"another port (make server PORT={port + 1})"
            ) from None


def server_command(folder: ServerFolder, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow server`` command line: the database, proxied artifacts, ``workers``."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    command += [folder.backend_uri(), "--serve-artifacts"]
    command += ["--artifacts-destination", folder.artifacts.as_uri()]
    return command + ["--host", host, "--port", str(port), "--workers", str(workers)]


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _log_reason(folder: ServerFolder, uri: str) -> str:
    """The last error-looking line of the MLflow server's log, password masked."""
    lines = folder.mlflow_log.read_text(errors="replace").splitlines()
    if any("address already in use" in line.lower() for line in lines):
        return "its port is in use by another program (choose another: make server PORT=...)"
    errors = [line for line in lines if "Error" in line or "error" in line] or lines or ["?"]
    return masked(errors[-1].strip(), uri)


def start_mlflow(folder: ServerFolder, host: str, port: int, workers: int) -> dict:
    """Start the ``mlflow server`` detached and wait until it answers; returns its state."""
    folder.artifacts.mkdir(exist_ok=True, mode=0o700)
    command = server_command(folder, host, port, workers)
    url = client_url(host, port)
    descriptor = os.open(folder.mlflow_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(descriptor, "a") as log:
        log.write(f"\n--- make server: {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=folder.root,
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives make; stopped as a process group
        )
    state = {"pid": process.pid, "host": host, "port": port, "url": url}
    state["started"] = psutil.Process(process.pid).create_time()
    folder.state.write_text(json.dumps(state))
    deadline = time.monotonic() + START_TIMEOUT
    while not _health(url):
        if process.poll() is not None:
            folder.state.unlink(missing_ok=True)
            reason = _log_reason(folder, folder.backend_uri())
            raise ServerError(f"the MLflow server stopped at start: {reason} ({folder.mlflow_log})")
        if time.monotonic() > deadline:
            stop_mlflow(folder)
            waited = f"{START_TIMEOUT:.0f} s"
            raise ServerError(f"the MLflow server did not answer in {waited}: {folder.mlflow_log}")
        time.sleep(0.25)
    return state


def stop_mlflow(folder: ServerFolder) -> bool:
    """Stop the ``mlflow server`` and its workers; False when it was not running."""
    state = running_server(folder)
    folder.state.unlink(missing_ok=True)
    if state is None:
        return False
    pid = int(state["pid"])
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if not _group_alive(pid):
            break
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(psutil.Error):  # reap the leader if it is ours (tests)
        psutil.Process(pgid).wait(timeout=0)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Commands -----------------------------------------------------------------------------------


def _announce(folder: ServerFolder, state: dict, how: str) -> None:
    uri = display_uri(state["url"])
    print(f"MLflow server {how} on {uri} (pid {state['pid']}), PostgreSQL behind it")
    print(f"  folder: {folder.root} (database: postgres/, artifacts: artifacts/, log: mlflow.log)")
    if state["host"] in {"", "0.0.0.0", "::"}:
        print(f"  colleagues: http://{socket.gethostname()}:{state['port']} (docs/team-server.md)")
    where = "" if folder.root == SERVER_DIRECTORY else f" SERVER_DIR={folder.root}"
    print(f"  stop it: make server-stop{where}")
    print("export it in each shell that runs gatecast:")
    print(f"export MLFLOW_TRACKING_URI={uri}")


def start(folder: ServerFolder, host: str, port: int, workers: int = WORKERS) -> dict:
    """Start PostgreSQL and the MLflow server unless they run; print the URI to export."""
    state = running_server(folder)
    if state is not None:
        start_postgres(folder, postgres_bin())  # in case it alone was stopped
        _announce(folder, state, "already running")
        if (state["host"], state["port"]) != (host, port):
            print(f"(asked for {host}:{port}: make server-stop first to move it)")
        return state
    check_port(host, port)
    check_driver()
    bindir = postgres_bin()
    prepare_cluster(folder, bindir)
    start_postgres(folder, bindir)
    state = start_mlflow(folder, host, port, workers)
    _announce(folder, state, "started")
    return state


def stop(folder: ServerFolder) -> list[str]:
    """Stop the MLflow server, then PostgreSQL; what was stopped, as lines to print."""
    said = []
    if stop_mlflow(folder):
        said.append("stopped the MLflow server")
    if (folder.data / "PG_VERSION").exists() and stop_postgres(folder, postgres_bin()):
        said.append("stopped PostgreSQL")
    return said or [f"no team server was running from {folder.root}"]


def _server(args: argparse.Namespace) -> int:
    try:
        start(ServerFolder(Path(args.dir).resolve()), args.host, args.port, args.workers)
    except ServerError as err:
        print(f"make server: {err}", file=sys.stderr)
        return 1
    return 0


def _server_stop(args: argparse.Namespace) -> int:
    try:
        for line in stop(ServerFolder(Path(args.dir).resolve())):
            print(line)
    except ServerError as err:
        print(f"make server-stop: {err}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``server`` and ``server-stop`` subcommands of ``python -m pipelines.tracking``."""
    folder = {"default": str(SERVER_DIRECTORY), "help": "its folder (default: %(default)s)"}
    server = sub.add_parser("server", help="start a team MLflow server on PostgreSQL")
    server.add_argument("--dir", **folder)
    server.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    server.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    server.add_argument(
        "--workers", type=int, default=WORKERS, help="server processes (default: %(default)s)"
    )
    server.set_defaults(handler=_server)
    stopper = sub.add_parser("server-stop", help="stop the team server and its PostgreSQL")
    stopper.add_argument("--dir", **folder)
    stopper.set_defaults(handler=_server_stop)
