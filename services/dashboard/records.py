"""The registry as the dashboard reads it: read-only, concurrently, and remembering what cannot change.

A candidate that is decided or rejected, and every candidate of an ended run, is final: it is read
once and kept (its code and plots too: artifact names are never reused for other content). The
rest is read again on every page, concurrently, so a page of a 200-candidate run costs the in-flight
candidates' reads, not 200 sequential ones. An event naming a candidate drops it from the cache
(a late summary or a promotion rewrites a record the cache took for final).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from shared.messaging.messages import TERMINAL_STATUSES, Event
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.store import Registry

FINAL_STATES = frozenset({"decided", "rejected"})
READS_AT_ONCE = 32  # concurrent KV reads of one page
ARTIFACTS_KEPT = 256  # code, exchanges and plots kept in memory (most recently used)
ARTIFACT_KEPT_BYTES = 2 * 1024 * 1024  # a larger artifact is read again each time


class Records:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry  # read-only (Registry.read)
        self._final: dict[tuple[str, int], IterationRecord] = {}
        self._artifacts: OrderedDict[str, bytes] = OrderedDict()
        self._gate = asyncio.Semaphore(READS_AT_ONCE)

    def forget(self, event: Event) -> None:
        if event.iteration is not None:
            self._final.pop((event.run_id, event.iteration), None)

    async def _opened(self) -> Registry:
        """The registry, opened again while the planner has not made its buckets yet (a dashboard
        started first, as compose may start it, would otherwise read an empty registry forever)."""
        if self.registry.missing_buckets:
            self.registry = await Registry.read(self.registry.js)
        return self.registry

    async def runs(self) -> list[RunRecord]:
        return await (await self._opened()).list_runs()

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await (await self._opened()).get_run(run_id)

    async def run(self, run_id: str) -> tuple[RunRecord, list[IterationRecord]] | None:
        run = await self.get_run(run_id)
        if run is None:
            return None
        ended = run.status in TERMINAL_STATUSES
        found = await asyncio.gather(*(self._iteration(run_id, n, ended) for n in range(1, run.current_iteration + 1)))
        return run, [it for it in found if it is not None]

    async def _iteration(self, run_id: str, n: int, ended: bool) -> IterationRecord | None:
        kept = self._final.get((run_id, n))
        if kept is not None:
            return kept
        async with self._gate:
            it = await self.registry.get_iteration(run_id, n)
        if it is not None and (ended or it.state in FINAL_STATES):
            self._final[(run_id, n)] = it
        return it

    async def artifact(self, name: str) -> bytes | None:
        kept = self._artifacts.get(name)
        if kept is not None:
            self._artifacts.move_to_end(name)
            return kept
        data = await (await self._opened()).get_artifact(name)
        if data is not None and len(data) <= ARTIFACT_KEPT_BYTES:
            self._artifacts[name] = data
            while len(self._artifacts) > ARTIFACTS_KEPT:
                self._artifacts.popitem(last=False)
        return data
