"""The events every run publishes (`research.events.<run_id>`, core NATS), kept and fanned out.

The dashboard subscribes once to every run's events. It keeps the latest `events_kept` of each run
it has seen (a page opened mid-run shows what happened since the dashboard started; the registry
holds the record of the rest) and hands each new one to the pages following it, over server-sent
events. A follower that reads too slowly loses its oldest unread events, never the dashboard's
memory or another follower's.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import AsyncIterator, Callable

import structlog

from shared.messaging import subjects
from shared.messaging.bus import MessageError, decode
from shared.messaging.messages import Event

log = structlog.get_logger()
FOLLOWER_QUEUE = 256  # events a page may fall behind by before its oldest unread ones are dropped
ALL = "*"  # a follower of every run's events (the runs page)


class Hub:
    def __init__(self, events_kept: int = 500, runs_kept: int = 200) -> None:
        self.events_kept, self.runs_kept = events_kept, runs_kept
        self._kept: OrderedDict[str, deque[Event]] = OrderedDict()
        self._followers: dict[str, set[asyncio.Queue[Event]]] = {}
        self._listeners: list[Callable[[Event], None]] = []

    async def subscribe(self, nc) -> None:
        await nc.subscribe(f"{subjects.EVENTS_PREFIX}.>", cb=self._on_message)

    def on_event(self, listener: Callable[[Event], None]) -> None:
        """`listener(event)` for every event (the record cache forgets what an event changed)."""
        self._listeners.append(listener)

    async def _on_message(self, msg) -> None:
        try:
            event = decode(msg.data, Event, msg.subject)
        except MessageError as exc:  # someone's malformed line must not end the stream for the rest
            log.warning("rejected_message", subject=msg.subject, error=str(exc))
            return
        if msg.subject != subjects.events_subject(event.run_id):
            log.warning("rejected_message", subject=msg.subject, error=f"an event of run {event.run_id!r}")
            return
        self.add(event)

    def add(self, event: Event) -> None:
        kept = self._kept.get(event.run_id)
        if kept is None:
            kept = self._kept[event.run_id] = deque(maxlen=self.events_kept)
            while len(self._kept) > self.runs_kept:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(event.run_id)
        kept.append(event)
        for listener in self._listeners:
            listener(event)
        for key in (event.run_id, ALL):
            for queue in self._followers.get(key, ()):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)

    def recent(self, run_id: str) -> list[Event]:
        return list(self._kept.get(run_id, ()))

    async def follow(self, run_id: str = ALL) -> AsyncIterator[Event]:
        """Every event of `run_id` (ALL: of every run) from now on, until the caller stops iterating."""
        queue: asyncio.Queue[Event] = asyncio.Queue(FOLLOWER_QUEUE)
        self._followers.setdefault(run_id, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            followers = self._followers.get(run_id, set())
            followers.discard(queue)
            if not followers:
                self._followers.pop(run_id, None)

    @property
    def followers(self) -> int:
        return sum(len(queues) for queues in self._followers.values())
