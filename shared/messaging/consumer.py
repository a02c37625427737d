"""The one pull-consumer loop of the services, beside bus.Responder for requests.

Each JetStream message is decoded at the edge into its schema and handed to a handler with a
Delivery. The handler returning settles the message (ack); a message that cannot decode is
terminated (it never will); a handler that raises has its message nak'ed with a delay, so it
comes back. NATS going away never ends the loop: a fetch that fails is retried, a settle that
fails leaves the message to its ack wait (bus.settle).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError

from shared.errors import MessageError
from shared.messaging.bus import decode, settle, sleep_unless, worth_logging
from shared.runtime.log import bind_run

T = TypeVar("T")
log = structlog.get_logger()

FETCH_WAIT_S = 1.0  # one fetch's wait for messages: how soon a stopping loop notices, seconds
RETRY_S = 1.0  # pause after a failed fetch (NATS reconnecting), seconds


class Delivery:
    """One message in a handler's hands: how often it was delivered, and the means to keep its
    claim or to hand it back. Settled by the handler, or acked when the handler returns."""

    def __init__(self, msg) -> None:
        self.msg, self.settled = msg, False

    @property
    def number(self) -> int:
        return self.msg.metadata.num_delivered  # 1 on the first delivery

    async def in_progress(self) -> None:
        """Restart the ack wait: the handler is still at it."""
        await settle(self.msg, "in_progress")

    async def hand_back(self, delay_s: float = 0.0) -> None:
        """Nak: deliver the message again (to any replica) after `delay_s` seconds; counts as a delivery."""
        self.settled = True
        await settle(self.msg, "nak", **({"delay": delay_s} if delay_s > 0 else {}))


class Consumer(Generic[T]):
    """A durable pull consumer on `stream` and `subject`, created or updated to these settings,
    whose messages are decoded as `type_` and passed one at a time to `handle(message, delivery)`.

    keep_claim: while a handler runs, send in-progress every third of the ack wait, so work that
    takes longer than the ack wait (training) is not delivered to a second replica meanwhile.
    on_malformed: what becomes of a message that does not decode, besides being logged and
    terminated (a goal that still names its run becomes a failed run); it may raise the error back.
    """

    def __init__(self, js: JetStreamContext, *, stream: str, subject: str, durable: str, type_: type[T],
                 handle: Callable[[T, Delivery], Awaitable[None]], ack_wait_s: float, max_deliver: int,
                 fetch_batch: int = 1, nak_delay_s: float = 0.0, keep_claim: bool = False,
                 on_malformed: Callable[[bytes, MessageError], Awaitable[None]] | None = None) -> None:
        self.js, self.stream, self.subject, self.durable, self.type_, self.handle = js, stream, subject, durable, type_, handle
        self.on_malformed = on_malformed
        self.fetch_batch, self.nak_delay_s, self.keep_claim = fetch_batch, nak_delay_s, keep_claim
        self.config = ConsumerConfig(name=durable, durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
                                     ack_wait=ack_wait_s, max_deliver=max_deliver, max_ack_pending=-1)
        self._psub = None

    async def subscribe(self, wait_for_stream: bool = False) -> None:
        """Create the durable consumer, or update the one a replica made before (settings changed
        in the configuration reach a running stack), then bind a pull subscription to it.
        wait_for_stream: a stream not declared yet (only the planner declares them, and it may start
        after this service) is waited for, with a log line now and then."""
        waited = 0
        while True:
            try:
                await self.js.add_consumer(self.stream, self.config)
                break
            except NotFoundError:  # the stream: not declared yet
                if not wait_for_stream:
                    raise
                waited += 1
                if worth_logging(waited):
                    log.info("waiting_for_stream", stream=self.stream, note="the planner declares it when it starts")
                await asyncio.sleep(min(2.0, 0.1 * waited))
            except BadRequestError as exc:  # a setting the server cannot change on a live consumer: keep it
                log.warning("consumer_not_updated", durable=self.durable, error=str(exc))
                break
        self._psub = await self.js.pull_subscribe_bind(self.durable, self.stream)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and handle until `stop` is set; what was fetched is handled before leaving."""
        if self._psub is None:
            await self.subscribe()
        while not stop.is_set():
            try:
                msgs = await self._psub.fetch(self.fetch_batch, timeout=FETCH_WAIT_S)
            except (NatsTimeoutError, asyncio.TimeoutError):
                continue  # nothing to do
            except Exception as exc:  # NATS reconnecting: wait and pull again
                log.warning("fetch_failed", stream=self.stream, error=f"{type(exc).__name__}: {exc}")
                await sleep_unless(stop, RETRY_S)
                continue
            for msg in msgs:
                await self._deliver(msg)

    async def _deliver(self, msg) -> None:
        try:
            message = decode(msg.data, self.type_, msg.subject)
        except MessageError as exc:
            log.warning("rejected_message", error=str(exc))
            if self.on_malformed is not None:
                try:
                    await self.on_malformed(msg.data, exc)
                except MessageError:
                    pass  # nothing more to do with it than the log line above
                except Exception:  # NATS away while it was being recorded, say: try it again later
                    log.exception("handler_failed", stream=self.stream, malformed=True)
                    await settle(msg, "nak", **({"delay": self.nak_delay_s} if self.nak_delay_s > 0 else {}))
                    return
            await settle(msg, "term")  # never redeliver what can never decode
            return
        bind_run(getattr(message, "run_id", None), subject=msg.subject)
        delivery = Delivery(msg)
        beat = asyncio.create_task(self._keep_claim(delivery)) if self.keep_claim else None
        try:
            await self.handle(message, delivery)
        except MessageError as exc:  # decoded, but refused by the handler's own checks
            log.warning("rejected_message", error=str(exc))
            await settle(msg, "term")
        except Exception:
            log.exception("handler_failed", stream=self.stream, delivery=delivery.number)
            await delivery.hand_back(self.nak_delay_s)
        else:
            if not delivery.settled:
                await settle(msg, "ack")
        finally:
            if beat:
                beat.cancel()

    async def _keep_claim(self, delivery: Delivery) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.ack_wait / 3))
            await delivery.in_progress()
