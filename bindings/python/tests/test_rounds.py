"""Rounds against a real `privagg serve` process: exact FedAvg with DP off, DP on with
the client's default policy, `run` over several rounds, the asyncio client, and clients
that drop out."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import privagg
from conftest import in_threads


def test_weighted_fedavg_with_dp_off_is_exact(local_server):
    server = local_server(dim=5, clients=3, dp=False)
    updates = [
        np.array([1.0, -2.0, 0.5, 0.0, 3.0], dtype=np.float32),
        np.array([0.25, 4.0, -1.5, 2.0, -3.0], dtype=np.float32),
        np.array([-0.5, 0.0, 1.0, 7.0, 1.0], dtype=np.float64),  # converted to float32
    ]
    weights = [1.0, 2.0, 5.0]

    def client(i):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.submit(updates[i], weights[i])

    reports = [w.outcome() for w in in_threads(*(lambda i=i: client(i) for i in range(3)))]
    assert server.wait() == 0
    for report in reports:
        assert isinstance(report, privagg.RoundReport)
        assert report.round == 1
        assert report.inputs == 3
        assert report.bytes_sent > 0 and report.bytes_received > 0
    expected = sum(w * u.astype(np.float64) for w, u in zip(weights, updates)) / sum(weights)
    model = server.model()
    assert model.dtype == np.float32 and model.shape == (5,)
    # The server's fixed-point sum is exact to well below float32 rounding of the values.
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-5)
    assert server.completed_rounds() == [1]


def test_dp_on_with_the_default_policy(local_server):
    server = local_server(dim=16, clients=3)
    rng = np.random.default_rng(7)
    updates = [rng.normal(0, 0.1, 16).astype(np.float32) for _ in range(3)]

    def client(i):
        # The default policy: DP required, noise multiplier at least the floor, ε budgeted.
        with privagg.Client(server.address, server.cert, **server.client_options(i)) as c:
            return c.submit(updates[i])

    reports = [w.outcome() for w in in_threads(*(lambda i=i: client(i) for i in range(3)))]
    assert server.wait() == 0
    assert [r.inputs for r in reports] == [3, 3, 3]
    norms = sorted(r.pre_clip_norm for r in reports)
    assert norms == pytest.approx(sorted(float(np.linalg.norm(u)) for u in updates), rel=1e-5)
    model = server.model()
    assert model.shape == (16,) and np.all(np.isfinite(model))
    # The server charged the release, with at least the noise the client's policy requires.
    ledger = json.loads((server.state_dir / "privacy-ledger.json").read_text())
    [release] = ledger["releases"]
    assert release["round"] == 1 and release["survivors"] == 3
    assert release["effective_noise_multiplier"] >= privagg.DEFAULT_MIN_NOISE_MULTIPLIER


def test_run_trains_on_the_current_model_every_round(local_server):
    server = local_server(dim=3, clients=2, rounds=3, dp=False)
    targets = [np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])]
    seen = [[], []]

    def client(i):
        def train(model):
            assert model.dtype == np.float32 and model.shape == (3,)
            seen[i].append(model.copy())
            return (targets[i] - model).astype(np.float32), 1.0 + i

        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.run(train)

    reports = [w.outcome() for w in in_threads(lambda: client(0), lambda: client(1))]
    assert server.wait() == 0
    for r in reports:
        assert [x.round for x in r] == [1, 2, 3]
    weighted = (1.0 * targets[0] + 2.0 * targets[1]) / 3.0
    np.testing.assert_allclose(seen[0][0], np.zeros(3), atol=0)
    # Each round moves the model to the weighted mean of the targets, then stays there.
    np.testing.assert_allclose(seen[0][1], weighted, atol=1e-5)
    np.testing.assert_allclose(seen[1][2], weighted, atol=1e-5)
    np.testing.assert_allclose(server.model(), weighted, atol=1e-5)
    assert server.completed_rounds() == [1, 2, 3]


def test_async_client(local_server):
    server = local_server(dim=4, clients=2, dp=False)

    async def main():
        async def one(i):
            async with privagg.AsyncClient(
                server.address, server.cert, allow_no_dp=True, **server.client_options(i)
            ) as c:
                return await c.submit(np.full(4, float(i + 1), dtype=np.float32))

        return await asyncio.gather(one(0), one(1))

    reports = asyncio.run(main())
    assert [r.inputs for r in reports] == [2, 2]
    assert server.wait() == 0
    np.testing.assert_allclose(server.model(), np.full(4, 1.5), atol=1e-6)


def test_async_run_with_a_coroutine_train(local_server):
    server = local_server(dim=2, clients=2, rounds=2, dp=False)

    async def main():
        async def one(i):
            async def train(model):
                await asyncio.sleep(0)
                return np.full(2, float(i), dtype=np.float32)

            client = await privagg.AsyncClient.open(
                server.address, server.cert, allow_no_dp=True, **server.client_options(i)
            )
            try:
                return await client.run(train)
            finally:
                await client.close()

        return await asyncio.gather(one(0), one(1))

    reports = asyncio.run(main())
    assert [[r.round for r in rs] for rs in reports] == [[1, 2], [1, 2]]
    assert server.wait() == 0
    np.testing.assert_allclose(server.model(), np.full(2, 1.0), atol=1e-6)


def test_a_client_that_vanishes_mid_round_is_left_out(local_server, binary, tmp_path):
    """Three clients; one (the CLI's fault injection) vanishes after the key exchange,
    before sending its masked input: the other two finish, and the sum holds theirs."""
    server = local_server(dim=4, clients=3, min_clients=2, dp=False)
    dropped = tmp_path / "dropped.npy"
    np.save(dropped, np.full(4, 100.0, dtype=np.float32))

    def python_client(i, value):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.submit(np.full(4, value, dtype=np.float32))

    workers = in_threads(lambda: python_client(0, 1.0), lambda: python_client(1, 3.0))
    vanishing = subprocess.run(
        [
            str(binary), "client",
            "--server", server.address,
            "--ca", str(server.cert),
            "--update", str(dropped),
            "--token-file", str(server.token_files[2]),
            "--threat", "curious",
            "--allow-no-dp",
            "--state", str(tmp_path / "cli-state"),
            "--testing-drop-point", "before-masked-input",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert vanishing.returncode != 0
    reports = [w.outcome() for w in workers]
    assert [r.inputs for r in reports] == [2, 2]
    assert server.wait() == 0
    np.testing.assert_allclose(server.model(), np.full(4, 2.0), atol=1e-6)


def test_an_exception_in_train_leaves_the_round_and_propagates(local_server):
    """A client whose training step fails leaves the round (the server is told at once)
    and `run` re-raises the exception unchanged; the others finish without it."""
    server = local_server(dim=3, clients=3, min_clients=2, dp=False)

    class TrainingFailed(Exception):
        pass

    def failing():
        def train(model):
            raise TrainingFailed("out of memory on the device")

        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(0)) as c:
            c.run(train)

    def good(i):
        with privagg.Client(server.address, server.cert, allow_no_dp=True, **server.client_options(i)) as c:
            return c.run(lambda model: np.ones(3, dtype=np.float32) * i)

    workers = in_threads(failing, lambda: good(1), lambda: good(2))
    with pytest.raises(TrainingFailed, match="out of memory"):
        workers[0].outcome()
    reports = [w.outcome() for w in workers[1:]]
    assert [[r.inputs for r in rs] for rs in reports] == [[2], [2]]
    assert server.wait() == 0
    np.testing.assert_allclose(server.model(), np.full(3, 1.5), atol=1e-6)
