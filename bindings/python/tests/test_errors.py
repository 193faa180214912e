"""Bad input and refused connections each raise a clear exception of privagg.errors."""

from __future__ import annotations

import _thread
import gc
import threading
import time

import numpy as np
import pytest

import privagg
from conftest import in_threads, make_ca_cert


@pytest.fixture
def connected(local_server):
    """A client admitted to a DP-off server whose round has not started (it waits for
    a second client), so that nothing but local validation can answer."""
    server = local_server(dim=4, clients=2, dp=False)
    client = privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(0))
    yield client
    client.close()


@pytest.mark.parametrize(
    "update, error, words",
    [
        (np.array([1.0, np.nan, 0.0, 0.0], dtype=np.float32), privagg.InvalidUpdate, "NaN at index 1"),
        (np.array([1.0, 0.0, 0.0, np.inf]), privagg.InvalidUpdate, "infinity at index 3"),
        (np.array([1.0, 0.0, 0.0, 1e300]), privagg.InvalidUpdate, "infinity at index 3"),  # overflows float32
        (np.zeros((2, 2), dtype=np.float32), privagg.InvalidUpdate, "must be 1-D"),
        (np.zeros(4, dtype=np.int64), privagg.UpdateTypeError, "float32 or float64, got dtype int64"),
        (np.zeros(4, dtype=np.float16), privagg.UpdateTypeError, "got dtype float16"),
        ([0.0, 0.0, 0.0, 0.0], privagg.UpdateTypeError, "numpy.ndarray"),
    ],
    ids=["nan", "inf", "overflow", "2-d", "int64", "float16", "list"],
)
def test_bad_updates_are_refused_before_anything_is_sent(connected, update, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        connected.submit(update)
    assert not connected.closed  # the client stays usable


def test_invalid_update_is_also_a_value_error_and_dtype_errors_a_type_error(connected):
    with pytest.raises(ValueError):
        connected.submit(np.full(4, np.nan))
    with pytest.raises(TypeError):
        connected.submit(np.zeros(4, dtype=np.int32))
    with pytest.raises(privagg.InvalidUpdate, match="weight"):
        connected.submit(np.zeros(4, dtype=np.float32), weight=float("nan"))


def test_a_non_contiguous_view_is_read_correctly(local_server):
    server = local_server(dim=3, clients=2, dp=False)
    base = np.arange(6, dtype=np.float32)

    def client(i, update):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.submit(update)

    workers = in_threads(lambda: client(0, base[::2]), lambda: client(1, base[1::2]))  # [0,2,4], [1,3,5]
    [w.outcome() for w in workers]
    assert server.wait() == 0
    np.testing.assert_allclose(server.model(), [0.5, 2.5, 4.5], atol=1e-6)


def test_wrong_dimension(local_server):
    server = local_server(dim=4, clients=3, min_clients=2, dp=False)

    def client(i, update):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.submit(update)

    workers = in_threads(
        lambda: client(0, np.zeros(3, dtype=np.float32)),
        lambda: client(1, np.ones(4, dtype=np.float32)),
        lambda: client(2, np.ones(4, dtype=np.float32)),
    )
    with pytest.raises(privagg.DimensionMismatch, match="3 values, the server's model has 4") as info:
        workers[0].outcome()
    assert (info.value.expected, info.value.got) == (4, 3)
    assert isinstance(info.value, privagg.RoundError) and isinstance(info.value, ValueError)
    assert [w.outcome().inputs for w in workers[1:]] == [2, 2]


def test_dp_off_is_refused_unless_allowed(local_server):
    """The default policy requires DP: a DP-off round raises PolicyRefused."""
    server = local_server(dim=2, clients=2, dp=False)
    other = privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(1))
    waiting = in_threads(lambda: other.submit(np.zeros(2, dtype=np.float32)))[0]
    with privagg.Client(server.address, server.cert, **server.client_options(0)) as c:
        with pytest.raises(privagg.PolicyRefused, match="(?i)differential privacy|DP"):
            c.submit(np.zeros(2, dtype=np.float32))
    # The other client's round cannot complete now; cancelling it closes it.
    other._cancel()
    with pytest.raises(privagg.Cancelled):
        waiting.outcome()
    assert other.closed
    with pytest.raises(privagg.ClientClosed):
        other.submit(np.zeros(2, dtype=np.float32))


def test_wrong_server_certificate(local_server, binary, tmp_path):
    server = local_server(dim=2, clients=2, dp=False)
    not_the_servers = make_ca_cert(binary, tmp_path / "ca")
    with pytest.raises(privagg.HandshakeError, match="TLS handshake failed"):
        privagg.Client(server.address, not_the_servers, allow_no_dp=True, **server.client_options(0))


def test_a_file_that_is_not_a_certificate(local_server, tmp_path):
    server = local_server(dim=2, clients=2, dp=False)
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(privagg.PrivaggError):
        privagg.Client(server.address, junk, allow_no_dp=True, **server.client_options(0))
    with pytest.raises(FileNotFoundError, match="missing.der"):
        privagg.Client(server.address, tmp_path / "missing.der", **server.client_options(0))


def test_refused_identity(local_server, tmp_path):
    server = local_server(dim=2, clients=2, dp=False)
    token = tmp_path / "stolen.token"
    secret = "0123456789abcdef-not-a-real-token"
    token.write_text(secret + "\n")
    with pytest.raises(privagg.Refused) as info:
        privagg.Client(server.address, server.cert, token_file=token, threat="curious")
    assert secret not in str(info.value)
    assert secret not in server.log()


def test_identity_files_are_checked(local_server, tmp_path):
    server = local_server(dim=2, clients=2, dp=False)
    with pytest.raises(privagg.IdentityError, match="token file .*missing.token"):
        privagg.Client(server.address, server.cert, token_file=tmp_path / "missing.token", threat="curious")
    with pytest.raises(privagg.IdentityError, match="certificate and its key go together"):
        privagg.Client(server.address, server.cert, cert=tmp_path / "c.der")
    # The default threat model (a server that may lie) needs a certified identity.
    with pytest.raises(privagg.IdentityError, match="malicious server"):
        privagg.Client(server.address, server.cert, token_file=server.token_files[0])


def test_unreachable(tmp_path, local_server):
    server = local_server(dim=2, clients=2, dp=False)
    cert = server.cert.read_bytes()
    server.stop()
    pinned = tmp_path / "cert.der"
    pinned.write_bytes(cert)
    with pytest.raises(privagg.Unreachable):
        privagg.Client(server.address, pinned, connect_timeout=0.5, **server.client_options(0))


def test_bad_options_raise_value_errors(local_server):
    server = local_server(dim=2, clients=2, dp=False)
    with pytest.raises(ValueError, match="threat"):
        privagg.Client(server.address, server.cert, threat="paranoid")
    with pytest.raises(ValueError, match="HOST:PORT"):
        privagg.Client("no-port", server.cert)
    with pytest.raises(TypeError):
        privagg.Client(server.address, server.cert, no_such_option=1)
    # Values no client can mean are refused by name, not taken as "no budget" or "no floor".
    for option, value in [
        ("max_epsilon", float("nan")),
        ("max_epsilon", -3.0),
        ("min_noise_multiplier", -1.0),
        ("max_participations", 0),
        ("corrupt_fraction", 1.5),
    ]:
        with pytest.raises(ValueError, match=option):
            privagg.Client(server.address, server.cert, **{option: value})


def test_ctrl_c_stops_a_waiting_call_and_closes_the_client(connected):
    """KeyboardInterrupt reaches a thread blocked in submit (the round never starts)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    # A pending interrupt is handled by whatever Python code runs next; if that is a
    # finalizer run by the garbage collector (earlier tests' servers and temporary
    # directories), CPython reports the KeyboardInterrupt as "ignored" and it is lost.
    # Collect first and keep the collector off while the interrupt is in flight.
    gc.collect()
    gc.disable()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            connected.submit(np.zeros(4, dtype=np.float32))
    finally:
        timer.cancel()
        gc.enable()
    assert connected.closed


def test_ctrl_c_during_train_interrupts_train_itself(local_server):
    """`train` runs on the calling thread, so Ctrl-C while it trains raises inside it
    (where a training loop can clean up); `run` re-raises it and the client leaves the
    session at once. The server does not count the attempt it cost: with one attempt
    allowed and the session stopping on a failed round, the others still finish."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    server = local_server(
        dim=3,
        clients=3,
        min_clients=2,
        dp=False,
        extra_args=["--max-round-attempts", "1", "--stop-after-failed-round"],
    )
    interrupted_in_train = []

    def train(model):
        gc.collect()  # no finalizer may swallow the interrupt (see the test above)
        gc.disable()
        try:
            _thread.interrupt_main()  # the user presses Ctrl-C while the model trains
            time.sleep(60)
        except KeyboardInterrupt:
            interrupted_in_train.append(True)
            raise
        finally:
            gc.enable()
        return model

    def good(i):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.run(lambda model: np.ones(3, dtype=np.float32) * i)

    workers = in_threads(lambda: good(1), lambda: good(2))
    with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(0)) as c:
        with pytest.raises(KeyboardInterrupt):
            c.run(train)
        assert c.closed
    assert interrupted_in_train == [True]
    reports = [w.outcome() for w in workers]
    assert [[r.inputs for r in rs] for rs in reports] == [[2], [2]]
    assert server.wait() == 0


def test_async_cancellation_closes_the_client(local_server):
    import asyncio

    server = local_server(dim=2, clients=2, dp=False)

    async def main():
        client = await privagg.AsyncClient.open(
            server.address, server.cert, allow_no_dp=True, **server.client_options(0)
        )
        task = asyncio.ensure_future(client.submit(np.zeros(2, dtype=np.float32)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the worker notices within one poll interval
            if client.client.closed:
                break
            await asyncio.sleep(0.05)
        assert client.client.closed

    asyncio.run(main())


def test_enable_logging_checks_its_filter():
    with pytest.raises(ValueError, match="bad log filter"):
        privagg.enable_logging("privagg_client=[[")
    assert isinstance(privagg.enable_logging("warn"), bool)


def test_cancel_without_a_call_in_progress_closes_the_client(connected):
    connected._cancel()
    assert connected.closed
    with pytest.raises(privagg.ClientClosed):
        connected.submit(np.zeros(4, dtype=np.float32))
    connected.close()  # idempotent
