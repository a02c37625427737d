"""Evaluator service: pulls one-seed jobs from the EVAL work queue, trains in a container,
scores on the trusted side, publishes the result, then acks. Replicas share the queue."""

from __future__ import annotations

import asyncio
import dataclasses

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from services.evaluator.evaluate import evaluate_job
from shared import subjects
from shared.bus import connect, decode, encode, ensure_streams, stop_event
from shared.config import Config, load_config, replica_name
from shared.containers import ContainerRunner, Limits
from shared.errors import MessageError, SandboxUnavailableError
from shared.log import bind_run, configure_logging
from shared.messages import EvalJob

log = structlog.get_logger()


def eval_limits(config: Config, gpus: bool) -> Limits:
    s, e = config.sandbox, config.evaluator
    return Limits(image=s.image, memory=e.memory, cpus=e.cpus, pids=s.pids, tmpfs_size=s.tmpfs_size,
                  tmpfs_inodes=s.tmpfs_inodes, nofile=s.nofile, fsize_bytes=s.fsize_bytes,
                  max_output_bytes=s.max_output_bytes, runtime=s.runtime, gpus=gpus)


def _want_gpus(setting: str, runner_client) -> bool:
    if setting == "all":
        return True
    if setting == "none":
        return False
    try:  # auto: only when the engine knows the nvidia runtime
        return "nvidia" in (runner_client.info().get("Runtimes") or {})
    except Exception:
        return False


def make_eval_runner(config: Config, owner: str) -> ContainerRunner:
    """The training containers' runner, with the GPUs passed through when the setting asks; its
    containers' expiry covers the longest training the configuration allows."""
    runner = ContainerRunner(eval_limits(config, False), owner=owner, max_job_s=config.evaluator.train_timeout_s)
    runner.limits = dataclasses.replace(runner.limits, gpus=_want_gpus(config.evaluator.gpus, runner.client))
    return runner


async def handle(msg, js, runner: ContainerRunner, config: Config, name: str) -> None:
    try:
        job = decode(msg.data, EvalJob, msg.subject)
    except MessageError as exc:
        log.warning("rejected_message", error=str(exc))
        await msg.term()  # never redeliver what can never decode
        return
    bind_run(job.run_id, iteration=job.iteration, seed=job.seed, job_id=job.job_id)
    delivered = msg.metadata.num_delivered
    log.info("job_started", delivery=delivered)

    async def heartbeat() -> None:  # keep the claim while training runs longer than ack_wait
        while True:
            await asyncio.sleep(max(1.0, config.evaluator.ack_wait_s / 3))
            await msg.in_progress()

    beat = asyncio.create_task(heartbeat())
    try:
        result = await asyncio.to_thread(
            evaluate_job, job, runner, timeout_s=config.evaluator.train_timeout_s,
            memory=config.evaluator.memory, val_fraction=config.evaluator.val_fraction, evaluator=name,
            data_dir=config.evaluator.data_dir)
    except SandboxUnavailableError as exc:
        log.error("sandbox_unavailable", error=str(exc))
        await msg.nak(delay=10)  # another replica (or this one, later) takes it
        return
    finally:
        beat.cancel()
    # the message id makes a redelivered job's second result a duplicate the stream drops
    await js.publish(subjects.results_subject(job.run_id), encode(result), headers={"Nats-Msg-Id": job.job_id})
    await msg.ack()
    log.info("job_done", ok=result.ok, error=result.error, metrics=result.metrics, duration_s=result.duration_s)


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("evaluator", config.log_level)
    name = replica_name()
    runner = make_eval_runner(config, owner=f"evaluator-{name}")
    removed = runner.remove_strays()
    nc = nc or await connect(config.nats_url, f"evaluator-{name}")
    js = nc.jetstream()
    await ensure_streams(js)
    consumer = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=config.evaluator.ack_wait_s,
                              max_deliver=config.evaluator.max_deliver, max_ack_pending=-1)
    psub = await js.pull_subscribe(subjects.EVAL_SUBJECT, durable=subjects.EVAL_CONSUMER,
                                   stream=subjects.EVAL_STREAM, config=consumer)
    log.info("evaluator_ready", replica=name, gpus=runner.limits.gpus, strays_removed=removed)
    stop = stop or stop_event()
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
            await handle(msg, js, runner, config, name)  # a stop waits for this job to finish
    await nc.close()  # every fetched message was handled above; drain would wait on the pull subscriptions


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
