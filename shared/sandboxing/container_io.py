"""One container's attached stream and its end: docker's multiplexed stdout/stderr read until
the harness's ready or result line, the nonce-tagged result and stage lines found in it, and the
container killed, waited for and removed."""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any

from docker.errors import APIError, NotFound

MAX_STDOUT_BYTES = 768 * 1024 * 1024  # the result line carries predictions


class Attached:
    """A started container and its attach stream: stdin in, docker's multiplexed stdout/stderr out."""

    def __init__(self, container, sock, started_at: float, cap: int) -> None:
        self.container, self.raw, self.started_at, self.cap = container, sock._sock, started_at, cap
        self._sock = sock  # keeps the response object (and so the connection) alive
        self.buffer, self.stdout, self.stderr = bytearray(), bytearray(), bytearray()

    def read(self, deadline: float, until: bytes | None = None) -> bool:
        """Demultiplex frames until `until` is in stdout (or EOF when None). False at the deadline."""
        while True:
            if until is not None and until in self.stdout:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.raw.settimeout(remaining)
            try:
                chunk = self.raw.recv(1 << 20)
            except (socket.timeout, TimeoutError):
                return False
            if not chunk:
                return until is None
            self.buffer += chunk
            while len(self.buffer) >= 8:
                kind, size = self.buffer[0], struct.unpack(">I", self.buffer[4:8])[0]
                if len(self.buffer) < 8 + size:
                    break
                payload = bytes(self.buffer[8 : 8 + size])
                del self.buffer[: 8 + size]
                if kind == 1 and len(self.stdout) < MAX_STDOUT_BYTES:
                    self.stdout += payload
                elif kind == 2:
                    self.stderr += payload
                    if len(self.stderr) > 2 * self.cap:
                        del self.stderr[: len(self.stderr) - self.cap]

    def alive(self) -> bool:
        """A waiting container has nothing to say: readable means it ended (EOF) or broke."""
        readable, _, _ = select.select([self.raw], [], [], 0)
        return not readable

    def close(self) -> None:
        try:
            self.raw.close()
        except OSError:
            pass

    def discard(self) -> None:
        """Close the stream and remove the container (it is never reused)."""
        self.close()
        remove(self.container)


def remove(container) -> None:
    try:
        container.remove(force=True)
    except (NotFound, APIError):
        pass


def kill(container) -> None:
    try:
        container.kill()  # SIGKILL: whatever the code does with signals
    except (NotFound, APIError):
        pass


def final_state(container) -> tuple[int | None, bool]:
    try:
        status = container.wait(timeout=30)
        container.reload()
        return status.get("StatusCode"), bool(container.attrs["State"].get("OOMKilled"))
    except Exception:  # the engine lost it: report what we know
        return None, False


def last_stage(stdout: bytes | bytearray, nonce: str) -> str:
    marker = f"@@STAGE {nonce} ".encode()
    at = bytes(stdout).rfind(marker)
    if at < 0:
        return "start"
    return bytes(stdout[at + len(marker) :]).split(b"\n", 1)[0].decode("ascii", "replace")[:32]


def find_result(stdout: bytes | bytearray, nonce: str) -> dict[str, Any] | None:
    marker = f"@@RESULT {nonce} ".encode()
    at = bytes(stdout).rfind(marker)
    if at < 0:
        return None
    line = bytes(stdout[at + len(marker) :]).split(b"\n", 1)[0]
    try:
        report = json.loads(line)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None
