"""The asyncio variant of :class:`privagg.Client`.

Each blocking call runs in a worker thread (``asyncio.to_thread``). The native client
releases the GIL while it waits on the network and on cryptography, so the event loop
keeps running; no second async runtime is bridged into asyncio. Cancelling the awaiting
task stops the native call within about 100 ms (it raises ``privagg.Cancelled`` in the
worker, which is discarded) and closes the client, since a round left half-way cannot be
resumed; the task itself sees ``asyncio.CancelledError`` as usual.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, List, Optional, Tuple, Union

import numpy as np

from ._native import Client, RoundReport

Update = Union[np.ndarray, Tuple[np.ndarray, float]]
Train = Callable[[np.ndarray], Union[Update, Awaitable[Update]]]

__all__ = ["AsyncClient"]


class AsyncClient:
    """A :class:`privagg.Client` for asyncio applications.

    Takes the same arguments as :class:`privagg.Client` and connects on
    ``await client.connect()`` or on entering ``async with``::

        async with privagg.AsyncClient(address, cert_path, token_file=path) as client:
            report = await client.submit(update)

    or in one step: ``client = await privagg.AsyncClient.open(address, cert_path, ...)``.
    One call at a time per client.
    """

    def __init__(self, server: str, server_cert: Any, **options: Any) -> None:
        self._args = (server, server_cert)
        self._options = options
        self._client: Optional[Client] = None

    @classmethod
    async def open(cls, server: str, server_cert: Any, **options: Any) -> "AsyncClient":
        """Creates the client and connects it (see :meth:`connect`)."""
        client = cls(server, server_cert, **options)
        await client.connect()
        return client

    async def connect(self) -> None:
        """Connects and gets admitted; raises like :class:`privagg.Client`'s constructor.
        Does nothing if already connected."""
        if self._client is None:
            self._client = await asyncio.to_thread(Client, *self._args, **self._options)

    @property
    def client(self) -> Client:
        """The underlying blocking client (raises ``ClientClosed`` if not connected)."""
        if self._client is None:
            from .errors import ClientClosed

            raise ClientClosed("the AsyncClient is not connected; await connect() first")
        return self._client

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        client = self.client
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            client._cancel()
            # The worker returns promptly with Cancelled; retrieve it so it is not logged.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    async def submit(self, update: np.ndarray, weight: float = 1.0) -> RoundReport:
        """Takes part in the next round with ``update``; see :meth:`privagg.Client.submit`."""
        return await self._call(self.client.submit, update, weight)

    async def run(self, train: Train) -> List[RoundReport]:
        """Takes part in every round until the session ends; see :meth:`privagg.Client.run`.

        ``train`` may be a plain function (it runs in the worker thread) or a coroutine
        function (it runs on this event loop; the worker waits for it).
        """
        if inspect.iscoroutinefunction(train):
            loop = asyncio.get_running_loop()

            def step(model: np.ndarray) -> Update:
                return asyncio.run_coroutine_threadsafe(train(model), loop).result()

            return await self._call(self.client.run, step)
        return await self._call(self.client.run, train)

    async def close(self) -> None:
        """Closes the connection politely; idempotent."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"privagg.AsyncClient(server={self._args[0]!r})"
