"""For the tests that start a server of their own (``mlflow server``, ``make ui``): a free
loopback port, and waiting until the server answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(
    server: subprocess.Popen, url: str, seconds: float = 120, hint: str = ""
) -> None:
    """Wait until the MLflow server at ``url`` answers ``/health`` (answering, not only
    listening); fail the test if its process exits first or ``seconds`` pass (``hint``,
    such as where its log is, ends the message)."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"the server for {url} exited{hint}"
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds:.0f} s{hint}"
            time.sleep(0.25)
