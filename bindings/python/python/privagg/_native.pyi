"""Type stubs and contracts of ``privagg._native`` (the Rust extension).

``privagg.Client`` and ``privagg.RoundReport`` are these classes.
"""

import os
from types import TracebackType
from typing import Callable, List, Optional, Tuple, Type, Union, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "Client",
    "RoundReport",
    "enable_logging",
    "DEFAULT_MIN_NOISE_MULTIPLIER",
    "DEFAULT_MAX_EPSILON",
    "__version__",
]

__version__: str
DEFAULT_MIN_NOISE_MULTIPLIER: float
"""The client's default noise floor: rounds less private than a Gaussian mechanism with
this noise multiplier are refused (``PolicyRefused``)."""
DEFAULT_MAX_EPSILON: float
"""The client's default budget: the most ε (at δ = 1e-5) one server may cost it over all
its sessions."""

def enable_logging(filter: str = "info") -> bool:
    """Sends the SDK's log (reconnects, skipped rounds, protocol progress) to standard
    error, filtered by ``filter`` (``tracing`` env-filter syntax, e.g. ``"info"`` or
    ``"privagg_client=debug"``). Returns ``False`` if a logger was already installed.
    Nothing secret is logged. Raises ``ValueError`` for a malformed filter."""

_Path = Union[str, "os.PathLike[str]"]
_Update = npt.NDArray[Union[np.float32, np.float64]]
_TrainResult = Union[_Update, Tuple[_Update, float]]

@final
class RoundReport:
    """What one round did for this client (immutable; compares by value)."""

    @property
    def round(self) -> int:
        """The round number."""
    @property
    def inputs(self) -> int:
        """How many clients' inputs the released sum covers."""
    @property
    def pre_clip_norm(self) -> float:
        """L2 norm of the update before clipping (DP on), for adaptive-clipping studies."""
    @property
    def bytes_sent(self) -> int:
        """Bytes this client sent during the round (frames included)."""
    @property
    def bytes_received(self) -> int:
        """Bytes it received."""
    @property
    def epsilon(self) -> Optional[float]:
        """The ε this client accounts for everything it sent this server (every session
        and attempt), at its budget's δ; ``None`` if no round with DP was charged."""

@final
class Client:
    """A connection to a privagg aggregation server, admitted and ready for rounds.

    The constructor connects (retrying an unreachable server for ``connect_timeout``
    seconds) and gets admitted. Identity, as for ``privagg client``:

    - ``server_cert``: the server's certificate (DER file, ``STATE/cert.der``), pinned:
      a server with another certificate fails the handshake (``HandshakeError``).
    - ``token_file``: a file holding the admission token (whitespace ignored); without
      it the token comes from ``$PRIVAGG_TOKEN`` if set. The token never appears in
      errors or logs.
    - ``cert``, ``key``, ``client_ca``: this client's certificate and PKCS#8 key from
      ``privagg ca issue``, and the authority's root (``ca.der``) that certifies its
      peers. The default ``threat="malicious"`` (a server that may lie about dropouts)
      needs all three; ``threat="curious"`` trusts the server to follow the protocol and
      allows token-only clients.

    Privacy policy (the Rust SDK's ``PrivacyPolicy``), checked by the client itself from
    what it receives, before it encodes anything:

    - ``allow_no_dp``: take part in rounds without differential privacy (then only
      secure aggregation hides the update). Default ``False``: such rounds raise
      ``PolicyRefused``.
    - ``min_noise_multiplier``: refuse rounds less private than a Gaussian mechanism
      with this noise multiplier (default ``DEFAULT_MIN_NOISE_MULTIPLIER``).
    - ``max_epsilon``: the most ε (δ = 1e-5) one server may cost this client over all
      its sessions (default ``DEFAULT_MAX_EPSILON``; ``math.inf``: no budget).
    - ``max_participations``: the most masked inputs sent to one server (default: no cap).
    - ``corrupt_fraction``: accept only thresholds safe with this fraction of clients
      corrupt (default 0.05).

    Other options: ``server_name`` (the name in the server's certificate),
    ``state_dir`` (where the client remembers rounds so that a server cannot replay
    one; default ``$PRIVAGG_CLIENT_STATE`` or ``~/.local/state/privagg/client``),
    ``remember=False`` (remember only while this object lives),
    ``max_attempts_per_round`` (masked inputs sent for one round over the server's
    attempts).

    Every blocking call releases the GIL. Ctrl-C (``KeyboardInterrupt``) stops a call
    within about 100 ms and closes the client. One call at a time: a second thread's
    call waits for the first. Use as a context manager to close it.

    Raises:
        OSError: ``server_cert`` cannot be read (``FileNotFoundError`` …).
        ValueError: a malformed address or option.
        privagg.Unreachable, privagg.Refused, privagg.HandshakeError,
        privagg.TlsError, privagg.IdentityError: as their names say.
    """

    def __new__(
        cls,
        server: str,
        server_cert: _Path,
        *,
        token_file: Optional[_Path] = None,
        cert: Optional[_Path] = None,
        key: Optional[_Path] = None,
        client_ca: Optional[_Path] = None,
        allow_no_dp: bool = False,
        min_noise_multiplier: float = ...,
        max_epsilon: float = ...,
        max_participations: Optional[int] = None,
        threat: str = "malicious",
        corrupt_fraction: Optional[float] = None,
        server_name: str = "localhost",
        state_dir: Optional[_Path] = None,
        remember: bool = True,
        connect_timeout: float = 10.0,
        max_attempts_per_round: int = 3,
    ) -> "Client": ...
    def submit(self, update: _Update, weight: float = 1.0) -> RoundReport:
        """Takes part in the next round with ``update`` and returns once the round
        completed with this client's input in the released sum.

        ``update`` is the model delta: a 1-D float32 array (float64 is converted) of
        the model's length, all finite. ``weight`` (e.g. the number of local examples)
        counts only when the server runs without DP; it must be finite and > 0.

        Raises:
            privagg.UpdateTypeError: not a numpy array of float32/float64.
            privagg.InvalidUpdate: not 1-D, NaN or infinity, bad weight (checked before
                anything is sent).
            privagg.DimensionMismatch: the length differs from the server's model.
            privagg.PolicyRefused: the round breaks the privacy policy.
            privagg.RoundAborted, privagg.RoundError: the round ended without this input.
            privagg.SessionEnded: there are no more rounds.
            privagg.ConnectionLost, privagg.ClientClosed: the connection is gone.
        """
    def run(self, train: Callable[[npt.NDArray[np.float32]], _TrainResult]) -> List[RoundReport]:
        """Takes part in every round until the session ends and returns one report per
        round this client's input was summed in.

        ``train`` gets the current global model (a fresh float32 array it may keep or
        modify) and returns the update (same rules as :meth:`submit`), or
        ``(update, weight)``. It runs on the calling thread, with the GIL. Rounds that
        abort, or that the connection drops in, are skipped (after reconnecting).

        Raises:
            whatever ``train`` raises (after leaving the round), unchanged; a
                ``KeyboardInterrupt`` (Ctrl-C while it trains) closes the client at
                once instead, so that the server does not count the attempt;
            privagg.InvalidUpdate / UpdateTypeError for a bad returned update;
            the errors of :meth:`submit` other than ``SessionEnded``, which ends the
            loop normally.
        """
    def close(self) -> None:
        """Closes the connection politely (what was sent is delivered first; at most
        about 2 s). Idempotent; later calls raise ``privagg.ClientClosed``."""
    @property
    def closed(self) -> bool:
        """Whether the client is closed (by ``close``, an interrupt or a cancellation)."""
    def _cancel(self) -> None:
        """Stops the call in progress (it raises ``privagg.Cancelled``) and closes the
        client; with no call in progress, closes it at once. Safe from any thread."""
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
