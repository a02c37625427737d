"""Evaluation jobs JetStream gave up on (max_deliver reached): kept on the dead-letter subject
for inspection and replay, their seeds failed with why, and taken off the work queue."""

from __future__ import annotations

import structlog
from nats.js.errors import NotFoundError

from services.planner.loop import Planner
from shared.messaging import subjects
from shared.messaging.bus import decode, publish_to_stream
from shared.messaging.consumer import Delivery
from shared.messaging.messages import EvalJob, MaxDeliveriesAdvisory

log = structlog.get_logger()


class DeadLetters:
    """The handler of the advisories' consumer."""

    def __init__(self, js, planner: Planner) -> None:
        self.js, self.planner = js, planner

    async def __call__(self, advisory: MaxDeliveriesAdvisory, delivery: Delivery) -> None:
        try:
            raw = await self.js.get_msg(subjects.EVAL_STREAM, advisory.stream_seq)
        except NotFoundError:
            return  # handled before (a redelivered advisory)
        job = decode(raw.data, EvalJob, subjects.EVAL_SUBJECT)
        await publish_to_stream(self.js, subjects.dead_job_subject(job.run_id), raw.data, headers={
            "Nats-Msg-Id": f"dead.{job.job_id}", "Researcher-Deliveries": str(advisory.deliveries)})
        log.warning("job_dead_lettered", run_id=job.run_id, job_id=job.job_id, deliveries=advisory.deliveries)
        await self.planner.on_dead_job(job, advisory.deliveries)
        try:
            await self.js.delete_msg(subjects.EVAL_STREAM, advisory.stream_seq)
        except NotFoundError:
            pass
