"""A real ``privagg serve`` process for tests and notebooks.

:class:`LocalServer` starts the Rust server binary on a free loopback port with a
temporary state directory, gives each client its own admission token file, and stops
the process (and removes what it created) on exit::

    from privagg.testing import LocalServer

    with LocalServer(dim=4, clients=2, rounds=1, dp=False) as server:
        ...  # privagg.Client(server.address, server.cert, **server.client_options(0))
        server.wait()
        print(server.model())  # the global model after the last round

The binary is ``$PRIVAGG_BIN`` if set, else ``privagg`` on ``PATH``, else
``target/release/privagg`` in the current directory or one of its parents (a checkout
after ``cargo build --release -p privagg-cli``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["LocalServer", "find_binary", "ServerFailed"]

_LISTENING = re.compile(r"listening\s+addr=(\S+)")


class ServerFailed(RuntimeError):
    """The server process could not be started, or exited with an error."""


def find_binary(binary: Union[str, os.PathLike, None] = None) -> Path:
    """The ``privagg`` binary: ``binary`` if given, else ``$PRIVAGG_BIN``, else
    ``privagg`` on ``PATH``, else ``target/release/privagg`` in the current directory or
    a parent. Raises :class:`FileNotFoundError` naming the places looked at."""
    if binary is not None:
        path = Path(binary)
        if not path.is_file():
            raise FileNotFoundError(f"privagg binary {path} does not exist")
        return path
    env = os.environ.get("PRIVAGG_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"PRIVAGG_BIN={env} does not exist")
        return path
    on_path = shutil.which("privagg")
    if on_path:
        return Path(on_path)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        candidate = directory / "target" / "release" / "privagg"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "no privagg binary: set PRIVAGG_BIN, put privagg on PATH, or run "
        "`cargo build --release -p privagg-cli` in the checkout"
    )


class LocalServer:
    """A ``privagg serve`` process on ``127.0.0.1`` with a temporary state directory.

    Admission is by token (one per client, in :attr:`token_files`) under the
    curious-server threat model, which a client must accept too:
    :meth:`client_options` gives the keyword arguments for :class:`privagg.Client`.

    Args:
        dim: model dimension.
        clients: clients per round (and tokens issued).
        min_clients: fewest inputs a released sum may hold (default: the server's, 80 %
            of ``clients`` rounded up).
        rounds: rounds in the session; the process exits after the last one.
        dp: differential privacy on (the server's defaults: noise multiplier 1, clip 1)
            or off (exact weighted FedAvg; clients need ``allow_no_dp=True``).
        noise_multiplier, clip: DP parameters (``dp=True`` only).
        model_init: initial model (1-D array; default zeros).
        phase_timeout, lobby_timeout: seconds (the server's defaults otherwise).
        extra_args: further ``privagg serve`` flags.
        binary: the ``privagg`` binary (default: :func:`find_binary`).
        startup_timeout: seconds to wait for the server to listen.
        log_level: ``RUST_LOG`` for the server (its log is :meth:`log`).
    """

    def __init__(
        self,
        *,
        dim: int,
        clients: int = 2,
        min_clients: Optional[int] = None,
        rounds: int = 1,
        dp: bool = True,
        noise_multiplier: Optional[float] = None,
        clip: Optional[float] = None,
        model_init: Optional[np.ndarray] = None,
        phase_timeout: Optional[float] = None,
        lobby_timeout: Optional[float] = None,
        extra_args: Sequence[str] = (),
        binary: Union[str, os.PathLike, None] = None,
        startup_timeout: float = 60.0,
        log_level: str = "info",
    ) -> None:
        self.binary = find_binary(binary)
        self._tmp = tempfile.TemporaryDirectory(prefix="privagg-local-")
        root = Path(self._tmp.name)
        self.state_dir: Path = root / "state"
        """The server's state directory (``cert.der``, ``model-R.npy``, ``round-R.json``…)."""
        tokens = [secrets.token_hex(16) for _ in range(clients)]
        (root / "tokens.txt").write_text("".join(t + "\n" for t in tokens))
        self.token_files: List[Path] = []
        """One admission token file per client."""
        for i, token in enumerate(tokens):
            path = root / f"client-{i}.token"
            path.write_text(token + "\n")
            path.chmod(0o600)
            self.token_files.append(path)
        args = [
            str(self.binary), "serve",
            "--listen", "127.0.0.1:0",
            "--state", str(self.state_dir),
            "--dim", str(dim),
            "--clients", str(clients),
            "--rounds", str(rounds),
            "--tokens", str(root / "tokens.txt"),
            "--threat", "curious",
        ]  # fmt: skip
        optional: Dict[str, Any] = {
            "--min-clients": min_clients,
            "--noise-multiplier": noise_multiplier,
            "--clip": clip,
            "--phase-timeout": phase_timeout,
            "--lobby-timeout": lobby_timeout,
        }
        for flag, value in optional.items():
            if value is not None:
                args += [flag, str(value)]
        if not dp:
            args.append("--no-dp")
        if model_init is not None:
            init = root / "model-init.npy"
            np.save(init, np.asarray(model_init, dtype=np.float32))
            args += ["--model-init", str(init)]
        args += list(extra_args)
        self.args = args
        self._startup_timeout = startup_timeout
        self._log_path = root / "server.log"
        self._log_level = log_level
        self._process: Optional[subprocess.Popen] = None
        self.address: str = ""
        """``HOST:PORT`` the server listens on (after :meth:`start`)."""

    @property
    def cert(self) -> Path:
        """The server's certificate (pin it: ``privagg.Client(address, cert)``)."""
        return self.state_dir / "cert.der"

    def client_options(self, i: int) -> Dict[str, Any]:
        """Keyword arguments for :class:`privagg.Client` as client ``i``: its token
        file and the curious-server threat model this server runs."""
        return {"token_file": str(self.token_files[i]), "threat": "curious"}

    def start(self) -> "LocalServer":
        """Starts the process and waits until it listens; raises :class:`ServerFailed`
        (with the log) if it exits or does not listen within ``startup_timeout``."""
        if self._process is not None:
            return self
        env = dict(os.environ, RUST_LOG=self._log_level, NO_COLOR="1")
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            match = _LISTENING.search(self.log())
            if match and self.cert.is_file():
                self.address = match.group(1)
                return self
            if self._process.poll() is not None:
                raise ServerFailed(f"privagg serve exited with {self._process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"privagg serve did not listen within {self._startup_timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        """The server's log so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: Optional[float] = 120.0) -> int:
        """Waits for the session to end (the process exits after its last round) and
        returns the exit code; raises :class:`ServerFailed` with the log if it is not 0,
        :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        if self._process is None:
            raise ServerFailed("the server was not started")
        code = self._process.wait(timeout)
        if code != 0:
            raise ServerFailed(f"privagg serve exited with {code}:\n{self.log()}")
        return code

    def completed_rounds(self) -> List[int]:
        """The rounds committed to the state directory, in order."""
        rounds = []
        for path in self.state_dir.glob("round-*.json"):
            suffix = path.stem[len("round-"):]
            if suffix.isdigit():
                rounds.append(int(suffix))
        return sorted(rounds)

    def model(self, round: Optional[int] = None) -> np.ndarray:
        """The global model after ``round`` (default: the last committed round), as
        float32, read from the state directory."""
        if round is None:
            done = self.completed_rounds()
            if not done:
                raise FileNotFoundError(f"no round committed in {self.state_dir}")
            round = done[-1]
        return np.load(self.state_dir / f"model-{round}.npy")

    def stop(self) -> None:
        """Stops the process (SIGINT, then SIGKILL after 10 s) if it still runs."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(2)  # SIGINT: the server stops cleanly
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stops the process and removes the temporary directory."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalServer(address={self.address!r}, state_dir={str(self.state_dir)!r})"
