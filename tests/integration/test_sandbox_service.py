"""The sandbox service as a process: its pool, a crash, and the strays a restart removes."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared.modelspec.assemble import assemble
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode
from shared.messaging.messages import ValidateRequest, ValidationResult

pytestmark = [pytest.mark.docker]

REPLICA = f"tests-crash-{os.getpid()}"
OWNER = f"org.pytorch-researcher.owner=sandbox-{REPLICA}"
CNN = {"class_name": "Net", "input_shape": [1, 8, 8], "num_classes": 10,
       "layers": [{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "Flatten"},
                  {"type": "Linear", "out_features": 10}]}


def start_service(nats_url, log_path):
    env = {**os.environ, "NATS_URL": nats_url, "RESEARCHER_REPLICA": REPLICA, "RESEARCHER_SANDBOX__POOL_SIZE": "2",
           "RESEARCHER_SANDBOX__CONCURRENCY": "2"}
    return subprocess.Popen([sys.executable, "-m", "services.sandbox.main"], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def containers(engine):
    # one being removed behind its job may vanish between the listing and its details
    return {c.id for c in engine.containers.list(all=True, filters={"label": OWNER}, ignore_removed=True)}


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def ready_lines(log_path):
    return [json.loads(line) for line in log_path.read_text().splitlines() if '"sandbox_ready"' in line]


async def test_a_killed_service_leaves_strays_that_its_restart_removes(docker_engine, nats_url, tmp_path):
    log_path = tmp_path / "sandbox.log"
    first = start_service(nats_url, log_path)
    second = None
    try:
        assert await asyncio.to_thread(wait_for, lambda: len(containers(docker_engine)) >= 2), log_path.read_text()[-2000:]
        # the pool starts before the service subscribes: on a loaded machine a request between the two
        # found no responder (CI); ready is logged once it serves
        assert await asyncio.to_thread(wait_for, lambda: len(ready_lines(log_path)) == 1), log_path.read_text()[-2000:]
        model = assemble(CNN)
        nc = await connect(nats_url, "tests", role="admin")
        request = ValidateRequest(source=model.source, class_name="Net", input_shape=[2, 1, 8, 8])
        reply = await nc.request(subjects.VALIDATE_SUBJECT, encode(request), timeout=60)
        result = decode(reply.data, ValidationResult)
        assert result.ok and result.output_shape == [2, 10], result.error
        await asyncio.to_thread(wait_for, lambda: len(containers(docker_engine)) >= 2)

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        strays = containers(docker_engine)
        assert len(strays) >= 2  # the warm pool outlived the crashed service

        second = start_service(nats_url, log_path)
        assert await asyncio.to_thread(wait_for, lambda: len(ready_lines(log_path)) == 2), log_path.read_text()[-2000:]
        # its warm pool at least; a job's container it was removing as it died may have gone by itself
        assert ready_lines(log_path)[-1]["strays_removed"] >= 2
        assert not strays & containers(docker_engine)
        reply = await nc.request(subjects.VALIDATE_SUBJECT, encode(request), timeout=60)
        assert decode(reply.data, ValidationResult).ok
        await nc.close()

        second.send_signal(signal.SIGTERM)  # a clean stop takes its pool with it
        assert second.wait(timeout=60) == 0
        assert not containers(docker_engine)
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.kill()
        for container in docker_engine.containers.list(all=True, filters={"label": OWNER}, ignore_removed=True):
            container.remove(force=True)
