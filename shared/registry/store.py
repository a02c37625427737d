"""The registry: run and iteration records in JetStream KV, artifacts in the object store.

Every replica on every machine sees the same history. Updates go through the KV revision
(compare-and-set), so two writers never silently overwrite each other.

Beside the records, an index of the running runs (RUNNING_BUCKET, one key each): a planner's lease
scan, every few seconds, lists it instead of reading thousands of finished runs. The record is the
truth and is always written first, so a crash between the two writes leaves at worst a finished
run in the index (a scan that claims it finds it ended), never a running run out of it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ObjectNotFoundError,
)

from shared.messaging import subjects
from shared.messaging.bus import key_value, object_store
from shared.messaging.messages import TERMINAL_STATUSES, SeedResult
from shared.registry.records import IterationRecord, RunRecord, upgrade_run

R = TypeVar("R", bound=msgspec.Struct)


_UPGRADES: dict[type, Callable[[dict[str, Any]], dict[str, Any]]] = {RunRecord: upgrade_run}


def _decode_record(data: bytes, type_: type[R]) -> R:
    """Strictly into `type_`; a record of an older shape is upgraded first (records.py)."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError:
        upgrade = _UPGRADES.get(type_)
        if upgrade is None:
            raise
        return msgspec.convert(upgrade(msgspec.json.decode(data)), type_)


class ConflictError(Exception):
    """A compare-and-set lost too many times in a row."""


def iteration_key(run_id: str, iteration: int) -> str:
    return f"{run_id}.it{iteration:04d}"


def seed_key(run_id: str, iteration: int, seed: int, rung: int | None = None, split: str = "val") -> str:
    """A seed's result at the full budget (rung None, as every result was before rungs) or at a rung;
    on the held-out test split (`split` "test": the run's best candidate, at its end) apart."""
    at = ".test" if split == "test" else "" if rung is None else f".r{rung}"
    return f"{iteration_key(run_id, iteration)}{at}.seed{seed}"


WEIGHTS_SUFFIX = ".safetensors"


def weights_artifact(run_id: str, iteration: int, seed: int, token: str = "") -> str:
    """The object name of a seed's trained weights, named like its iteration's code and plots. The
    evaluator adds a token of its own, so no put ever replaces an object (its credential may not
    purge a replaced one's chunks)."""
    return f"{run_id}/it{iteration:04d}/seed{seed}{f'-{token}' if token else ''}{WEIGHTS_SUFFIX}"


def is_weights(name: str) -> bool:
    """Whether an artifact's name is a seed's weights (kept in WEIGHTS_BUCKET, or in the artifacts
    of a run stored before that bucket existed)."""
    return name.endswith(WEIGHTS_SUFFIX)


class Registry:
    """The planner opens it to write (its buckets made on first use); readers (the CLI, a dashboard)
    open it read-only, `Registry.read(js)`, where a bucket not made yet reads as empty: their
    credentials may not make one, nor write any."""

    def __init__(self, js: JetStreamContext, runs, iterations, artifacts, running, weights=None) -> None:
        self.js, self._runs, self._iterations, self._artifacts = js, runs, iterations, artifacts
        self._running = running  # the index of running runs
        self._weights = weights
        self._read_only = False

    @classmethod
    async def open(cls, js: JetStreamContext) -> "Registry":
        registry = cls(
            js,
            await key_value(js, subjects.RUNS_BUCKET),
            await key_value(js, subjects.ITERATIONS_BUCKET),
            await object_store(js, subjects.ARTIFACTS_BUCKET),
            await key_value(js, subjects.RUNNING_BUCKET, history=1),  # a key's past is of no use
            await object_store(js, subjects.WEIGHTS_BUCKET),
        )
        await registry._backfill_index()
        return registry

    @classmethod
    async def read(cls, js: JetStreamContext, weights: bool = True) -> "Registry":
        """Read-only: the buckets that exist; the rest read as empty. Reads by message get and
        stream info alone, never through a consumer: a reader's credential may not create one (a
        push consumer's deliver subject is anyone's to choose: it would publish the registry's
        messages wherever its creator pleased). weights=False: without the trained weights (the
        dashboard's credential may not read them)."""
        registry = cls(js, await _existing(js.key_value, subjects.RUNS_BUCKET),
                       await _existing(js.key_value, subjects.ITERATIONS_BUCKET),
                       await _existing(js.object_store, subjects.ARTIFACTS_BUCKET), None,
                       await _existing(js.object_store, subjects.WEIGHTS_BUCKET) if weights else None)
        registry._read_only = True
        return registry

    @property
    def missing_buckets(self) -> bool:
        """A reader opened before the planner made the registry's buckets reads them as empty: it
        opens the registry again (`Registry.read`) until this is False."""
        return any(b is None for b in (self._runs, self._iterations, self._artifacts))

    # ---- generic record access ----
    async def _get(self, kv, key: str, type_: type[R]) -> tuple[R, int] | None:
        if kv is None:  # read-only, and the bucket is not made yet
            return None
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError, NotFoundError):
            return None
        if entry.value is None:
            return None
        return _decode_record(entry.value, type_), entry.revision

    async def _update(self, kv, key: str, type_: type[R], change: Callable[[R], R]) -> R:
        for _ in range(20):
            current = await self._get(kv, key, type_)
            if current is None:
                raise KeyError(key)
            record, revision = current
            updated = change(record)
            try:
                await kv.update(key, msgspec.json.encode(updated), last=revision)
                return updated
            except KeyWrongLastSequenceError:
                continue
        raise ConflictError(f"{key}: too many concurrent updates")

    # ---- runs ----
    async def create_run(self, record: RunRecord) -> bool:
        """False when the run already exists (a redelivered goal). A run created running enters the
        index; one created ended (a goal refused at intake) never does."""
        try:
            await self._runs.create(record.run_id, msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            # the goal again: its first delivery may have died between the record and the index
            existing = await self.get_run(record.run_id)
            if existing is not None and existing.status == "running":
                await self._index(record.run_id)
            return False
        if record.status == "running":
            await self._index(record.run_id)
        return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        found = await self._get(self._runs, run_id, RunRecord)
        return found[0] if found else None

    async def update_run(self, run_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord:
        updated = await self._update(self._runs, run_id, RunRecord, change)
        if updated.status in TERMINAL_STATUSES:  # also on a later update of an ended run: it heals a stale key
            await self._running.delete(run_id)
        return updated

    async def run_ids(self) -> list[str]:
        """Every run's id (one stream info); [] before the runs bucket exists."""
        if self._runs is None:
            return []
        try:
            return await _keys(self.js, subjects.RUNS_BUCKET)
        except NoKeysError:
            return []

    async def list_runs(self) -> list[RunRecord]:
        runs = [await self.get_run(key) for key in await self.run_ids()]
        return sorted((r for r in runs if r), key=lambda r: r.created_at)

    # ---- the index of running runs ----
    async def running_run_ids(self) -> list[str]:
        """The runs whose status is running, from the index alone (no record is read); rarely one
        that has just ended, so a caller acts on the record it reads next."""
        try:
            keys = await self._running.keys()
        except NoKeysError:
            return []
        return sorted(key for key in keys if key != subjects.RUNNING_INDEXED_KEY)

    async def forget_running(self, run_id: str) -> None:
        """Take an ended run out of the index: a planner that found it ended heals a key its last
        update left behind (a crash between the record's write and the index's)."""
        await self._running.delete(run_id)

    async def _index(self, run_id: str) -> None:
        """Enter a run the caller saw running, then read it again: had it ended meanwhile, its
        update's delete may have come before this write, so the key is taken out again."""
        await self._running.put(run_id, b"running")
        run = await self.get_run(run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            await self._running.delete(run_id)

    async def _backfill_index(self) -> None:
        """Runs stored before the index existed enter it once, from a full scan; the marker is
        written last, so a scan cut short is done again by the next open."""
        try:
            await self._running.get(subjects.RUNNING_INDEXED_KEY)
            return
        except (KeyNotFoundError, KeyDeletedError, NotFoundError):
            pass
        for run in await self.list_runs():
            if run.status == "running":
                await self._index(run.run_id)
        await self._running.put(subjects.RUNNING_INDEXED_KEY, b"1")

    # ---- iterations ----
    async def put_iteration(self, record: IterationRecord) -> None:
        await self._iterations.put(iteration_key(record.run_id, record.iteration), msgspec.json.encode(record))

    async def get_iteration(self, run_id: str, iteration: int) -> IterationRecord | None:
        found = await self._get(self._iterations, iteration_key(run_id, iteration), IterationRecord)
        return found[0] if found else None

    async def update_iteration(
        self, run_id: str, iteration: int, change: Callable[[IterationRecord], IterationRecord]
    ) -> IterationRecord:
        return await self._update(self._iterations, iteration_key(run_id, iteration), IterationRecord, change)

    async def iterations(self, run_id: str, count: int) -> list[IterationRecord]:
        found = [await self.get_iteration(run_id, i) for i in range(1, count + 1)]
        return [record for record in found if record]

    # ---- seed results (one key each: a redelivered result overwrites itself, never counts twice) ----
    async def put_seed_result(self, result: SeedResult) -> None:
        await self._iterations.put(seed_key(result.run_id, result.iteration, result.seed, result.rung, result.split),
                                   msgspec.json.encode(result))

    async def seed_results(self, run_id: str, iteration: int, seeds: list[int],
                           rung: int | None = None, split: str = "val") -> dict[int, SeedResult]:
        out: dict[int, SeedResult] = {}
        for seed in seeds:
            found = await self._get(self._iterations, seed_key(run_id, iteration, seed, rung, split), SeedResult)
            if found:
                out[seed] = found[0]
        return out

    # ---- artifacts ----
    async def put_artifact(self, name: str, data: bytes) -> str:
        await self._artifacts.put(name, data)
        return name

    async def delete_artifact(self, name: str) -> bool:
        """False when there was no such artifact."""
        for store in self._stores(name):
            try:
                await store.delete(name)
                return True
            except (ObjectNotFoundError, NotFoundError):
                continue
        return False

    async def get_artifact(self, name: str) -> bytes | None:
        for store in self._stores(name):
            try:
                return await (read_object(self.js, store, name) if self._read_only else _whole(store, name))
            except (ObjectNotFoundError, NotFoundError):
                continue
        return None

    def _stores(self, name: str) -> list:
        """Where an artifact may be: weights in their own bucket (or, stored before it, with the rest)."""
        return [store for store in ((self._weights, self._artifacts) if is_weights(name) else (self._artifacts,))
                if store is not None]


async def put_weights(js: JetStreamContext, name: str, data: bytes) -> str:
    """An evaluator's one write: a seed's weights into WEIGHTS_BUCKET (which the planner makes)."""
    await (await js.object_store(subjects.WEIGHTS_BUCKET)).put(name, data)
    return name


async def _whole(store, name: str) -> bytes:
    return (await store.get(name)).data


async def _keys(js: JetStreamContext, bucket: str) -> list[str]:
    """A bucket's keys from its stream's subjects (one stream info, no consumer, nothing that can
    return before it has seen them all), deleted ones included: their readers find no value."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return [subject[len(prefix):] for subject in (info.state.subjects or {})]


async def read_object(js: JetStreamContext, store, name: str) -> bytes:
    """An object's bytes by message get: its metadata, then each chunk in turn, the whole checked
    against the metadata's size and SHA-256 digest. ObjectNotFoundError when there is none."""
    info = await store.get_info(name)
    stream, chunks = f"OBJ_{info.bucket}", f"$O.{info.bucket}.C.{info.nuid}"
    data, seq = bytearray(), 1
    for _ in range(info.chunks or 0):
        msg = await js.get_msg(stream, seq=seq, subject=chunks, next=True)
        data += msg.data or b""
        seq = msg.seq + 1
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    if len(data) != info.size or (info.digest and info.digest.rstrip("=") != digest.rstrip("=")):
        raise ValueError(f"artifact {name!r} does not match its metadata (size {len(data)} of {info.size}, or its digest)")
    return bytes(data)


async def _existing(opener, bucket: str):
    try:
        return await opener(bucket)
    except (BucketNotFoundError, NotFoundError):
        return None
