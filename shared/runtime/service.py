"""The one lifecycle of every service: configuration and logging, connect, declare the streams,
wire the handlers, `<service>_ready`, the health-file beat, wait for SIGTERM/SIGINT, then stop
taking work, finish what is in hand, clean up and leave NATS. A main() only wires:

    async def main(nc=None, config=None, stop=None):
        async with Service("sandbox", config) as service:
            await service.connect(nc, stop)
            responder = service.responder(service.config.sandbox.concurrency)
            await responder.serve(subjects.VALIDATE_SUBJECT, subjects.SANDBOX_QUEUE, ValidateRequest, check)
            await service.run(image=service.config.sandbox.image)

(nats.py's examples/graceful_shutdown.py, with its parts in one place.)
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable

import structlog
from nats.aio.client import Client as NATS

from shared.messaging.bus import Responder, connect, ensure_streams, sleep_unless, stop_event
from shared.messaging.consumer import Consumer
from shared.runtime.config import Config, load_config
from shared.runtime.health import beat
from shared.runtime.log import configure_logging

log = structlog.get_logger()


class Service:
    """Async context manager around one service's life. Inside it: `connect`, then wire with
    `responder`, `consume`, `every` and `on_stop`, then `run` until stopped. Leaving it (also on
    an error) runs the on_stop clean-ups, newest first, and closes the connection."""

    def __init__(self, name: str, config: Config | None = None, *, client_name: str | None = None) -> None:
        self.name, self.client_name = name, client_name or name
        self.config = config or load_config()
        configure_logging(name, self.config.log_level)
        self.nc: NATS | None = None
        self.js = None
        self.stop = asyncio.Event()
        self._responders: list[Responder] = []
        self._consumers: list[Consumer] = []
        self._periodic: list[Callable[[], Awaitable[Any]]] = []
        self._cleanups: list[Callable[[], Any]] = []

    async def __aenter__(self) -> "Service":
        return self

    async def __aexit__(self, *exc_info) -> None:
        for cleanup in reversed(self._cleanups):
            try:
                if inspect.iscoroutinefunction(cleanup):
                    await cleanup()
                else:
                    await asyncio.to_thread(cleanup)  # closing containers blocks on the Docker API
            except Exception:
                log.exception("cleanup_failed", cleanup=getattr(cleanup, "__qualname__", repr(cleanup)))
        if self.nc is not None and not self.nc.is_closed:
            if self._consumers:
                await self.nc.close()  # every fetched message was handled; drain would wait on the pull subscriptions
            else:
                await self.nc.drain()  # answers still on their way out reach their requesters

    async def connect(self, nc: NATS | None = None, stop: asyncio.Event | None = None, *,
                      jetstream: bool = False) -> None:
        """Use `nc` (tests inject one) or connect; `stop` (tests inject one) or SIGTERM/SIGINT ends
        `run`. jetstream: declare the streams (idempotent, from any replica) and open `js`."""
        self.stop = stop or stop_event()
        self.nc = nc or await connect(self.config.nats_url, self.client_name)
        if jetstream:
            self.js = self.nc.jetstream()
            await ensure_streams(self.js)

    def responder(self, concurrency: int) -> Responder:
        """A request responder, closed (its answers in flight finished) when the service stops."""
        responder = Responder(self.nc, concurrency)
        self._responders.append(responder)
        return responder

    async def consume(self, **consumer: Any) -> Consumer:
        """A pull consumer (shared.messaging.consumer.Consumer's keywords, js aside), subscribed
        now and run by `run`."""
        created = Consumer(self.js, **consumer)
        await created.subscribe()
        self._consumers.append(created)
        return created

    def every(self, seconds: float, work: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run `work` every `seconds` while the service runs; a failure (NATS away) is logged and
        the next round tries again."""

        async def periodic() -> None:
            while not self.stop.is_set():
                await sleep_unless(self.stop, seconds)
                if self.stop.is_set():
                    return
                try:
                    await work()
                except Exception as exc:
                    log.warning(f"{what}_failed", error=f"{type(exc).__name__}: {exc}")

        self._periodic.append(periodic)

    def on_stop(self, cleanup: Callable[[], Any]) -> None:
        """Call `cleanup` (a coroutine function, or a blocking one run in a thread) on the way out."""
        self._cleanups.append(cleanup)

    async def run(self, **ready_info: Any) -> None:
        """Log `<name>_ready` (researcher/stack.py waits for that line), beat the health file,
        serve until stopped, then stop taking work and finish what is in hand."""
        await self.nc.flush()  # the server holds every subscription before anyone is told we are ready
        log.info(f"{self.name}_ready", **ready_info)
        tasks = [asyncio.create_task(beat(self.nc, self.stop))]
        tasks += [asyncio.create_task(consumer.run(self.stop)) for consumer in self._consumers]
        tasks += [asyncio.create_task(periodic()) for periodic in self._periodic]
        for task in tasks:
            task.add_done_callback(self._stop_on_crash)
        await self.stop.wait()
        for responder in self._responders:
            await responder.close()  # the answers in flight finish before leaving
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)  # a consumer finishes the message in hand
        crashed = [o for o in outcomes if isinstance(o, Exception)]
        if crashed:
            raise crashed[0]

    def _stop_on_crash(self, task: asyncio.Task) -> None:
        """A loop that died takes the service down, to be restarted whole (not limp on without it)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("loop_crashed", error=f"{type(task.exception()).__name__}: {task.exception()}")
            self.stop.set()
