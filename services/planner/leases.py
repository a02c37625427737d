"""Which planner replica drives which run: a lease per run in a KV bucket whose keys expire.

A replica claims a run by creating its key (compare-and-set: one winner), renews it while it
drives the run, and releases it when the run ends. A replica that dies stops renewing; its
leases expire after TTL_S and another replica (or itself, restarted) claims the runs on its next
scan. A replica restarted under the same name (a compose container restarting, say) finds its own
leases and takes its runs back at once.
"""

from __future__ import annotations

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from shared.messaging import subjects
from shared.messaging.bus import key_value

log = structlog.get_logger()
TTL_S = 20.0  # a lease not renewed for this long is free
RENEW_S = TTL_S / 4


class RunLeases:
    def __init__(self, kv, owner: str) -> None:
        self.kv, self.owner = kv, owner
        self._revisions: dict[str, int] = {}  # run id -> revision of our lease

    @classmethod
    async def open(cls, js, owner: str) -> "RunLeases":
        return cls(await key_value(js, subjects.LEASES_BUCKET, history=1, ttl=TTL_S), owner)

    async def claim(self, run_id: str) -> bool:
        """True when this replica holds the run's lease (newly, or already)."""
        try:
            self._revisions[run_id] = await self.kv.create(run_id, self.owner.encode())
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(run_id)
        except (KeyNotFoundError, NotFoundError):
            return False  # expired between the two calls: the next scan claims it
        if entry.value and entry.value.decode() == self.owner:
            self._revisions[run_id] = entry.revision
            return True
        return False

    async def renew(self) -> list[str]:
        """Renew every lease held; -> the runs whose lease was lost (another replica has them now)."""
        lost = []
        for run_id, revision in list(self._revisions.items()):
            try:
                self._revisions[run_id] = await self.kv.update(run_id, self.owner.encode(), last=revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError, NotFoundError):
                if not await self.claim(run_id):  # expired and not yet taken: ours again; else gone
                    self._revisions.pop(run_id, None)
                    lost.append(run_id)
        if lost:
            log.warning("leases_lost", runs=lost)
        return lost

    async def release(self, run_id: str) -> None:
        revision = self._revisions.pop(run_id, None)
        if revision is None:
            return
        try:
            await self.kv.delete(run_id, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, NotFoundError):
            pass  # expired or taken already
