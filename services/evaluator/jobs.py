"""One seed job on an evaluator: train in a container, score on the trusted side, publish the
result; hand the job back when this replica stops before it is done, or when its machinery (the
data set, the Docker engine) fails it, which is no fault of the job's."""

from __future__ import annotations

import asyncio
import secrets
import collections
import time

import msgspec
import nats.errors
import structlog

from shared.errors import MachineryError, MessageError, MessageTooLargeError
from shared.evaluation.in_container import Trained, train_seed
from shared.messaging import subjects
from shared.messaging.bus import decode, encode, publish_event, publish_to_stream, through_outages
from shared.messaging.consumer import Delivery
from shared.messaging.messages import EvalJob, Event, RunEnded, SeedResult
from shared.registry.store import put_weights, weights_artifact
from shared.runtime.config import Config
from shared.runtime.laps import Laps
from shared.sandboxing.containers import ContainerRunner

log = structlog.get_logger()
ENDED_KEPT = 10_000  # ended runs remembered, for their queued jobs (a few bytes each)


class JobHandler:
    """The EVAL consumer's handler on replica `replica`; `stop` set means the replica is stopping."""

    def __init__(self, nc, js, runner: ContainerRunner, config: Config, replica: str, stop: asyncio.Event) -> None:
        self.nc, self.js, self.runner, self.config, self.replica, self.stop = nc, js, runner, config, replica, stop
        self.ended: collections.OrderedDict[str, RunEnded] = collections.OrderedDict()  # run id -> how it ended

    async def on_run_ended(self, msg) -> None:
        """A run ended: its jobs still queued are dropped unrun (the newest ENDED_KEPT runs are remembered)."""
        try:
            ended = decode(msg.data, RunEnded, msg.subject)
        except MessageError as exc:
            log.warning("malformed_message", subject=msg.subject, error=str(exc))
            return
        self.ended[ended.run_id] = ended
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    async def __call__(self, job: EvalJob, delivery: Delivery) -> None:
        """Train and score one seed; publish its result (the consumer then acks). Stopping, it waits
        up to drain_timeout_s for the job, then hands it back for another replica at once. A job
        of a run that has ended is acked unrun: nobody waits for its result; but for a test job while
        its run is testing (it queues them as it ends, and waits for them)."""
        structlog.contextvars.bind_contextvars(iteration=job.iteration, seed=job.seed, job_id=job.job_id)
        ended = self.ended.get(job.run_id)
        if ended is not None and (job.split != "test" or not ended.testing):
            log.info("job_dropped", reason=f"its run ended ({ended.status})")
            return
        laps = Laps()
        started_at = time.time()
        queued_s = max(0.0, started_at - delivery.msg.metadata.timestamp.timestamp())  # the stream's clock: this host's
        log.info("job_started", delivery=delivery.number, rung=job.rung)
        work = asyncio.create_task(asyncio.to_thread(
            train_seed, job, self.runner, timeout_s=self.config.evaluator.train_timeout_s,
            memory=self.config.evaluator.memory, data_config=self.config.data, evaluator=self.replica,
            max_weights_bytes=self.config.evaluator.max_weights_bytes))
        try:
            trained = await self._finish_or_hand_back(work)
        except MachineryError as exc:
            await self._cannot_run(job, delivery, exc)
            return
        if trained is None:
            await delivery.hand_back()
            log.warning("job_handed_back",
                        reason=f"stopping; the job did not finish within {self.config.evaluator.drain_timeout_s:g} s")
            return
        laps.skip()
        result = await self._keep_weights(job, trained)
        laps.lap("store_s")
        # its rung and when it started, on this side's clock (the report shows candidates overlapping)
        result = msgspec.structs.replace(result, rung=job.rung, started_at=started_at, runtime=self.runner.boundary.runtime,
                                         image=self.runner.limits.image,
                                         timings={**result.timings, "queue_s": round(queued_s, 4),
                                                  "store_s": round(laps.seconds["store_s"], 4),
                                                  "job_s": round(laps.total(), 4)})
        # the message id makes a redelivered job's second result a duplicate the stream drops
        try:
            data = encode(result)
        except MessageTooLargeError as exc:  # a result no planner could read: the seed fails saying why, once
            result = SeedResult(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed, ok=False,
                                rung=job.rung, split=job.split, started_at=started_at, reason="result_too_large",
                                error=str(exc), evaluator=self.replica)
            data = encode(result)
        await through_outages(lambda: publish_to_stream(self.js, subjects.results_subject(job.run_id), data,
                                                        headers={"Nats-Msg-Id": job.job_id}), "publish result")
        # the headline figure only: every metric of the seed is in the registry
        log.info("job_done", ok=result.ok, error=result.error, val_accuracy=result.metrics.get("val_accuracy"),
                 duration_s=result.duration_s, weights_kept=result.weights is not None, weights_error=result.weights_error,
                 publish_s=round(laps.lap("publish_s"), 4))

    async def _keep_weights(self, job: EvalJob, trained: Trained) -> SeedResult:
        """The checked weights into the registry's weights bucket (too large for a message), before
        the result that names them is published. One that cannot be stored costs only the weights."""
        if trained.weights is None or not job.keep_weights:  # a cheap rung's weights are never used
            return trained.result
        name = weights_artifact(job.run_id, job.iteration, job.seed, secrets.token_hex(6))  # each delivery's own
        try:
            await through_outages(lambda: put_weights(self.js, name, trained.weights), "store weights")
        except nats.errors.Error as exc:
            log.warning("weights_not_stored", error=f"{type(exc).__name__}: {exc}")
            return msgspec.structs.replace(trained.result, weights_error=f"could not be stored in the registry: {exc}")
        return msgspec.structs.replace(trained.result, weights=name)

    async def _finish_or_hand_back(self, work: asyncio.Task) -> Trained | None:
        """-> the job's result, or None when the replica stopped and the job did not finish in time."""
        stopping = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if work.done():
            return work.result()
        drain_s = self.config.evaluator.drain_timeout_s
        log.info("draining", wait_s=drain_s)
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout=drain_s)
        except asyncio.TimeoutError:
            self.runner.abort_running()  # its container is killed; the thread returns a failure we do not publish
            await asyncio.gather(work, return_exceptions=True)
            return None

    async def _cannot_run(self, job: EvalJob, delivery: Delivery, exc: MachineryError) -> None:
        """Not a failed seed: the job goes back to the queue for another replica (or this one,
        mended), and the run hears which replica could not take it and why."""
        delay_s = self.config.evaluator.nak_delay_s
        await delivery.hand_back(delay_s)
        log.error("evaluator_unavailable", reason=type(exc).__name__, error=str(exc), retry_in_s=delay_s)
        last = delivery.number >= self.config.evaluator.max_deliver
        then = "its last delivery: JetStream dead-letters it" if last else "handed back for another replica"
        await publish_event(self.nc, Event(
            run_id=job.run_id, kind="evaluator_unavailable", iteration=job.iteration,
            message=f"seed {job.seed}: evaluator {self.replica} cannot run it, {then}: {exc}",
            data={"replica": self.replica, "job_id": job.job_id, "seed": job.seed, "reason": type(exc).__name__,
                  "error": str(exc), "delivery": delivery.number, "retry_in_s": delay_s}))
