"""Signals as exceptions for the CLI, so that however a command is ended its finally blocks run."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Interrupted(SystemExit):
    """SIGTERM or SIGHUP as an exception. A SystemExit, which asyncio re-raises out of its loop
    wherever it lands (as it does KeyboardInterrupt); the exit status is 128 + the signal."""


@contextmanager
def signals_as_exceptions():
    """SIGTERM and SIGHUP raise Interrupted, SIGINT KeyboardInterrupt, at once, so the finally
    blocks run: an embedded stack stops its services before their server, a validation's
    container is removed. (Python's default for SIGTERM ends the process on the spot; asyncio's
    for SIGINT waits for the event loop, which a stack starting up keeps busy.) A second signal
    while stopping is ignored: the stop is bounded, and were the CLI killed, PR_SET_PDEATHSIG
    ends the stack's processes (researcher/stack.py)."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal would refuse
        yield
        return
    caught = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def interrupted(signum: int, _frame) -> None:
        for sig in caught:
            signal.signal(sig, signal.SIG_IGN)
        # os.write: print() could be in the middle of a write to the same stream
        os.write(2, f"researcher: {signal.Signals(signum).name}, stopping...\n".encode())
        raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(128 + signum)

    before = {sig: signal.signal(sig, interrupted) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
