"""Fixtures: a real `privagg serve` per test (privagg.testing.LocalServer), clients that
remember rounds in a temporary directory, and helpers to run clients in threads."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, List

import pytest

from privagg.testing import LocalServer, find_binary


@pytest.fixture(autouse=True)
def client_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's clients keep their memory of rounds in its own directory."""
    state = tmp_path / "client-state"
    monkeypatch.setenv("PRIVAGG_CLIENT_STATE", str(state))
    monkeypatch.delenv("PRIVAGG_TOKEN", raising=False)
    return state


@pytest.fixture
def binary() -> Path:
    return find_binary()


@pytest.fixture
def local_server():
    """A factory of started LocalServers, all stopped at the end of the test."""
    servers: List[LocalServer] = []

    def start(**kwargs: Any) -> LocalServer:
        server = LocalServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        # Shown by pytest only when the test failed.
        print(f"--- privagg serve log ({server.address}) ---\n{server.log()}")
        server.close()


class Worker(threading.Thread):
    """Runs `fn` in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def outcome(self, timeout: float = 120.0) -> Any:
        """The result (re-raising the thread's exception); fails the test if the thread
        is still running after `timeout` (a hang, not a timing assertion)."""
        self.join(timeout)
        assert not self.is_alive(), "client thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def in_threads(*fns: Callable[[], Any]) -> List[Worker]:
    workers = [Worker(fn) for fn in fns]
    for w in workers:
        w.start()
    return workers


def make_ca_cert(binary: Path, directory: Path) -> Path:
    """A valid DER certificate that is not the server's: an enrollment authority root."""
    subprocess.run([str(binary), "ca", "init", "--dir", str(directory)], check=True, capture_output=True)
    return directory / "ca.der"
