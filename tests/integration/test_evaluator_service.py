"""The evaluator service's main, driven with an injected client, configuration and stop against a
real nats-server and Docker: a job whose data set this replica lacks is a fault of the replica,
not of the job: it goes back to the queue (nak, not a failed seed) and the run is told which
replica could not take it and why."""

from __future__ import annotations

import asyncio
import os

import pytest
from nats.js.errors import NotFoundError

from services.evaluator import main as evaluator_main
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import EvalJob, Event, RunEnded, SeedResult, TrainingRecipe
from shared.modelspec.assemble import assemble
from shared.runtime.config import Config, DataConfig, EvaluatorConfig
from tests.integration.test_consumer import until

pytestmark = [pytest.mark.docker]


async def test_a_replica_without_the_data_set_hands_the_job_back_and_tells_the_run(docker_engine, nats_url, nc, tmp_path,
                                                                                   monkeypatch):
    replica = f"tests-nodata-{os.getpid()}"
    monkeypatch.setenv("RESEARCHER_REPLICA", replica)
    config = Config(nats_url=nats_url, data=DataConfig(dir=str(tmp_path / "empty")),
                    evaluator=EvaluatorConfig(gpus="none", pool_size=0, ack_wait_s=60.0, nak_delay_s=0.2, max_deliver=5))
    js = nc.jetstream()
    await ensure_streams(js)
    events: list[Event] = []

    async def on_event(msg) -> None:
        events.append(decode(msg.data, Event, msg.subject))

    await nc.subscribe(subjects.events_subject("nodata"), cb=on_event)
    job = EvalJob.with_recipe(TrainingRecipe(epochs=1), job_id="nodata.it0001.seed0", run_id="nodata", iteration=1, seed=0, dataset="mnist",
                  class_name="Net", source="")
    await js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})
    stop = asyncio.Event()
    service = asyncio.create_task(evaluator_main.main(nc=await connect(nats_url, "evaluator-under-test", role="evaluator"),
                                                      config=config, stop=stop))
    try:
        # handed back with a nak: delivered again long before its 60 s ack wait would bring it back
        await until(lambda: len(events) >= 2 or service.done(), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=60)
    first, second = events[:2]
    assert first.kind == "evaluator_unavailable" and first.iteration == 1
    assert first.data["replica"] == replica and first.data["seed"] == 0 and first.data["reason"] == "DatasetUnavailableError"
    assert f"evaluator {replica!r} cannot load data set 'mnist'" in first.data["error"]
    assert replica in first.message and "handed back" in first.message
    assert [first.data["delivery"], second.data["delivery"]] == [1, 2]
    # no failed seed was published for it: the job is still the queue's
    assert (await js.stream_info(subjects.RESULTS_STREAM)).state.messages == 0
    assert (await js.stream_info(subjects.EVAL_STREAM)).state.messages == 1



async def test_the_queued_jobs_of_an_ended_run_are_dropped_unrun(docker_engine, nats_url, nc, tmp_path, monkeypatch):
    """Candidates still in flight when their run ends leave jobs in the queue: a replica told the run
    ended acks them without training, and goes on with other runs' jobs."""
    monkeypatch.setenv("RESEARCHER_REPLICA", f"tests-ended-{os.getpid()}")
    config = Config(nats_url=nats_url, evaluator=EvaluatorConfig(gpus="none", pool_size=0))
    js = nc.jetstream()
    await ensure_streams(js)
    results: list[SeedResult] = []

    async def on_result(msg) -> None:
        results.append(decode(msg.data, SeedResult, msg.subject))

    await nc.subscribe(f"{subjects.RESULTS_SUBJECT_PREFIX}.>", cb=on_result)
    model = assemble({"class_name": "Tiny", "input_shape": [1, 8, 8], "num_classes": 10,
                      "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]})

    async def queue(run_id: str, seed: int) -> None:
        job = EvalJob.with_recipe(TrainingRecipe(epochs=1), job_id=f"{run_id}.it0001.seed{seed}", run_id=run_id,
                                  iteration=1, seed=seed, dataset="digits", class_name=model.class_name,
                                  source=model.source, subset_size=200)
        await js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})

    stop = asyncio.Event()
    service = asyncio.create_task(evaluator_main.main(nc=await connect(nats_url, "evaluator-under-test", role="evaluator"),
                                                      config=config, stop=stop))
    try:
        # the consumer exists once the service subscribed to the notices (it subscribes first, on one connection)
        await asyncio.wait_for(consumer_created(js), timeout=60)
        await nc.publish(subjects.RUN_ENDED_SUBJECT, encode(RunEnded(run_id="ended-run", status="goal_achieved")))
        await queue("live-run", 0)  # its result: the notice, published before, has long been heard
        await until(lambda: len(results) >= 1 or service.done(), timeout=120)
        await queue("ended-run", 0)
        await queue("live-run", 1)  # one job at a time: the ended run's job was handled before this one
        await until(lambda: len(results) >= 2 or service.done(), timeout=120)
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=60)
    assert [(r.run_id, r.seed, r.ok) for r in results] == [("live-run", 0, True), ("live-run", 1, True)], results
    assert (await js.stream_info(subjects.EVAL_STREAM)).state.messages == 0  # the ended run's job was acked, unrun


async def consumer_created(js) -> None:
    while True:
        try:
            await js.consumer_info(subjects.EVAL_STREAM, subjects.EVAL_CONSUMER)
            return
        except NotFoundError:  # not yet
            await asyncio.sleep(0.05)
