"""Named durations of a job's consecutive steps, by this process's monotonic clock."""

from __future__ import annotations

import time


class Laps:
    """`lap(name)` ends the step under way, naming it; `seconds` holds each step's duration."""

    def __init__(self) -> None:
        self.started = self._last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> float:
        """End the step under way as `name` (added to, when it ran before) -> its seconds."""
        now = time.monotonic()
        took, self._last = now - self._last, now
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        return took

    def skip(self) -> None:
        """Start the next step now, counting the time since the last lap in none."""
        self._last = time.monotonic()

    def total(self) -> float:
        return time.monotonic() - self.started
