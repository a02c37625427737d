"""The one pull-consumer loop (shared/messaging/consumer.py) against a real nats-server: what
cannot decode is terminated, a failing handler's message comes back, the settings given are the
consumer's, and a stop finishes the message in hand."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from shared.messaging import subjects
from shared.errors import MessageError
from shared.messaging.bus import encode, ensure_streams
from shared.messaging.consumer import Consumer, Delivery
from shared.messaging.messages import SeedResult


def result(run_id: str, seed: int = 0) -> SeedResult:
    return SeedResult(job_id=f"{run_id}.it0001.seed{seed}", run_id=run_id, iteration=1, seed=seed, ok=True)


class Recorder:
    """A handler that records what it got, failing (raising) on the deliveries it is told to."""

    def __init__(self, fail_on: tuple[int, ...] = ()) -> None:
        self.fail_on = fail_on
        self.got: list[tuple[SeedResult, int]] = []

    async def __call__(self, message: SeedResult, delivery: Delivery) -> None:
        self.got.append((message, delivery.number))
        if delivery.number in self.fail_on:
            raise RuntimeError("handler bug")


@pytest.fixture
async def js(nc):
    js = nc.jetstream()
    await ensure_streams(js)
    return js


def consumer(js, handle, **settings) -> Consumer:
    durable = f"test-{uuid.uuid4().hex[:8]}"
    return Consumer(js, stream=subjects.RESULTS_STREAM, subject=f"{subjects.RESULTS_SUBJECT_PREFIX}.>", durable=durable,
                    type_=SeedResult, handle=handle, **{"ack_wait_s": 30.0, "max_deliver": 3, **settings})


async def until(predicate, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def terminations(nc, c: Consumer) -> list:
    """The server's advisories of the messages `c` terminated, as they come."""
    seen: list = []
    advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{c.stream}.{c.durable}"

    async def on_advisory(msg) -> None:
        seen.append(msgspec.json.decode(msg.data))

    await nc.subscribe(advisory, cb=on_advisory)
    await nc.flush()
    return seen


async def running(c: Consumer):
    stop = asyncio.Event()
    await c.subscribe()
    return stop, asyncio.create_task(c.run(stop))


async def stopped(stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def test_settings_given_are_the_consumers_and_a_second_subscribe_updates_them(js):
    first = consumer(js, Recorder(), ack_wait_s=12.0, max_deliver=4, fetch_batch=3)
    await first.subscribe()
    info = await js.consumer_info(subjects.RESULTS_STREAM, first.durable)
    assert (info.config.ack_wait, info.config.max_deliver, info.config.ack_policy) == (12.0, 4, "explicit")
    assert info.config.filter_subject == f"{subjects.RESULTS_SUBJECT_PREFIX}.>"
    # a replica started with changed settings: the running stack's consumer takes them
    again = Consumer(js, stream=first.stream, subject=first.subject, durable=first.durable, type_=SeedResult,
                     handle=Recorder(), ack_wait_s=20.0, max_deliver=6)
    await again.subscribe()
    info = await js.consumer_info(subjects.RESULTS_STREAM, first.durable)
    assert (info.config.ack_wait, info.config.max_deliver) == (20.0, 6)


async def test_a_message_that_cannot_decode_is_terminated_and_never_handled(nc, js):
    handler = Recorder()
    c = consumer(js, handler)
    terminated = await terminations(nc, c)
    run_id = f"bad-{uuid.uuid4().hex[:6]}"
    await js.publish(subjects.results_subject(run_id), b'{"job_id": 7}')
    await js.publish(subjects.results_subject(run_id), encode(result(run_id)))
    stop, task = await running(c)
    await until(lambda: terminated and handler.got)
    await stopped(stop, task)
    assert [(m.run_id, n) for m, n in handler.got] == [(run_id, 1)]  # only the good one, once
    assert [t["stream_seq"] for t in terminated] == [1]
    info = await js.consumer_info(subjects.RESULTS_STREAM, c.durable)
    assert info.num_redelivered == 0 and info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_handler_that_raises_gets_its_message_again_after_the_nak_delay(js):
    handler = Recorder(fail_on=(1,))
    c = consumer(js, handler, ack_wait_s=60.0, nak_delay_s=0.2)  # back long before the ack wait
    run_id = f"retry-{uuid.uuid4().hex[:6]}"
    await js.publish(subjects.results_subject(run_id), encode(result(run_id)))
    stop, task = await running(c)
    await until(lambda: len(handler.got) == 2)
    await stopped(stop, task)
    assert [n for _, n in handler.got] == [1, 2]
    info = await js.consumer_info(subjects.RESULTS_STREAM, c.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acked the second time


async def test_a_handler_can_hand_its_message_back_itself(js):
    handed_back = []

    async def hand_back_first(message: SeedResult, delivery: Delivery) -> None:
        handed_back.append(delivery.number)
        if delivery.number == 1:
            await delivery.hand_back()  # not acked by the loop after this

    c = consumer(js, hand_back_first)
    run_id = f"back-{uuid.uuid4().hex[:6]}"
    await js.publish(subjects.results_subject(run_id), encode(result(run_id)))
    stop, task = await running(c)
    await until(lambda: len(handed_back) == 2)
    await stopped(stop, task)
    assert handed_back == [1, 2]


async def test_a_stop_finishes_the_message_in_hand_then_returns(js):
    started, release = asyncio.Event(), asyncio.Event()
    finished = []

    async def slow(message: SeedResult, delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(message.seed)

    c = consumer(js, slow)
    run_id = f"stop-{uuid.uuid4().hex[:6]}"
    await js.publish(subjects.results_subject(run_id), encode(result(run_id, seed=3)))
    stop, task = await running(c)
    await asyncio.wait_for(started.wait(), timeout=10)
    stop.set()
    assert not task.done()  # still in the handler
    release.set()
    await asyncio.wait_for(task, timeout=10)
    assert finished == [3]
    # the ack is a publish the server applies on its own time: ask until it has
    pending = [None]

    async def settled() -> bool:
        info = await js.consumer_info(subjects.RESULTS_STREAM, c.durable)
        pending[0] = (info.num_ack_pending, info.num_pending)
        return pending[0] == (0, 0)

    for _ in range(200):
        if await settled():
            break
        await asyncio.sleep(0.02)
    assert pending[0] == (0, 0)


async def test_a_handler_refusing_a_decoded_message_with_a_message_error_terminates_it(nc, js):
    calls = []

    async def refuse(message: SeedResult, delivery: Delivery) -> None:
        calls.append(delivery.number)
        raise MessageError("SeedResult", "seed out of range", "test")

    c = consumer(js, refuse, nak_delay_s=0.0)
    terminated = await terminations(nc, c)
    run_id = f"refuse-{uuid.uuid4().hex[:6]}"
    await js.publish(subjects.results_subject(run_id), encode(result(run_id)))
    await js.publish(subjects.results_subject(run_id), encode(result(run_id, seed=1)))
    stop, task = await running(c)
    await until(lambda: len(terminated) == 2)
    await stopped(stop, task)
    assert calls == [1, 1]  # each once: terminated, not redelivered
    info = await js.consumer_info(subjects.RESULTS_STREAM, c.durable)
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
