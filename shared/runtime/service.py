"""The one lifecycle of every service: configuration and logging, connect, declare the streams,
wire the handlers, `<service>_ready`, the health-file beat, wait for SIGTERM/SIGINT, then stop
taking work, finish what is in hand, clean up and leave NATS. A main() only wires:

    async def main(nc=None, config=None, stop=None):
        async with Service("sandbox", config, stop=stop) as service:
            await service.connect(nc)
            responder = service.responder(service.config.sandbox.concurrency)
            await responder.serve(subjects.VALIDATE_SUBJECT, subjects.SANDBOX_QUEUE, ValidateRequest, check)
            await service.run(image=service.config.sandbox.image)

(nats.py's examples/graceful_shutdown.py, with its parts in one place.)

Stopping is bounded whatever the state of the connection (connected, reconnecting, server gone):
the work in hand gets `grace_s` (config.stop_grace_s), then is cancelled; the clean-ups and the
close get CLOSE_S more; and after a signal a watchdog ends the process WATCHDOG_S past both, so
nothing a service started (an embedded stack's service, its containers) outlives its stop for long.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
from typing import Any, Awaitable, Callable

import structlog
from nats.aio.client import Client as NATS

from shared.messaging.bus import Responder, connect, ensure_streams, sleep_unless
from shared.messaging.consumer import Consumer
from shared.runtime.config import Config, load_config
from shared.runtime.health import beat
from shared.runtime.log import configure_logging

log = structlog.get_logger()
CLOSE_S = 15.0  # after the grace period: the clean-ups (containers removed) and leaving NATS, seconds
WATCHDOG_S = 5.0  # past grace and CLOSE_S, a signalled service that has not ended is ended, seconds
HAND_BACK_S = 5.0  # a stopping evaluator's time to hand its job back after the drain, seconds


def evaluator_grace_s(config: Config) -> float:
    """The evaluator's grace: its job in hand gets the drain, then the hand-back (never less than
    every service's grace), seconds."""
    return max(config.stop_grace_s, config.evaluator.drain_timeout_s + HAND_BACK_S)


def stop_limit_s(config: Config) -> float:
    """The longest any service of `config` takes to stop on SIGTERM (the evaluator's grace is the
    longest), its watchdog included: past this, a supervisor may kill it."""
    return evaluator_grace_s(config) + CLOSE_S + WATCHDOG_S


class Stopped(Exception):
    """Stopped before the connection to NATS was made: nothing to serve; the service leaves quietly."""


class Service:
    """Async context manager around one service's life. Inside it: `connect`, then wire with
    `responder`, `consume`, `every` and `on_stop`, then `run` until stopped. Leaving it (also on
    an error) runs the on_stop clean-ups, newest first, and closes the connection.

    stop: set to stop (tests inject one); without it, SIGTERM and SIGINT set it from the moment the
    service is entered, so a service told to stop while it is still connecting stops too."""

    def __init__(self, name: str, config: Config | None = None, *, client_name: str | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.name, self.client_name = name, client_name or name
        self.config = config or load_config()
        configure_logging(name, self.config.log_level)
        self.nc: NATS | None = None
        self.js = None
        self.stop = stop or asyncio.Event()
        self._on_signals = stop is None
        # how long the work in hand may take once stopped; a service whose work needs longer to
        # hand back (the evaluator's drain) raises it before `run`
        self.grace_s = self.config.stop_grace_s
        self._responders: list[Responder] = []
        self._consumers: list[Consumer] = []
        self._periodic: list[Callable[[], Awaitable[Any]]] = []
        self._cleanups: list[Callable[[], Any]] = []
        self.health_note = ""  # what the health check prints beside "ready" (set before `run`)

    async def __aenter__(self) -> "Service":
        if self._on_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled, sig)
        return self

    def _signalled(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log.info("stopping", signal=sig.name, grace_s=self.grace_s)
            watchdog = threading.Timer(self.grace_s + CLOSE_S + WATCHDOG_S, self._overran)
            watchdog.daemon = True
            watchdog.start()
        self.stop.set()

    def _overran(self) -> None:
        """The last resort (a thread of its own, so a blocked event loop cannot hold it up)."""
        log.error("stop_overran", limit_s=self.grace_s + CLOSE_S + WATCHDOG_S)
        os._exit(1)

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        for cleanup in reversed(self._cleanups):
            what = getattr(cleanup, "__qualname__", repr(cleanup))
            # closing containers blocks on the Docker API: in a thread
            blocking = not inspect.iscoroutinefunction(cleanup)
            work = asyncio.ensure_future(asyncio.to_thread(cleanup) if blocking else cleanup())
            try:
                # asyncio.wait, not wait_for: a timeout of the clean-up's own (NATS gone) is a failure, not ours
                if not (await asyncio.wait({work}, timeout=CLOSE_S))[0]:
                    work.cancel()
                    log.error("cleanup_timed_out", cleanup=what, timeout_s=CLOSE_S)
                    continue
                work.result()
            except Exception:
                log.exception("cleanup_failed", cleanup=what)
        await self._leave_nats()
        return exc_type is Stopped

    async def _leave_nats(self) -> None:
        """Drain (answers on their way out reach their requesters) when connected and nothing is
        pulled, else close; never wait on a server that is gone longer than CLOSE_S."""
        if self.nc is None or self.nc.is_closed:
            return
        try:
            if self.nc.is_connected and not self._consumers:
                await asyncio.wait_for(self.nc.drain(), CLOSE_S)
            else:  # drain would wait on the pull subscriptions, or on a server that is not there
                await asyncio.wait_for(self.nc.close(), CLOSE_S)
        except Exception as exc:  # the server went away mid-close: nothing is left to tell it
            log.warning("nats_close_failed", error=f"{type(exc).__name__}: {exc}")

    async def connect(self, nc: NATS | None = None, stop: asyncio.Event | None = None, *,
                      jetstream: bool = False, declare: bool = False) -> None:
        """Use `nc` (tests inject one) or connect as this service's role (its name), until `stop`
        is set (then Stopped). jetstream: open `js`; declare: also declare the streams (idempotent,
        from any replica; only the planner's credential may). `stop` here is the older way of
        injecting the stop event (the constructor's)."""
        if stop is not None:
            self.stop = stop
        self.nc = nc or await self._unless_stopped(connect(self.config.nats_url, self.client_name, role=self.name))
        if jetstream:
            self.js = self.nc.jetstream()
            if declare:
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
        await self._unless_stopped(created.subscribe(wait_for_stream=True))
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
        tasks = [asyncio.create_task(beat(self.nc, self.stop, note=self.health_note))]
        tasks += [asyncio.create_task(consumer.run(self.stop)) for consumer in self._consumers]
        tasks += [asyncio.create_task(periodic()) for periodic in self._periodic]
        for task in tasks:
            task.add_done_callback(self._stop_on_crash)
        await self.stop.wait()
        # the answers in flight and the message in each consumer's hands finish, within the grace period
        finishing = [asyncio.create_task(responder.close()) for responder in self._responders] + tasks
        done, unfinished = await asyncio.wait(finishing, timeout=self.grace_s)
        if unfinished:
            log.warning("stop_grace_spent", grace_s=self.grace_s, unfinished=len(unfinished))
            for task in unfinished:
                task.cancel()
            await asyncio.wait(unfinished, timeout=CLOSE_S)
        crashed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        if crashed:
            raise crashed[0]

    async def _unless_stopped(self, work: Awaitable[Any]) -> Any:
        """`work`'s result, or Stopped (work cancelled) when the service is stopped first."""
        work, stopped = asyncio.ensure_future(work), asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise Stopped(f"{self.name} stopped while connecting to {self.config.nats_url}")
        return work.result()

    def _stop_on_crash(self, task: asyncio.Task) -> None:
        """A loop that died takes the service down, to be restarted whole (not limp on without it)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("loop_crashed", error=f"{type(task.exception()).__name__}: {task.exception()}")
            self.stop.set()
