"""The warm pool: containers created, started and past their torch import before a job needs one.

One filler thread per place, so a pool of several refills side by side (a start is mostly one
core's work: importing torch). Refills start at the lowest CPU weight, so that they yield the
cores to a job in hand; a job that finds the pool empty waits for a refill under way rather than
starting another container beside it, that refill gets the default weight at once, and one more
filler starts the next job's container meanwhile (jobs queued faster than the pool refills keep
two starts going, as cold starts beside refills did).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import structlog

from shared.errors import SandboxUnavailableError
from shared.sandboxing.container_io import Attached

log = structlog.get_logger()


class WarmPool:
    """`size` warm containers. `start(on_created)` starts one (at the low weight), calling
    `on_created(container)` once the engine made it; `prioritise(container)` gives a container
    the default CPU weight; a warm one idle past `max_idle_s` is replaced."""

    def __init__(self, size: int, start: Callable[[Callable], Attached], prioritise: Callable, *, max_idle_s: float,
                 name: str, start_timeout_s: float) -> None:
        self.size, self._start, self._prioritise = size, start, prioritise
        self.max_idle_s, self.name, self.start_timeout_s = max_idle_s, name, start_timeout_s
        self._warm: queue.Queue[Attached] = queue.Queue()
        self._changed = threading.Condition()  # the pool, or the refills under way, changed
        self._starting = 0  # refills under way
        self._waiting = 0  # jobs waiting for one: each asks for one more
        self._warming: set = set()  # their containers, once created: a job waiting on them hurries them
        self._stop = threading.Event()
        self._fillers: list[threading.Thread] = []

    def start(self) -> None:
        if self.size > 0 and not self._fillers:
            self._fillers = [threading.Thread(target=self._fill, args=(i == 0,), name=f"pool-{self.name}-{i}", daemon=True)
                             for i in range(self.size + 1)]  # the last one only while a job waits
            for filler in self._fillers:
                filler.start()

    def stop(self) -> None:
        """Stop refilling and discard the warm containers (one being started is the caller's to remove)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for warm in self._drain():
            warm.discard()

    def join(self) -> bool:
        """Wait for the fillers to end -> whether there were any."""
        for filler in self._fillers:
            filler.join(timeout=self.start_timeout_s)
        return bool(self._fillers)

    def wait_warm(self, count: int | None = None, timeout_s: float | None = None) -> bool:
        """Block until the pool holds `count` (default: its size) warm containers."""
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while self._warm.qsize() < (self.size if count is None else count):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def take(self) -> Attached | None:
        """A warm container or, when there is none, the one a refill is starting: waiting for it
        costs less than a cold start beside it, both importing torch on the same cores. None when
        the pool is empty and no refill is under way."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with self._changed:
                waiting = self._warm.empty() and self._starting > 0 and not self._stop.is_set()
                starting = list(self._warming) if waiting else []
            for container in starting:  # a job waits on them now: no one else's training starves them
                self._prioritise(container)
            with self._changed:
                if self._warm.empty() and self._starting > 0 and not self._stop.is_set():
                    self._waiting += 1
                    self._changed.notify_all()  # a filler starts the next job's container meanwhile
                    try:
                        while self._warm.empty() and self._starting > 0 and not self._stop.is_set():
                            if not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                                break
                    finally:
                        self._waiting -= 1
                try:
                    warm = self._warm.get_nowait()
                except queue.Empty:
                    return None
                finally:
                    self._changed.notify_all()  # a filler starts a replacement now
            if self._usable(warm):
                return warm
            warm.discard()

    def _fill(self, sweeps: bool) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            if sweeps and time.monotonic() - last_sweep > 60:
                self._recycle_idle()
                last_sweep = time.monotonic()
            with self._changed:
                if self._warm.qsize() + self._starting >= self.size + self._waiting:
                    self._changed.wait(timeout=5.0)
                    continue
                self._starting += 1
            warm, created = None, []
            try:
                warm = self._start(lambda container: self._created(container, created))
            except SandboxUnavailableError as exc:
                log.warning("pool_start_failed", error=str(exc))
            finally:
                with self._changed:
                    self._starting -= 1
                    self._warming.difference_update(created)
                    if warm is not None and not self._stop.is_set():
                        self._warm.put(warm)
                    self._changed.notify_all()  # a job may be waiting for this one
            if warm is None:
                self._stop.wait(5.0)
            elif self._stop.is_set():
                warm.discard()
            else:  # what a refill costs bounds a replica's jobs per second (`make bench-scale` reads it)
                log.info("container_warm", start_s=round(time.monotonic() - warm.started_at, 3), warm=self._warm.qsize())

    def _created(self, container, created: list) -> None:
        with self._changed:
            self._warming.add(container)
        created.append(container)

    def _usable(self, warm: Attached) -> bool:
        return warm.alive() and time.monotonic() - warm.started_at <= self.max_idle_s

    def _drain(self) -> list[Attached]:
        taken = []
        while True:
            try:
                taken.append(self._warm.get_nowait())
            except queue.Empty:
                return taken

    def _recycle_idle(self) -> None:
        for warm in self._drain():
            if self._usable(warm):
                self._warm.put(warm)
            else:
                warm.discard()
