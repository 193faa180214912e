"""The exceptions privagg raises, mirroring the Rust SDK's ``SdkError``.

Every one derives from :class:`PrivaggError`. Messages never contain the admission
token. The native module raises these classes by name, so a new SDK error needs a
class here and one line in ``src/lib.rs``.

Hierarchy::

    PrivaggError
    ├── Unreachable (also ConnectionError)   no connection before connect_timeout
    ├── Refused                              the server did not admit this client
    ├── HandshakeError                       TLS: wrong pinned server certificate, or the
    │                                        server does not accept this client's certificate
    ├── TlsError                             TLS could not be set up (e.g. server_cert is
    │                                        not a certificate)
    ├── IdentityError                        token file, certificate, key or root unusable
    ├── ConnectionLost (also ConnectionError)
    ├── ProtocolError                        the server sent an oversized frame
    ├── StateError                           the client's memory of rounds is unusable
    ├── LocalError                           socket, OS randomness, worker thread
    ├── SessionEnded                         no more rounds (.completed_rounds)
    ├── ClientClosed                         the client was closed
    ├── Cancelled                            the call was cancelled (AsyncClient)
    ├── InvalidUpdate (also ValueError)      NaN/Inf, wrong shape, bad weight
    │   └── UpdateTypeError (also TypeError) not a float32/float64 numpy array
    └── RoundError                           the round ended without this client's input
        ├── RoundAborted                     aborted by the server (.code)
        ├── PolicyRefused                    the round breaks the client's privacy policy
        └── DimensionMismatch (also ValueError)  update length != model (.expected, .got)
"""

from __future__ import annotations

__all__ = [
    "PrivaggError",
    "Unreachable",
    "Refused",
    "HandshakeError",
    "TlsError",
    "IdentityError",
    "ConnectionLost",
    "ProtocolError",
    "StateError",
    "LocalError",
    "SessionEnded",
    "ClientClosed",
    "Cancelled",
    "InvalidUpdate",
    "UpdateTypeError",
    "RoundError",
    "RoundAborted",
    "TrainingOverran",
    "PolicyRefused",
    "DimensionMismatch",
]


class PrivaggError(Exception):
    """Base class of every privagg error."""


class Unreachable(PrivaggError, ConnectionError):
    """No connection to the server could be made before ``connect_timeout``."""


class Refused(PrivaggError):
    """The server did not admit this client (unknown or spent token, banned identity,
    session full or over). Final: retrying with the same identity will not help."""


class HandshakeError(PrivaggError):
    """The TLS handshake failed: the server's certificate is not the pinned
    ``server_cert``, or the server does not accept this client's certificate."""


class TlsError(PrivaggError):
    """TLS could not be set up, e.g. ``server_cert`` is not a DER certificate."""


class IdentityError(PrivaggError):
    """The token file, certificate, key or authority root cannot be read or used, or
    the threat policy needs an identity the client lacks (``threat="malicious"``
    needs ``cert``, ``key`` and ``client_ca``)."""


class ConnectionLost(PrivaggError, ConnectionError):
    """The connection dropped and could not be resumed."""


class ProtocolError(PrivaggError):
    """The server sent something the client does not accept (an oversized frame)."""


class StateError(PrivaggError):
    """The client's memory of rounds (``state_dir``) cannot be read or written; the
    client takes part in no round it cannot remember."""


class LocalError(PrivaggError):
    """A local resource failed (socket, OS randomness, worker thread)."""


class SessionEnded(PrivaggError):
    """The session ended: there are no more rounds. ``run`` raises it for any end but
    ``"complete"``.

    Attributes:
        completed_rounds: rounds the server completed in the session.
        end: why, as the server says: ``"complete"``, ``"budget_spent"``,
            ``"round_failed"``, ``"shutdown"`` or ``"server_error"``.
    """

    completed_rounds: int = 0
    end: str = "complete"


class ClientClosed(PrivaggError):
    """The client is closed (``close()``, an interrupt or a cancellation)."""


class Cancelled(PrivaggError):
    """The call was cancelled (``Client._cancel``); the client is closed."""


class InvalidUpdate(PrivaggError, ValueError):
    """The update cannot be used: not 1-D, NaN or infinity, a weight that is not a
    finite positive number; or the training step failed. Nothing of it was sent."""


class UpdateTypeError(InvalidUpdate, TypeError):
    """The update is not a numpy array of float32 or float64 (integers, objects and
    other types are refused rather than silently converted)."""


class RoundError(PrivaggError):
    """The round ended for this client without its input in a released sum."""


class TrainingOverran(RoundError):
    """Training took longer than the server allows (its ``--train-timeout``): the round
    went on without this client, which revealed nothing."""


class RoundAborted(RoundError):
    """The server aborted the round (e.g. too few clients survived).

    Attributes:
        code: the server's abort code, e.g. ``"TooFewClients"``.
    """

    code: str = ""


class PolicyRefused(RoundError):
    """The round breaks this client's privacy policy (DP off without
    ``allow_no_dp=True``, noise below ``min_noise_multiplier``, over the ε budget);
    the client did not take part."""


class DimensionMismatch(RoundError, ValueError):
    """The update's length differs from the server's model; nothing was sent.

    Attributes:
        expected: the model's dimension.
        got: the update's length.
    """

    expected: int = 0
    got: int = 0
