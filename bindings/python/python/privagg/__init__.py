"""privagg: secure aggregation with differential privacy for federated learning.

The client side of a privagg training session, from Python. The update is clipped,
noised, encoded and masked in Rust (the ``privagg-client`` SDK) and sent over QUIC to a
``privagg serve`` aggregation server, which learns only the sum of the surviving
clients' noisy updates and applies it as a FedAvg step.

    import numpy as np
    import privagg

    with privagg.Client("127.0.0.1:7000", "state/cert.der",
                        cert="alice.der", key="alice.key", client_ca="ca.der") as client:
        reports = client.run(lambda model: train_one_epoch(model) - model)

- :class:`Client`: blocking; releases the GIL while it waits; Ctrl-C stops it.
- :class:`AsyncClient`: the same for asyncio applications.
- :mod:`privagg.errors`: the exceptions, all derived from :class:`PrivaggError`.
- :func:`enable_logging`: the SDK's log on standard error.
- :mod:`privagg.testing`: :class:`~privagg.testing.LocalServer` starts a real
  ``privagg serve`` process for tests and notebooks.
"""

from __future__ import annotations

from ._native import (
    DEFAULT_MAX_EPSILON,
    DEFAULT_MIN_NOISE_MULTIPLIER,
    Client,
    RoundReport,
    __version__,
    enable_logging,
)
from .aio import AsyncClient
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__all__ = [
    "Client",
    "AsyncClient",
    "RoundReport",
    "DEFAULT_MAX_EPSILON",
    "DEFAULT_MIN_NOISE_MULTIPLIER",
    "enable_logging",
    "__version__",
    *_errors_all,
]
