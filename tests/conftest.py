"""Shared fixtures: a real nats-server with JetStream on a free port, and the Docker engine."""

from __future__ import annotations

import os
import subprocess
import tempfile

import docker
import pytest
import structlog

from researcher.stack import free_port, start_nats_server
from shared.messaging.bus import connect
from shared.security.credentials import Credentials, default_root

# the services' own setting, so the tests' runners and the services they start use one image
# (a harness change is tested on an image of its own, built with SANDBOX_IMAGE=... build-images.sh)
SANDBOX_IMAGE = os.environ.get("RESEARCHER_SANDBOX__IMAGE", "pytorch-researcher/sandbox:latest")

# `researcher run` keeps its registry in a home that outlives it; the tests' runs (in this process
# and in the commands it starts) go to one of their own, never the user's. A test that looks at a
# home's contents gives its command a fresh one (--home, or RESEARCHER_HOME in its environment).
_TESTS_HOME = tempfile.TemporaryDirectory(prefix="researcher-tests-home-")
os.environ["RESEARCHER_HOME"] = _TESTS_HOME.name

# The services and commands the tests start run their containers under runc with the sandbox's
# profile: gVisor (the product's default where it runs) costs 4-7x per container start, which the
# suite's many runs cannot afford on 2 cores. Under gVisor: the boundary's own tests
# (test_boundary.py), the in-process services built from Config() (test_sandbox_service.py,
# test_evaluator_service.py, test_weights.py), and the compose stack (test_compose.py).
os.environ.setdefault("RESEARCHER_SANDBOX__RUNTIME", "runc")


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    """The tests' stack credentials (in the tests' home): the CA, the server's and every role's,
    made once; every nats-server the tests start runs the production configuration with them."""
    made = Credentials(default_root())
    made.ensure()
    return made


@pytest.fixture
def nats_url(credentials):
    """A fresh nats-server per test: no state leaks between tests. TLS with client certificates and
    the roles' permissions, as in production: `nc` is the admin, a service started on it connects as
    its role (NATS_CREDENTIALS, or the role's credential in the tests' home)."""
    port = free_port()
    store = tempfile.TemporaryDirectory(prefix="test-js-")
    proc = start_nats_server(port, store.name, subprocess.DEVNULL, credentials=credentials)
    try:
        yield f"tls://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        store.cleanup()


@pytest.fixture
async def nc(nats_url):
    """The tests' own hands on the server: the admin's credential (set-up, inspection)."""
    client = await connect(nats_url, "tests", role="admin")
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


@pytest.fixture(autouse=True)
def _logging_outlives_captured_streams():
    """A command run in-process (cli.main) points structlog at the stream it was given: under capsys,
    a capture closed when the test ends. The next test in the worker (whatever file it is in) would
    then fail on its first log line, so the logging goes back to its defaults."""
    yield
    file = getattr(structlog.get_config()["logger_factory"], "_file", None)
    if getattr(file, "closed", False):
        structlog.reset_defaults()
