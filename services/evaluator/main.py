"""Evaluator service: pulls one-seed jobs from the EVAL work queue, trains in a container,
scores on the trusted side, publishes the result, then acks. Replicas share the queue."""

from __future__ import annotations

import asyncio
import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from shared.evaluation.in_container import evaluate_job
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams, settle, stop_event, through_outages
from shared.runtime.config import Config, load_config
from shared.sandboxing.containers import ContainerRunner, stable_replica_name
from shared.sandboxing.runners import make_eval_runner
from shared.errors import MessageError, SandboxUnavailableError
from shared.runtime.health import beat
from shared.runtime.log import bind_run, configure_logging
from shared.messaging.messages import EvalJob

log = structlog.get_logger()


async def handle(msg, js, runner: ContainerRunner, config: Config, name: str, stop: asyncio.Event) -> None:
    """Train and score one seed job; publish its result, then ack. Stopping, it waits up to
    drain_timeout_s for the job, then hands it back (nak) for another replica at once."""
    try:
        job = decode(msg.data, EvalJob, msg.subject)
    except MessageError as exc:
        log.warning("rejected_message", error=str(exc))
        await settle(msg, "term")  # never redeliver what can never decode
        return
    bind_run(job.run_id, iteration=job.iteration, seed=job.seed, job_id=job.job_id)
    log.info("job_started", delivery=msg.metadata.num_delivered)

    async def heartbeat() -> None:  # keep the claim while training runs longer than ack_wait
        while True:
            await asyncio.sleep(max(1.0, config.evaluator.ack_wait_s / 3))
            await settle(msg, "in_progress")

    beat_task = asyncio.create_task(heartbeat())
    work = asyncio.create_task(asyncio.to_thread(
        evaluate_job, job, runner, timeout_s=config.evaluator.train_timeout_s, memory=config.evaluator.memory,
        val_fraction=config.evaluator.val_fraction, evaluator=name, data_dir=config.evaluator.data_dir))
    try:
        result = await _finish_or_hand_back(work, stop, config.evaluator.drain_timeout_s, runner)
    except SandboxUnavailableError as exc:
        log.error("sandbox_unavailable", error=str(exc))
        await settle(msg, "nak", delay=10)  # another replica (or this one, later) takes it
        return
    finally:
        beat_task.cancel()
    if result is None:
        await settle(msg, "nak")
        log.warning("job_handed_back", reason=f"stopping; the job did not finish within {config.evaluator.drain_timeout_s:g} s")
        return
    # the message id makes a redelivered job's second result a duplicate the stream drops
    await through_outages(lambda: js.publish(subjects.results_subject(job.run_id), encode(result),
                                             headers={"Nats-Msg-Id": job.job_id}), "publish result")
    await settle(msg, "ack")
    log.info("job_done", ok=result.ok, error=result.error, metrics=result.metrics, duration_s=result.duration_s)


async def _finish_or_hand_back(work: asyncio.Task, stop: asyncio.Event, drain_s: float, runner: ContainerRunner):
    """-> the job's result, or None when the service stopped and the job did not finish in time."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if work.done():
        return work.result()
    log.info("draining", wait_s=drain_s)
    try:
        return await asyncio.wait_for(asyncio.shield(work), timeout=drain_s)
    except asyncio.TimeoutError:
        runner.abort_running()  # its container is killed; the thread returns a failure we do not publish
        await asyncio.gather(work, return_exceptions=True)
        return None


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("evaluator", config.log_level)
    name = stable_replica_name()
    runner = make_eval_runner(config, owner=f"evaluator-{name}")
    removed = runner.remove_strays()
    runner.start_pool()  # the next job's container starts (and imports torch) while this one trains
    nc = nc or await connect(config.nats_url, f"evaluator-{name}")
    js = nc.jetstream()
    await ensure_streams(js)
    consumer = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=config.evaluator.ack_wait_s,
                              max_deliver=config.evaluator.max_deliver, max_ack_pending=-1)
    psub = await js.pull_subscribe(subjects.EVAL_SUBJECT, durable=subjects.EVAL_CONSUMER,
                                   stream=subjects.EVAL_STREAM, config=consumer)
    log.info("evaluator_ready", replica=name, gpus=runner.limits.gpus, strays_removed=removed,
             pool_size=runner.pool_size)
    stop = stop or stop_event()
    health = asyncio.create_task(beat(nc, stop))
    while not stop.is_set():
        try:
            msgs = await psub.fetch(1, timeout=1.0)
        except (NatsTimeoutError, asyncio.TimeoutError):
            continue
        except Exception as exc:  # NATS reconnecting: wait and pull again
            log.warning("fetch_failed", error=str(exc))
            await asyncio.sleep(1.0)
            continue
        for msg in msgs:
            await handle(msg, js, runner, config, name, stop)  # a stop drains this job, or hands it back
    await health
    await asyncio.to_thread(runner.close)  # the warm containers go with the replica
    await nc.close()  # every fetched message was handled above; drain would wait on the pull subscriptions


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
