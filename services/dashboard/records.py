"""The registry as the dashboard reads it: read-only, concurrently, and remembering what cannot change.

An ended run's record and candidates are final: read once and kept (least recently used first out).
A running run's decided or rejected candidates are kept for FRESH_S at most (a later decision may
still add to one's record, and an event may be missed while NATS reconnects); an event naming a
candidate drops it at once. The rest is read again on every page, concurrently, so a page of a
200-candidate run costs its in-flight candidates' reads, not 200 sequential ones. Code, exchanges
and plots are kept too: an artifact's name is never reused for other content.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from shared.messaging.messages import TERMINAL_STATUSES, Event
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.store import Registry

FINAL_STATES = frozenset({"decided", "rejected"})
FRESH_S = 15.0  # how long a running run's decided candidate is served from memory
READS_AT_ONCE = 32  # concurrent KV reads of one page
RECORDS_KEPT = 50_000  # candidates and ended runs kept in memory (a few KB each)
ARTIFACTS_KEPT = 256  # code, exchanges and plots kept in memory (most recently used)
ARTIFACT_KEPT_BYTES = 2 * 1024 * 1024  # a larger artifact is read again each time


class _Kept(OrderedDict):
    """Least recently used first out, each entry with its expiry (None: never)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def fetch(self, key):
        found = self.get(key)
        if found is None:
            return None
        value, until = found
        if until is not None and time.monotonic() > until:
            del self[key]
            return None
        self.move_to_end(key)
        return value

    def keep(self, key, value, for_s: float | None = None) -> None:
        self[key] = (value, None if for_s is None else time.monotonic() + for_s)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Records:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry  # read-only (Registry.read)
        self._candidates = _Kept(RECORDS_KEPT)
        self._ended = _Kept(RECORDS_KEPT)
        self._artifacts = _Kept(ARTIFACTS_KEPT)
        self._gate = asyncio.Semaphore(READS_AT_ONCE)

    def forget(self, event: Event) -> None:
        if event.iteration is not None:
            self._candidates.pop((event.run_id, event.iteration), None)

    async def _opened(self) -> Registry:
        """The registry, opened again while the planner has not made its buckets yet (a dashboard
        started first, as compose may start it, would otherwise read an empty registry forever)."""
        if self.registry.missing_buckets:
            self.registry = await Registry.read(self.registry.js, weights=False)
        return self.registry

    async def runs(self) -> list[RunRecord]:
        registry = await self._opened()
        found = await asyncio.gather(*(self.get_run(run_id) for run_id in await registry.run_ids()))
        return sorted((r for r in found if r is not None), key=lambda r: r.created_at)

    async def get_run(self, run_id: str) -> RunRecord | None:
        kept = self._ended.fetch(run_id)
        if kept is not None:
            return kept
        async with self._gate:
            run = await (await self._opened()).get_run(run_id)
        if run is not None and run.status in TERMINAL_STATUSES:
            self._ended.keep(run_id, run)
        return run

    async def run(self, run_id: str) -> tuple[RunRecord, list[IterationRecord]] | None:
        run = await self.get_run(run_id)
        return None if run is None else (run, await self.iterations(run))

    async def iterations(self, run: RunRecord) -> list[IterationRecord]:
        """`run`'s candidates, those that can no longer change from memory."""
        ended = run.status in TERMINAL_STATUSES
        found = await asyncio.gather(*(self._iteration(run.run_id, n, ended)
                                       for n in range(1, run.current_iteration + 1)))
        return [it for it in found if it is not None]

    async def _iteration(self, run_id: str, n: int, ended: bool) -> IterationRecord | None:
        kept = self._candidates.fetch((run_id, n))
        if kept is not None:
            return kept
        async with self._gate:
            it = await self.registry.get_iteration(run_id, n)
        if it is not None and (ended or it.state in FINAL_STATES):
            self._candidates.keep((run_id, n), it, None if ended else FRESH_S)
        return it

    async def artifact(self, name: str) -> bytes | None:
        kept = self._artifacts.fetch(name)
        if kept is not None:
            return kept
        data = await (await self._opened()).get_artifact(name)
        if data is not None and len(data) <= ARTIFACT_KEPT_BYTES:
            self._artifacts.keep(name, data)
        return data

