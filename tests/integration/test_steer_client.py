"""`steer`, the one call the CLI and the dashboard steer runs with, on a real nats-server: an
unknown or ended run is answered from the registry without asking anyone; a running run that no
planner drives, an answer that does not decode and an ErrorReply are each a SteerError that says
what happened; a planner's answer comes back as it was sent. The answering side here is a plain
responder on STEER_SUBJECT standing in for the planner (tests/integration/test_steering.py
steers a run of the real stack)."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import SteerError
from shared.messaging import subjects
from shared.messaging.bus import decode, encode
from shared.messaging.messages import ErrorReply, Goal, SteerAnswer, SteerRequest
from shared.messaging.steering import steer
from shared.registry.records import RunRecord
from shared.registry.store import Registry


async def run_in(registry: Registry, status: str = "running") -> str:
    run_id = f"steer-{uuid.uuid4().hex[:8]}"
    await registry.create_run(RunRecord(run_id=run_id, goal=Goal(run_id=run_id, goal="digits"), status=status))
    return run_id


async def test_what_keeps_a_run_from_being_steered_is_said_without_a_planner(nc):
    registry = await Registry.open(nc.jetstream())
    ended = await run_in(registry, "stopped")
    orphan = await run_in(registry)
    with pytest.raises(SteerError, match=r"^no run 'nope' in the registry; `researcher runs` lists"):
        await steer(nc, SteerRequest(run_id="nope", action="pause"))
    with pytest.raises(SteerError, match=rf"^run {ended} had already ended: stopped$"):
        await steer(nc, SteerRequest(run_id=ended, action="resume"))
    with pytest.raises(SteerError, match=rf"^no planner answered for run {orphan}, which is still running: is the "
                                          r"stack's planner up \(make ps\)"):
        await steer(nc, SteerRequest(run_id=orphan, action="pause"), timeout=2)


async def test_a_planners_answer_comes_back_and_a_bad_one_is_a_steer_error(nc):
    registry = await Registry.open(nc.jetstream())
    run_id = await run_in(registry)
    replies = {"queue": lambda r: encode(SteerAnswer(run_id=r.run_id, action=r.action, ok=False, status="running",
                                                     message=f"config refused: {sorted(r.config or {})}")),
               "pause": lambda r: encode(ErrorReply(error="malformed SteerRequest: Expected `str`")),
               "resume": lambda r: b"<html>not an answer</html>"}

    async def planner(msg) -> None:
        request = decode(msg.data, SteerRequest, msg.subject)
        await msg.respond(replies[request.action](request))

    sub = await nc.subscribe(subjects.STEER_SUBJECT, cb=planner)
    try:
        answer = await steer(nc, SteerRequest(run_id=run_id, action="queue", by="ana via dashboard",
                                              config={"layers": [], "class_name": "X"}))
        assert (answer.ok, answer.action, answer.message) == (False, "queue", "config refused: ['class_name', 'layers']")
        with pytest.raises(SteerError, match=rf"^run {run_id}: malformed SteerRequest: Expected `str`$"):
            await steer(nc, SteerRequest(run_id=run_id, action="pause"))
        with pytest.raises(SteerError, match=rf"^run {run_id}: the planner's answer could not be read \(malformed"):
            await steer(nc, SteerRequest(run_id=run_id, action="resume"))
    finally:
        await sub.unsubscribe()
