"""Shared fixtures: a real nats-server with JetStream on a free port, and the Docker engine."""

from __future__ import annotations

import os
import subprocess
import tempfile

import docker
import pytest

from researcher.stack import free_port, start_nats_server
from shared.messaging.bus import connect

# the services' own setting, so the tests' runners and the services they start use one image
# (a harness change is tested on an image of its own, built with SANDBOX_IMAGE=... build-images.sh)
SANDBOX_IMAGE = os.environ.get("RESEARCHER_SANDBOX__IMAGE", "pytorch-researcher/sandbox:latest")

# `researcher run` keeps its registry in a home that outlives it; the tests' runs (in this process
# and in the commands it starts) go to one of their own, never the user's. A test that looks at a
# home's contents gives its command a fresh one (--home, or RESEARCHER_HOME in its environment).
_TESTS_HOME = tempfile.TemporaryDirectory(prefix="researcher-tests-home-")
os.environ["RESEARCHER_HOME"] = _TESTS_HOME.name


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


# One candidate at a time at the full budget, the planning LLM on every proposal: what the planner
# did before it kept candidates in flight, and what a configuration still gets with these settings.
# Tests of recovery and of the LLMs' part pin their runs' shape with it; the search's own tests
# (test_parallel_search, test_end_to_end) run the defaults.
SEQUENTIAL = {"RESEARCHER_PLANNER__PARALLEL": "1", "RESEARCHER_PLANNER__LOWER_RUNGS": "0",
              "RESEARCHER_PLANNER__LLM_SHARE": "1"}


@pytest.fixture
def sequential_search(monkeypatch):
    """The services a test starts (LocalStack, the CLI's embedded stack) search sequentially."""
    for key, value in SEQUENTIAL.items():
        monkeypatch.setenv(key, value)
