"""Readiness for container health checks: a service touches a file while it is ready and
connected to NATS; `python -m shared.runtime.health` (compose's healthcheck) says whether it is fresh.

Off unless RESEARCHER_HEALTH_FILE names the file (compose sets it): several services on one host
outside containers must not share one file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

INTERVAL_S = 5.0  # how often a ready service touches the file
STALE_S = 30.0  # older than this: not ready (a wedged event loop, or NATS gone that long)


def health_file() -> Path | None:
    name = os.environ.get("RESEARCHER_HEALTH_FILE")
    return Path(name) if name else None


async def beat(nc, stop: asyncio.Event, ready: Path | None = None, note: str = "") -> None:
    """Touch the file every few seconds while connected; remove it on the way out. `note` is its
    content, which the check prints (the sandbox and evaluator: their containers' runtime)."""
    path = ready or health_file()
    if path is None:
        return
    try:
        path.write_text(note)
        while not stop.is_set():
            if nc.is_connected:
                path.touch()
            try:
                await asyncio.wait_for(stop.wait(), timeout=INTERVAL_S)
            except asyncio.TimeoutError:
                pass
    finally:
        path.unlink(missing_ok=True)  # stopping: no longer ready for work


def check(path: Path | None = None, stale_s: float = STALE_S) -> tuple[bool, str]:
    path = path or health_file()
    if path is None:
        return False, "RESEARCHER_HEALTH_FILE is not set"
    try:
        age = time.time() - path.stat().st_mtime
        note = path.read_text(errors="replace").strip()[:500]
    except FileNotFoundError:
        return False, f"{path} missing: not ready yet, or stopping"
    if age > stale_s:
        return False, f"{path} is {age:.0f} s old: the service stopped beating (NATS away, or stuck)"
    return True, f"ready ({age:.0f} s ago)" + (f"; {note}" if note else "")


if __name__ == "__main__":
    ok, why = check()
    print(why)
    sys.exit(0 if ok else 1)
