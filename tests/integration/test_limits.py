"""The server bounds what is sent: each stream and bucket refuses a message over its limit, and
the publisher is told the stream, the size and the limit; a stack created before the limits gets
them on its next start. A real nats-server (conftest's)."""

import pytest
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from shared.errors import MessageTooLargeError
from shared.messaging import limits, subjects
from shared.messaging.bus import ensure_streams, key_value, publish_to_stream


async def test_a_stream_refuses_an_oversized_message_and_the_publisher_is_told_its_limit(nc):
    js = nc.jetstream()
    await ensure_streams(js)
    limit = limits.STREAM_LIMITS[subjects.GOALS_STREAM]
    assert (await js.stream_info(subjects.GOALS_STREAM)).config.max_msg_size == limit
    with pytest.raises(BadRequestError, match="message size exceeds maximum allowed"):  # the server's own word
        await js.publish(subjects.GOALS_SUBJECT, b"x" * (limit + 1))
    with pytest.raises(MessageTooLargeError) as refused:
        await publish_to_stream(js, subjects.GOALS_SUBJECT, b"x" * (limit + 1))
    assert str(refused.value).startswith(f"message for stream GOALS on 'research.goals' refused: {limit + 1:,} bytes, "
                                         f"over the limit of {limit:,} bytes")
    await publish_to_stream(js, subjects.GOALS_SUBJECT, b"x" * limit)  # at the limit it is kept
    assert (await js.stream_info(subjects.GOALS_STREAM)).state.messages == 1


async def test_a_bucket_refuses_a_value_over_its_limit(nc):
    js = nc.jetstream()
    kv = await key_value(js, subjects.LEASES_BUCKET, history=1, ttl=30)
    limit = limits.BUCKET_LIMITS[subjects.LEASES_BUCKET]
    await kv.put("run-1", b"r" * limit)
    with pytest.raises(BadRequestError, match="message size exceeds maximum allowed"):
        await kv.put("run-1", b"r" * (limit + 1))


async def test_streams_and_buckets_of_an_older_stack_get_their_limits_keeping_their_messages(nc):
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=subjects.EVAL_STREAM, subjects=[subjects.EVAL_SUBJECT],
                                     storage=StorageType.FILE, retention=RetentionPolicy.WORK_QUEUE,
                                     duplicate_window=600.0))  # as before the limits, another window too
    await js.publish(subjects.EVAL_SUBJECT, b"a queued job")
    await js.create_key_value(KeyValueConfig(bucket=subjects.RUNS_BUCKET, history=5, storage=StorageType.FILE))
    await ensure_streams(js)
    await key_value(js, subjects.RUNS_BUCKET)
    info = await js.stream_info(subjects.EVAL_STREAM)
    assert info.config.max_msg_size == limits.STREAM_LIMITS[subjects.EVAL_STREAM]
    assert info.config.duplicate_window == 600.0 and info.state.messages == 1  # the rest as it was
    runs = await js.stream_info(f"KV_{subjects.RUNS_BUCKET}")
    assert runs.config.max_msg_size == limits.BUCKET_LIMITS[subjects.RUNS_BUCKET]
