"""Shared fixtures: a real nats-server with JetStream on a free port, and the Docker engine."""

from __future__ import annotations

import subprocess
import tempfile

import docker
import pytest

from researcher.stack import free_port, start_nats_server
from shared.messaging.bus import connect

SANDBOX_IMAGE = "pytorch-researcher/sandbox:latest"


@pytest.fixture
def nats_url():
    """A fresh nats-server per test: no state leaks between tests."""
    port = free_port()
    store = tempfile.TemporaryDirectory(prefix="test-js-")
    proc = start_nats_server(port, store.name, subprocess.DEVNULL)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        store.cleanup()


@pytest.fixture
async def nc(nats_url):
    client = await connect(nats_url, "tests")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def docker_engine():
    """The tests that claim containment need the real engine and image: fail loudly, never skip."""
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(SANDBOX_IMAGE)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Docker engine or {SANDBOX_IMAGE} unavailable ({exc}); start dockerd and run `make images`")
    return client
