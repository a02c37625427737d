"""The one service skeleton (shared/runtime/service.py), through the real mains driven with an
injected client, configuration and stop, against a real nats-server: ready line, health file,
answers and consumers wired from the configuration, a clean stop; clean-ups run on any exit."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import msgspec
import pytest

from services.assembler import main as assembler_main
from services.planner import main as planner_main
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import AssembleReply, AssembleRequest, Goal
from shared.runtime.config import AssemblerConfig, Config, PlannerConfig
from shared.runtime.service import Service
from tests.integration.test_consumer import until


class Logs:
    """The JSON lines the services write to stdout, here a file of the test's own."""

    def __init__(self, path) -> None:
        self.path = path

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.startswith("{")]

    async def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        async def poll() -> dict:
            while True:
                found = [e for e in self.events() if e.get("event") == event]
                if found:
                    return found[0]
                await asyncio.sleep(0.02)
        return await asyncio.wait_for(poll(), timeout)


def capture_logs(tmp_path, monkeypatch) -> Logs:
    """stdout, where configure_logging points the services' logs, as a file that outlives the test
    (pytest's capture closes before the clients' teardown logs their disconnect). Call it in the
    test itself: pytest sets sys.stdout again as each phase starts."""
    path = tmp_path / "stdout.log"
    monkeypatch.setattr(sys, "stdout", open(path, "w", buffering=1))
    return Logs(path)


async def start(main, nats_url: str, config: Config):
    """The service as its own role (services.<role>.main), held to that role's permissions."""
    service_nc = await connect(nats_url, "service-under-test", role=main.__module__.split(".")[1])
    stop = asyncio.Event()
    return service_nc, stop, asyncio.create_task(main(nc=service_nc, config=config, stop=stop))


async def test_the_assembler_answers_beats_its_health_file_and_stops_cleanly(nats_url, nc, tmp_path, monkeypatch):
    logs = capture_logs(tmp_path, monkeypatch)
    health = tmp_path / "health"
    monkeypatch.setenv("RESEARCHER_HEALTH_FILE", str(health))
    config = Config(nats_url=nats_url, assembler=AssemblerConfig(concurrency=2))
    service_nc, stop, task = await start(assembler_main.main, nats_url, config)
    ready = await logs.wait_for("assembler_ready")
    assert ready["service"] == "assembler" and ready["tools_llm"] is None
    request = AssembleRequest(run_id="svc", iteration=1, model_config={
        "class_name": "Net", "input_shape": [1, 8, 8], "num_classes": 10,
        "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]})
    reply = decode((await nc.request(subjects.ASSEMBLE_SUBJECT, encode(request), timeout=10)).data, AssembleReply)
    assert reply.ok and reply.class_name == "Net", reply.error
    malformed = json.loads((await nc.request(subjects.ASSEMBLE_SUBJECT, b"[1, 2", timeout=10)).data)
    assert malformed["ok"] is False and "malformed AssembleRequest" in malformed["error"]
    assert health.exists()  # touched as soon as the service is ready and connected
    stop.set()
    await asyncio.wait_for(task, timeout=20)
    assert not health.exists()  # gone on the way out: no longer ready for work
    assert service_nc.is_closed


async def test_the_planner_takes_its_consumer_settings_from_the_configuration(nats_url, nc, tmp_path, monkeypatch):
    logs = capture_logs(tmp_path, monkeypatch)
    settings = PlannerConfig(ack_wait_s=11.0, max_deliver=4, fetch_batch=2, nak_delay_s=0.1)
    service_nc, stop, task = await start(planner_main.main, nats_url, Config(nats_url=nats_url, planner=settings))
    await logs.wait_for("planner_ready")
    js = nc.jetstream()
    for stream, durable in ((subjects.GOALS_STREAM, subjects.GOALS_CONSUMER),
                            (subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER),
                            (subjects.ADVISORIES_STREAM, subjects.DEAD_LETTERS_CONSUMER)):
        info = await js.consumer_info(stream, durable)
        assert (info.config.ack_wait, info.config.max_deliver) == (11.0, 4), durable
    # a goal that cannot decode, and one that decodes but fails the goal's checks: both terminated
    terminated = []

    async def on_terminated(msg) -> None:
        terminated.append(msgspec.json.decode(msg.data)["stream_seq"])

    await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{subjects.GOALS_STREAM}.{subjects.GOALS_CONSUMER}",
                       cb=on_terminated)
    await nc.flush()
    await js.publish(subjects.GOALS_SUBJECT, b'{"goal": 1}')
    await js.publish(subjects.GOALS_SUBJECT, encode(Goal(run_id=f"bad id {uuid.uuid4().hex[:4]}", goal="g")))
    await until(lambda: len(terminated) == 2)
    assert terminated == [1, 2]
    rejected = [e["error"] for e in logs.events() if e.get("event") == "rejected_message"]
    assert "malformed Goal" in rejected[0] and "run_id must be 1-64 letters" in rejected[1]
    stop.set()
    await asyncio.wait_for(task, timeout=20)
    assert service_nc.is_closed


async def test_clean_ups_run_newest_first_and_the_connection_closes_when_wiring_fails(nats_url):
    ran = []

    async def close_client() -> None:
        ran.append("client")

    service_nc = await connect(nats_url, "service-under-test", role="admin")
    with pytest.raises(RuntimeError, match="wiring failed"):
        async with Service("testsvc", Config(nats_url=nats_url)) as service:
            service.on_stop(lambda: ran.append("containers"))  # a blocking clean-up runs in a thread
            service.on_stop(close_client)
            await service.connect(service_nc, asyncio.Event(), jetstream=True)
            raise RuntimeError("wiring failed")
    assert ran == ["client", "containers"]
    assert service_nc.is_closed


async def test_a_periodic_task_that_fails_is_logged_and_tried_again(nats_url, tmp_path, monkeypatch):
    logs = capture_logs(tmp_path, monkeypatch)
    calls = []
    stop = asyncio.Event()

    async def flaky() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("NATS away")
        if len(calls) == 2:
            stop.set()

    service_nc = await connect(nats_url, "service-under-test", role="admin")
    async with Service("testsvc", Config(nats_url=nats_url)) as service:
        await service.connect(service_nc, stop)
        await ensure_streams(service_nc.jetstream())
        service.every(0.05, flaky, "flaky")
        await asyncio.wait_for(service.run(), timeout=20)
    assert calls == [0, 1]
    assert logs.events()[0]["event"] == "testsvc_ready"
    assert any(e["event"] == "flaky_failed" and "NATS away" in e["error"] for e in logs.events())
