"""Signals as exceptions for the CLI, so that however a command is ended its finally blocks run."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from contextlib import contextmanager
from typing import Awaitable, TypeVar

T = TypeVar("T")
_main_task: list[asyncio.Task] = []  # the task `run` is running, while it runs
_caught: list[int] = []  # the signal that cancelled it


class Interrupted(SystemExit):
    """SIGTERM or SIGHUP as an exception. A SystemExit, which asyncio re-raises out of its loop
    wherever it lands (as it does KeyboardInterrupt); the exit status is 128 + the signal."""


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(128 + signum)


@contextmanager
def signals_as_exceptions():
    """SIGTERM and SIGHUP raise Interrupted, SIGINT KeyboardInterrupt, at once, so the finally
    blocks run: an embedded stack stops its services before their server, a validation's
    container is removed. Inside `run` the signal cancels its task instead, whose own handlers
    then still have their NATS connection (asyncio cancels every task, the client's too, when an
    exception leaves its loop), and `run` raises the exception once the task has ended. (Python's
    default for SIGTERM ends the process on the spot; asyncio's for SIGINT waits for the event
    loop, which a stack starting up keeps busy.) A second signal while stopping is ignored: the
    stop is bounded, and were the CLI killed, PR_SET_PDEATHSIG ends the stack's processes."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal would refuse
        yield
        return
    caught = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def interrupted(signum: int, _frame) -> None:
        for sig in caught:
            signal.signal(sig, signal.SIG_IGN)
        # os.write: print() could be in the middle of a write to the same stream
        os.write(2, f"researcher: {signal.Signals(signum).name}, stopping...\n".encode())
        if _main_task and not _main_task[0].done():
            _caught.append(signum)
            _main_task[0].get_loop().call_soon_threadsafe(_main_task[0].cancel)
            return
        raise _exception(signum)

    before = {sig: signal.signal(sig, interrupted) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def ignore_signals(notice: str) -> None:
    """From now on SIGTERM, SIGHUP and SIGINT only say `notice` (once): the work that is left (an
    embedded stack stopping after its run's report is out) is bounded, and cut short it would
    leave the stack to PR_SET_PDEATHSIG rather than to its orderly stop."""
    if threading.current_thread() is not threading.main_thread():
        return
    told = []

    def tell(_signum: int, _frame) -> None:
        if not told:
            told.append(True)
            os.write(2, f"researcher: {notice}\n".encode())

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, tell)


def run(work: Awaitable[T]) -> T:
    """asyncio.run(work), where a signal cancels `work` and is raised (as above) once it has ended."""

    async def main() -> T:
        _main_task.append(asyncio.current_task())
        try:
            return await work
        finally:
            _main_task.clear()

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not _caught:
            raise
        raise _exception(_caught.pop()) from None
