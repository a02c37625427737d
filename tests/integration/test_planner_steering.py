"""The planner's answers to steering (services/planner/steering.py) on a real nats-server and
registry, without Docker: the driver of a run is made but runs no pass, so what is checked is the
answer, the run record and the "steered" events. A pause of a paused run and a resume of a running
one are refused, two pauses at once take one, a broken config is refused with the assembler's
reason, the queue holds at most MAX_QUEUED, and a run that is not this replica's gets silence."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.planner.driver import RunDriver
from services.planner.leases import RunLeases
from services.planner.loop import Planner
from shared.messaging import subjects
from shared.messaging.bus import decode, ensure_streams
from shared.messaging.messages import DatasetFacts, Event, Goal, SteerRequest
from shared.registry.records import MAX_QUEUED, RunRecord
from shared.registry.store import Registry
from shared.runtime.config import load_config

pytestmark = pytest.mark.slow  # a few seconds: the assembler's build imports torch

DIGITS = DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1797,
                      class_names=[str(i) for i in range(10)])
MLP = {"class_name": "HandMLP", "epochs": 2, "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}


async def test_pause_resume_and_queue_are_answered_recorded_and_published(nc):
    js = nc.jetstream()
    await ensure_streams(js)
    registry = await Registry.open(js)
    planner = Planner(nc, js, registry, load_config(environ={}), await RunLeases.open(js, owner="planner-test"))
    run_id = f"steer-{uuid.uuid4().hex[:8]}"
    await registry.create_run(RunRecord(run_id=run_id, goal=Goal(run_id=run_id, goal="digits", max_epochs=2),
                                        dataset_facts=DIGITS))
    events: list[Event] = []

    async def on_event(msg) -> None:
        events.append(decode(msg.data, Event))

    await nc.subscribe(subjects.events_subject(run_id), cb=on_event)
    driver = planner.drivers[run_id] = RunDriver(planner, run_id)
    ask = lambda action, **more: planner.steering.answer(  # noqa: E731
        SteerRequest(run_id=run_id, action=action, by=f"ana via dashboard ({action})", **more))

    not_paused = await ask("resume")
    one, other = await asyncio.gather(ask("pause"), ask("pause"))  # at once: one is taken
    broken = await ask("queue", config={**MLP, "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 7}]})
    too_long = await ask("queue", config={**MLP, "epochs": 50})
    queued = [await ask("queue", config=MLP) for _ in range(MAX_QUEUED + 1)]
    resumed = await ask("resume")
    elsewhere = await planner.steering.answer(SteerRequest(run_id="another-replicas-run", action="pause"))
    await nc.flush()
    run = await registry.get_run(run_id)

    assert not not_paused.ok and not_paused.message == f"run {run_id} is not paused; there is nothing to resume"
    assert sorted((one.ok, other.ok)) == [False, True] and driver.paused() is False  # resumed since
    refused = other if one.ok else one
    assert refused.message in (f"run {run_id} is already paused; `researcher resume` carries it on",
                               f"run {run_id} was paused by another request meanwhile")
    assert not broken.ok and broken.message == ("config refused: model_config cannot be built: the model outputs "
                                                "(B, 7) but num_classes=10 needs (B, 10); end with Flatten and "
                                                "Linear(out_features=10)")
    assert not too_long.ok and "epochs must be an integer from 1 to 2, not 50" in too_long.message
    assert [a.ok for a in queued] == [True] * MAX_QUEUED + [False] and queued[1].queued == 2
    assert queued[0].message.startswith("queued HandMLP: it becomes a candidate once the run is resumed")
    assert f"already has {MAX_QUEUED} configs queued by hand" in queued[-1].message
    assert resumed.ok and resumed.message == f"resumed: the search carries on, {MAX_QUEUED} config(s) queued by hand first"
    assert elsewhere is None  # not this replica's run: another answers
    assert not run.paused and [q.model_config["input_shape"] for q in run.queued] == [[1, 8, 8]] * MAX_QUEUED
    assert [s.action for s in run.steering] == ["pause", *["queue"] * MAX_QUEUED, "resume"]
    assert [(e.data["action"], e.data["by"]) for e in events if e.kind == "steered"] == \
        [(s.action, s.by) for s in run.steering]
