"""A service stops within its grace period whatever the state of its NATS connection: told by
SIGTERM with the server gone (a real service process, a real nats-server killed under it), told
while it is still trying to connect, and with work in hand that would wait on the dead server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest

from researcher.stack import free_port, start_nats_server
from shared.messaging import subjects
from shared.messaging.bus import connect
from shared.runtime.config import Config
from shared.runtime.service import CLOSE_S, Service
from tests.integration.test_service import capture_logs

# stop times within a grace period: a test in the other worker stretches them (make test runs these alone)
pytestmark = [pytest.mark.alone]

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 2.0


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str


def log_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def wait_for_event(proc: subprocess.Popen, path: Path, event: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == event for e in log_events(path)):
            return
        ended = proc.poll()
        assert ended is None, f"the service exited ({ended}) before {event}:\n{path.read_text()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {path} after {timeout} s:\n{path.read_text()[-3000:]}")


def assembler(nats_url: str, log: Path) -> subprocess.Popen:
    """The real assembler service (no Docker needed), as the stack starts it."""
    env = {**os.environ, "NATS_URL": nats_url, "RESEARCHER_STOP_GRACE_S": str(GRACE_S),
           "PYTHONPATH": str(ROOT), "RESEARCHER_REPLICA": f"stop-test-{os.getpid()}"}
    return subprocess.Popen([sys.executable, "-m", "services.assembler.main"], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def unshared_port() -> int:
    """A free port below the kernel's ephemeral range: no other test's free_port() (the tests run in
    parallel) can hand it to a nats-server of its own once ours is killed, which the service would
    then reconnect to (same CA) and drain into as that test tears its server down."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 10000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port below {low}")


def stopped_within(proc: subprocess.Popen, limit_s: float) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running {limit_s} s after SIGTERM") from None
    return time.monotonic() - began


def test_a_service_told_to_stop_after_its_server_died_stops_within_its_grace_period(tmp_path, credentials):
    port, log = unshared_port(), tmp_path / "assembler.log"
    with tempfile.TemporaryDirectory() as store:
        server = start_nats_server(port, store, subprocess.DEVNULL, credentials=credentials)
        proc = assembler(f"tls://127.0.0.1:{port}", log)
        try:
            wait_for_event(proc, log, "assembler_ready")
            server.kill()
            server.wait()
            wait_for_event(proc, log, "nats_disconnected")  # reconnecting to nothing
            took = stopped_within(proc, GRACE_S + CLOSE_S)
        finally:
            proc.kill()
            server.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert took < GRACE_S + 3, (took, log.read_text()[-3000:])  # no wait on the dead server's drain or flush
    events = [e["event"] for e in log_events(log)]
    assert "stopping" in events and "stop_overran" not in events


def test_a_service_still_connecting_stops_at_once_and_logs_its_retries_sparingly(tmp_path):
    log = tmp_path / "assembler.log"
    proc = assembler(f"nats://127.0.0.1:{free_port()}", log)  # nothing listens there
    try:
        wait_for_event(proc, log, "nats_error")
        took = stopped_within(proc, GRACE_S + CLOSE_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert took < 3, took
    refused = [e for e in log_events(log) if e["event"] == "nats_error"]
    assert [e["repeats"] for e in refused] == [2 ** i for i in range(len(refused))]  # 1, 2, 4, ...: not one per attempt


async def test_work_in_hand_that_waits_on_a_dead_server_is_cut_at_the_grace_period(tmp_path, monkeypatch, credentials):
    """An answer in flight that would wait on NATS forever (as the evaluator's publish of a result
    through an outage would): the service still leaves within its grace period and CLOSE_S."""
    logs = capture_logs(tmp_path, monkeypatch)
    port, stop, started = unshared_port(), asyncio.Event(), asyncio.Event()
    with tempfile.TemporaryDirectory() as store:
        server = start_nats_server(port, store, subprocess.DEVNULL, credentials=credentials)
        try:
            url = f"tls://127.0.0.1:{port}"
            client = await connect(url, "tests", role="admin")
            service_nc = await connect(url, "service-under-test", role="assembler")  # it answers the assemble subject

            async def never_done(request):
                started.set()
                await asyncio.Event().wait()  # stands for a publish retried through an outage

            async with Service("testsvc", Config(nats_url=url, stop_grace_s=1.0), stop=stop) as service:
                await service.connect(service_nc)
                await service.responder(1).serve(subjects.ASSEMBLE_SUBJECT, "q", Ping, never_done)
                running = asyncio.create_task(service.run())
                await logs.wait_for("testsvc_ready")
                await client.publish(subjects.ASSEMBLE_SUBJECT, b'{"run_id": "r"}')
                await asyncio.wait_for(started.wait(), 10)
                server.kill()
                server.wait()
                await client.close()
                began = time.monotonic()
                stop.set()
                await asyncio.wait_for(running, 1.0 + CLOSE_S)
            took = time.monotonic() - began
        finally:
            server.kill()
    assert 1.0 <= took < 1.0 + 3, took
    assert service_nc.is_closed
    assert any(e["event"] == "stop_grace_spent" and e["unfinished"] == 1 for e in logs.events())
