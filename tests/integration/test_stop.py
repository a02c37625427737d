"""`researcher stop`: a run on a running stack is stopped by hand through the client's credential;
the planner driving it ends it as stopped, says who asked in its reason and events, and what it
measured stays in the report. Real nats-server, real services as processes, real Docker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from researcher.stack import LocalStack
from shared.messaging.bus import connect
from shared.registry.store import Registry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "researcher.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NATS_URL": ""}, input=input)


async def test_a_running_run_is_stopped_by_hand_and_says_who_stopped_it(docker_engine, tmp_path):
    with LocalStack(log_dir=tmp_path / "logs") as stack:
        submitted = cli("submit", "a long search", "--dataset", "digits", "--target-accuracy", "0.999",
                        "--max-iterations", "20", "--num-seeds", "2", "--subset-size", "600", "--max-epochs", "2",
                        "--nats-url", stack.url)
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        nc = await connect(stack.url, "test", role="admin")
        registry = await Registry.read(nc.jetstream())
        deadline = time.monotonic() + 120
        while not await registry.iterations(run_id, 1):  # under way: a candidate proposed
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        stopped = cli("stop", run_id, "--nats-url", stack.url)
        again = cli("stop", run_id, "--nats-url", stack.url)
        unknown = cli("stop", "no-such-run", "--nats-url", stack.url)
        report = cli("report", run_id, "--nats-url", stack.url)
        run = await registry.get_run(run_id)
        await nc.close()
    assert stopped.returncode == 0, stopped.stderr
    assert f"run {run_id}: stopped: stopped by hand (" in stopped.stderr and "with researcher stop" in stopped.stderr
    assert run.status == "stopped" and "researcher stop" in run.reason
    assert [(s.action, s.by.endswith("with researcher stop")) for s in run.steering] == [("stop", True)]
    assert again.returncode == 1 and f"run {run_id} had already ended: stopped" in again.stderr
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr
    assert report.returncode == 0 and "status: stopped" in report.stdout
