"""NATS and JetStream helpers: connect, declare streams and buckets, decode at the edge."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Awaitable, Callable, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats import errors as nats_errors
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError, ServiceUnavailableError

from shared.messaging import limits, subjects
from shared.errors import MessageError, MessageTooLargeError, NatsUnreachableError
from shared.runtime.log import bind_run
from shared.security.credentials import for_client, inbox_prefix
from shared.messaging.messages import ErrorReply, Event

T = TypeVar("T")
log = structlog.get_logger()


def _not_tls_eof_noise(record: logging.LogRecord) -> bool:
    """asyncio warns at every close of a connection upgraded with start_tls (nats-py's TLS): the
    stream protocol still answers EOF as for plain TCP. Harmless, and it would end every CLI run."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_not_tls_eof_noise)

_decoders: dict[type, msgspec.json.Decoder] = {}
_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """JSON; a message over its type's size limit raises MessageTooLargeError here, where the
    sender can say what it was, rather than at the server or the receiver."""
    data = _encoder.encode(message)
    limit = limits.limit_of(type(message))
    if len(data) > limit:
        raise MessageTooLargeError(type(message).__name__, len(data), limit)
    return data


STREAM_MSG_TOO_LARGE = 10054  # JetStream's err_code: a message over its stream's max_msg_size


async def publish_to_stream(js: JetStreamContext, subject: str, data: bytes, **kwargs):
    """js.publish; a message the stream refuses for its size raises MessageTooLargeError naming
    the stream's limit (the server says only "message size exceeds maximum allowed")."""
    try:
        return await js.publish(subject, data, **kwargs)
    except BadRequestError as exc:
        if exc.err_code != STREAM_MSG_TOO_LARGE:
            raise
        stream, limit = limits.stream_of(subject)
        raise MessageTooLargeError(f"message for stream {stream}", len(data), limit, subject) from exc


def decode(data: bytes, type_: type[T], subject: str = "") -> T:
    """Decode strictly into `type_`; a malformed message raises MessageError naming the path, and
    one over its type's size limit MessageTooLargeError before a byte of it is parsed."""
    if len(data) > limits.limit_of(type_):
        raise MessageTooLargeError(type_.__name__, len(data), limits.limit_of(type_), subject)
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageError(type_.__name__, str(exc), subject) from exc


async def decode_request(msg, type_: type[T]) -> T | None:
    """Decode a request at the edge; a malformed one is answered with an ErrorReply and logged."""
    try:
        return decode(msg.data, type_, msg.subject)
    except MessageError as exc:
        log.warning("rejected_message", error=str(exc))
        await _respond(msg, ErrorReply(error=str(exc)))
        return None


async def _respond(msg, reply: msgspec.Struct) -> None:
    """Answer, when the request named a reply subject (a plain publish did not)."""
    if msg.reply:
        try:
            data = encode(reply)
        except MessageTooLargeError as exc:  # a fault to report, never a requester left to time out
            log.error("reply_too_large", subject=msg.subject, error=str(exc))
            data = encode(ErrorReply(error=str(exc)))
        await msg.respond(data)
    else:
        log.warning("request_without_reply", subject=msg.subject)


class Responder:
    """Answers requests on queue-group subjects, each in a task of its own and at most
    `concurrency` at once; `close()` unsubscribes and waits for the answers in flight."""

    def __init__(self, nc: NATS, concurrency: int) -> None:
        self.nc, self._slots = nc, asyncio.Semaphore(concurrency)
        self._subs: list = []
        self._tasks: set[asyncio.Task] = set()

    async def serve(self, subject: str, queue: str, type_: type[T], work: Callable[[T], Awaitable[msgspec.Struct]],
                    unanswered: Callable[[T, msgspec.Struct], Awaitable[None]] | None = None) -> None:
        """Decode each request as `type_` (a malformed one gets an ErrorReply), bind its run id for
        the logs, and respond with `work(request)`; a fault of `work` is logged and answered with an
        ErrorReply, so no requester waits out its timeout. A request published without a reply
        subject is still worked, and its answer goes to `unanswered` (or the log)."""
        async def answer(msg) -> None:
            async with self._slots:
                request = await decode_request(msg, type_)
                if request is None:
                    return
                bind_run(request.run_id, iteration=getattr(request, "iteration", None))
                try:
                    reply = await work(request)
                except Exception as exc:  # noqa: BLE001 - a fault of the machinery, answered
                    log.exception("request_failed", subject=msg.subject)
                    reply = ErrorReply(error=f"{subject} failed: {type(exc).__name__}: {exc}")
                if msg.reply or unanswered is None:
                    await _respond(msg, reply)
                else:
                    await unanswered(request, reply)

        async def on_message(msg) -> None:
            task = asyncio.create_task(answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._subs.append(await self.nc.subscribe(subject, queue=queue, cb=on_message))

    async def close(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        await asyncio.gather(*self._tasks, return_exceptions=True)  # finish what was asked


# ---- reconnecting: a server restarting is waited out; one gone for good costs little ----
RECONNECT_FIRST_S = 0.5  # the wait before the second attempt (the first is at once), seconds
RECONNECT_MAX_S = 5.0  # the backoff's ceiling: how long a restarted server waits to be found at most, seconds
LOG_REPEATS_EVERY = 100  # a repeated error is logged the 1st, 2nd, 4th, ... 64th time, then every this many
COMMAND_CONNECT_S = 5.0  # a command's (researcher submit, report, ...) wait for its server, seconds


def reconnect_delay(attempts: int) -> float:
    """Seconds before the next reconnect attempt after `attempts` failed ones: none, then doubling
    from RECONNECT_FIRST_S to RECONNECT_MAX_S. (A fixed 0.5 s had a service whose server was gone
    for good try twice a second for as long as it lived.)"""
    return 0.0 if attempts <= 0 else min(RECONNECT_MAX_S, RECONNECT_FIRST_S * 2 ** min(attempts - 1, 16))


def worth_logging(repeats: int) -> bool:
    """Whether the `repeats`-th time in a row an error comes is logged: a server gone for good
    then writes a line every few minutes, not one per attempt."""
    return repeats & (repeats - 1) == 0 or repeats % LOG_REPEATS_EVERY == 0


async def connect(url: str, name: str, *, first_within_s: float | None = None, role: str = "client",
                  credential: str | None = None, errors: list[str] | None = None) -> NATS:
    """Connect with endless reconnects, so a restarting nats-server does not stop a service; the
    reconnects back off (reconnect_delay) and a repeated error is logged sparingly (worth_logging).
    A service stopping closes the client (Service), which ends the reconnecting. first_within_s:
    a command's bound on the first connection (NatsUnreachableError past it), where a service waits
    for its server as long as it takes.

    The connection is TLS with a role's certificate (shared/security/credentials.for_client):
    `credential`, else NATS_CREDENTIALS, else this machine's stack's credential for `role`; with
    none, a plain connection (a server of the user's own). Replies come to the role's own inbox."""
    if first_within_s is not None:
        seen: list[str] = []
        try:
            return await asyncio.wait_for(connect(url, name, role=role, credential=credential, errors=seen),
                                          first_within_s)
        except asyncio.TimeoutError:
            raise NatsUnreachableError(url, first_within_s, seen[-1] if seen else None) from None

    last = {"error": "", "repeats": 0}

    async def on_error(exc: Exception) -> None:
        error = str(exc) or type(exc).__name__
        if errors is not None:
            errors.append(f"{type(exc).__name__}: {error}")
        last["repeats"] = last["repeats"] + 1 if error == last["error"] else 1
        last["error"] = error
        if worth_logging(last["repeats"]):
            log.warning("nats_error", error=error, repeats=last["repeats"])

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        last["repeats"] = 0
        log.info("nats_reconnected")

    def next_server(servers, _info) -> tuple[None, float]:
        # nats-py's hook: None keeps its own choice of server; the delay is ours
        return None, reconnect_delay(min((s.reconnects for s in servers), default=0))

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_FIRST_S,  # between the first connection's attempts (the hook is for reconnects)
        reconnect_to_server_handler=next_server,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **secured(role, credential),
    )


def secured(role: str = "client", credential: str | None = None) -> dict:
    """nats.connect's TLS and inbox options for a role's credential (credentials.for_client); none
    when this machine has no credential for it (a plain server of the user's own)."""
    chosen = for_client(credential, role)
    return {} if chosen is None else {"tls": chosen.ssl_context(), "tls_handshake_first": True,
                                      "inbox_prefix": inbox_prefix(chosen.role)}


async def ensure_streams(js: JetStreamContext) -> None:
    """Declare the streams every service relies on; idempotent, safe from any replica. Each refuses
    a message over its limit (limits.STREAM_LIMITS) on publish."""
    size = limits.STREAM_LIMITS
    declared = [
        StreamConfig(name=subjects.GOALS_STREAM, subjects=[subjects.GOALS_SUBJECT], storage=StorageType.FILE,
                     retention=RetentionPolicy.WORK_QUEUE, duplicate_window=600.0,
                     max_msg_size=size[subjects.GOALS_STREAM]),
        StreamConfig(name=subjects.EVAL_STREAM, subjects=[subjects.EVAL_SUBJECT], storage=StorageType.FILE,
                     retention=RetentionPolicy.WORK_QUEUE, duplicate_window=3600.0,
                     max_msg_size=size[subjects.EVAL_STREAM]),
        StreamConfig(name=subjects.RESULTS_STREAM, subjects=[f"{subjects.RESULTS_SUBJECT_PREFIX}.>"],
                     storage=StorageType.FILE, retention=RetentionPolicy.WORK_QUEUE, duplicate_window=3600.0,
                     max_msg_size=size[subjects.RESULTS_STREAM]),
        StreamConfig(name=subjects.DEAD_STREAM, subjects=[f"{subjects.DEAD_LETTER_SUBJECT}.>"], storage=StorageType.FILE,
                     max_msgs=100_000, discard=DiscardPolicy.OLD, max_msg_size=size[subjects.DEAD_STREAM]),
        StreamConfig(name=subjects.ADVISORIES_STREAM, subjects=[subjects.EVAL_MAX_DELIVERIES_ADVISORY],
                     storage=StorageType.FILE, retention=RetentionPolicy.WORK_QUEUE,
                     max_msg_size=size[subjects.ADVISORIES_STREAM]),
    ]
    for config in declared:
        try:
            await js.add_stream(config)
        except Exception:  # exists with other settings: keep what a running stack has, but its size limit
            await _bound(js, config.name, config.max_msg_size)  # NotFoundError: it could not be created


async def _bound(js: JetStreamContext, stream: str, max_msg_size: int | None) -> None:
    """An existing stream (or a bucket's) given the size limit of this version, its other settings
    kept: a stack created before the limits gets them on its next start. A server that refuses the
    change leaves the stream unbounded, which is logged (the decoders still refuse oversized messages)."""
    info = await js.stream_info(stream)
    if info.config.max_msg_size == max_msg_size:
        return
    try:
        await js.update_stream(dataclasses.replace(info.config, max_msg_size=max_msg_size))
    except nats_errors.Error as exc:
        log.warning("stream_size_limit_not_set", stream=stream, max_msg_size=max_msg_size, error=str(exc))
    else:
        log.info("stream_size_limit_set", stream=stream, max_msg_size=max_msg_size, was=info.config.max_msg_size)


async def key_value(js: JetStreamContext, bucket: str, *, history: int = 5, ttl: float | None = None):
    """The bucket, created on first use; `ttl` (seconds) expires each key that long after its last
    write. A value over the bucket's limit (limits.BUCKET_LIMITS) is refused on put."""
    max_value_size = limits.BUCKET_LIMITS.get(bucket)
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        from nats.js.api import KeyValueConfig

        try:
            return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, ttl=ttl,
                                                            storage=StorageType.FILE, max_value_size=max_value_size))
        except Exception:  # created by another replica meanwhile
            return await js.key_value(bucket)
    if max_value_size is not None:
        await _bound(js, f"KV_{bucket}", max_value_size)
    return kv


async def object_store(js: JetStreamContext, bucket: str):
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        from nats.js.api import ObjectStoreConfig

        try:
            return await js.create_object_store(bucket, ObjectStoreConfig(storage=StorageType.FILE))
        except Exception:
            return await js.object_store(bucket)


async def publish_event(nc: NATS, event: Event) -> None:
    """Progress for live followers; best effort, the registry holds the record."""
    try:
        await nc.publish(subjects.events_subject(event.run_id), encode(event))
    except Exception as exc:  # a lost progress line must never fail the work
        log.warning("event_not_published", error=str(exc), kind=event.kind)


# What a NATS server restarting (or a partition healing) looks like to a client: worth waiting out.
TRANSIENT_ERRORS = (nats_errors.TimeoutError, nats_errors.NoRespondersError, nats_errors.ConnectionClosedError,
                    nats_errors.StaleConnectionError, nats_errors.ConnectionReconnectingError,
                    nats_errors.OutboundBufferLimitError, ServiceUnavailableError, asyncio.TimeoutError)


async def through_outages(op: Callable[[], Awaitable[T]], what: str, *, give_up_s: float = 900.0) -> T:
    """Run `op` until it gets through a NATS outage, backing off from 0.5 s to 5 s; after
    `give_up_s` the last error is raised (a fault a caller must handle)."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + give_up_s, 0.5
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as exc:
            if loop.time() > deadline:
                raise
            log.warning("nats_unavailable_retrying", what=what, error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


async def settle(msg, how: str, **kwargs) -> bool:
    """ack, nak, term or in_progress a JetStream message; False when NATS is away (the message is
    then redelivered after its ack wait, which idempotent handlers absorb)."""
    try:
        await getattr(msg, how)(**kwargs)
        return True
    except (nats_errors.Error, asyncio.TimeoutError) as exc:
        log.warning("settle_failed", how=how, error=f"{type(exc).__name__}: {exc}")
        return False


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
