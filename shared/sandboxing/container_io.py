"""One container's attached stream and its end: docker's multiplexed stdout/stderr read until
the harness's ready or result line, the nonce-tagged result and stage lines found in it, and the
container killed, waited for and removed."""

from __future__ import annotations

import select
import socket
import struct
import time
from docker.errors import APIError, NotFound

READY_STDOUT_BYTES = 64 * 1024  # before its job a container says only "@@READY"


class Attached:
    """A started container and its attach stream: stdin in, docker's multiplexed stdout/stderr out."""

    def __init__(self, container, sock, started_at: float, cap: int) -> None:
        self.container, self.raw, self.started_at, self.cap = container, sock._sock, started_at, cap
        self._sock = sock  # keeps the response object (and so the connection) alive
        self.buffer, self.stdout, self.stderr = bytearray(), bytearray(), bytearray()
        self.stdout_limit = READY_STDOUT_BYTES  # bytes; the runner raises it to what the job implies
        self.overflow = False  # stdout passed stdout_limit: the read stopped there

    def read(self, deadline: float, until: bytes | None = None) -> bool:
        """Demultiplex frames until `until` is in stdout (or EOF when None). False at the deadline;
        True, with `overflow` set, as soon as stdout passes `stdout_limit`."""
        while True:
            if until is not None and until in self.stdout:
                return True
            if self.overflow:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.raw.settimeout(remaining)
            try:
                chunk = self.raw.recv(1 << 20)  # at most 1 MiB past the limit is ever held
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
                if kind == 1:
                    self.stdout += payload
                    if len(self.stdout) > self.stdout_limit:
                        self.overflow = True
                        del self.stdout[self.stdout_limit:]
                        self.buffer.clear()
                        return True
                elif kind == 2:
                    self.stderr += payload
                    if len(self.stderr) > 2 * self.cap:
                        del self.stderr[: len(self.stderr) - self.cap]

    def alive(self) -> bool:
        """A waiting container has nothing to say: readable means it ended (EOF) or broke."""
        readable, _, _ = select.select([self.raw], [], [], 0)
        return not readable

    def close(self) -> None:
        """Shut the connection down, not only this handle: the HTTP response still holds a reference
        to the socket, so close() alone would leave it open, and an engine still copying the
        container's output into it (we stopped reading at a bound) would block there holding the
        container's lock, hanging every later inspect, kill and remove of it."""
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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


def last_stage(stdout: bytearray, nonce: str) -> str:
    marker = f"@@STAGE {nonce} ".encode()
    at = stdout.rfind(marker)
    if at < 0:
        return "start"
    return bytes(stdout[at + len(marker) : at + len(marker) + 32]).split(b"\n", 1)[0].decode("ascii", "replace")


def find_result(stdout: bytearray, nonce: str) -> bytes | None:
    """The supervisor's "@@RESULT <nonce>" line's JSON, undecoded, or None."""
    marker = f"@@RESULT {nonce} ".encode()
    at = stdout.rfind(marker)
    if at < 0:
        return None
    end = stdout.find(b"\n", at)
    with memoryview(stdout) as view:  # one copy of the line, not two
        line = view[at + len(marker) : end if end >= 0 else len(stdout)]
        try:
            return line.tobytes()
        finally:
            line.release()
