"""Evaluator service: pulls one-seed jobs from the EVAL work queue, trains in a container,
scores on the trusted side, publishes the result, then acks. Replicas share the queue."""

from __future__ import annotations

import asyncio

from services.evaluator.jobs import JobHandler
from shared.messaging import subjects
from shared.messaging.messages import EvalJob
from shared.runtime.config import Config
from shared.runtime.service import Service, evaluator_grace_s
from shared.sandboxing.containers import stable_replica_name
from shared.sandboxing.runners import make_eval_runner


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    name = stable_replica_name()
    async with Service("evaluator", config, client_name=f"evaluator-{name}", stop=stop) as service:
        settings = service.config.evaluator
        # stopping, the job in hand gets drain_timeout_s, then is handed back (a message to NATS)
        service.grace_s = evaluator_grace_s(service.config)
        runner = make_eval_runner(service.config, owner=f"evaluator-{name}")
        service.on_stop(runner.close)  # the warm containers go with the replica
        removed = runner.remove_strays()
        boundary = runner.boundary  # after the GPUs are settled: gVisor runs only where it can reach them
        service.health_note = f"containers: {boundary.describe()}"
        runner.start_pool()  # the next job's container starts (and imports torch) while this one trains
        await service.connect(nc, jetstream=True)
        handler = JobHandler(service.nc, service.js, runner, service.config, name, service.stop)
        await service.nc.subscribe(subjects.RUN_ENDED_SUBJECT, cb=handler.on_run_ended)
        await service.consume(
            stream=subjects.EVAL_STREAM, subject=subjects.EVAL_SUBJECT, durable=subjects.EVAL_CONSUMER, type_=EvalJob,
            handle=handler,
            ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver, nak_delay_s=settings.nak_delay_s,
            fetch_batch=1,  # one job at a time: a second one fetched would wait while its ack wait runs out
            keep_claim=True)  # training outlasts the ack wait: in-progress heartbeats keep the job
        await service.run(replica=name, gpus=runner.limits.gpus, strays_removed=removed, pool_size=runner.pool_size,
                          runtime=boundary.runtime, runtime_why=boundary.why)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
