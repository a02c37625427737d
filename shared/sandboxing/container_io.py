"""One container's attached stream and its end: docker's multiplexed stdout/stderr read until
the harness's ready or result line, the nonce-tagged result and stage lines found in it, the
report decoded, and the container killed, waited for and removed (behind the job when it could
say all there was to say)."""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from docker.errors import APIError, NotFound

from shared.messaging.messages import SeedCost
from shared.sandboxing.cost import Counters
from shared.sandboxing.protocol import BadReport, ContainerJob, Report, decode_report

READY_STDOUT_BYTES = 64 * 1024  # before its job a container says only "@@READY"


@dataclass
class RunOutcome:
    """What happened to one container; `report` is the supervisor's, decoded strictly, when it
    finished and its report was well-formed (else `bad_report` says why)."""

    report: Report | None
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    duration_s: float
    stderr_tail: str = ""
    pooled: bool = False
    # seconds, by this process's clock: container_wait_s (a warm one taken, or a cold one started),
    # send_s (the job and its data written), in_container_s (until its report line was read),
    # decode_s, end_s (kill, exit state, removal, when on the job's path: 0 when done behind it)
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = "start"  # the last stage the harness saw the code reach (import, init, forward, ...)
    bad_report: str | None = None  # why the report was rejected: malformed, or more bytes than the job implies
    report_limit: int = 0  # bytes of stdout the job allowed
    cost: SeedCost | None = None  # what the job cost, read from outside (training runners measure it)


class Attached:
    """A started container and its attach stream: stdin in, docker's multiplexed stdout/stderr out."""

    def __init__(self, container, sock, started_at: float, cap: int) -> None:
        self.container, self.raw, self.started_at, self.cap = container, sock._sock, started_at, cap
        self._sock = sock  # keeps the response object (and so the connection) alive
        self.buffer, self.stdout, self.stderr = bytearray(), bytearray(), bytearray()
        self.stdout_limit = READY_STDOUT_BYTES  # bytes; the runner raises it to what the job implies
        self.overflow = False  # stdout passed stdout_limit: the read stopped there
        self.ended = False  # the stream reached EOF: the container ended
        # read's search: what for, where it was found (-1: not yet), where the next look starts
        self._until, self._found, self._searched = b"", -1, 0
        self.ready_counters: Counters | None = None  # its cgroup once its harness was ready (training runners)

    def read(self, deadline: float, until: bytes | None = None, line: bool = False) -> bool:
        """Demultiplex frames until `until` is in stdout or the stream ends (EOF: `ended` set);
        with `line`, until the line `until` starts has ended too (a whole result line: the
        container's exit need not be waited for). False only at the deadline; True, with
        `overflow` set, as soon as stdout passes `stdout_limit`."""
        while True:
            if until is not None and self._has(until, line):
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
                self.ended = True
                return True
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

    def _has(self, until: bytes, line: bool) -> bool:
        """`until` in stdout (and a newline after it, with `line`), searching only what came since
        the last look: a report of many MB arrives in many chunks."""
        if until != self._until:  # a new search (the job's result after the ready line)
            self._until, self._found, self._searched = until, -1, 0
        if self._found < 0:
            at = self.stdout.find(until, max(0, self._searched - len(until) + 1))
            self._searched = len(self.stdout)
            if at < 0:
                return False
            self._found, self._searched = at, at + len(until)
        if not line or self.stdout.find(b"\n", self._searched) >= 0:
            return True
        self._searched = len(self.stdout)
        return False

    def release(self) -> None:
        """Let the supervisor exit: its counters have been read (or will not be)."""
        try:
            self.raw.settimeout(1.0)
            self.raw.sendall(b"\n")
        except OSError:  # it ended already
            pass

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


def read_report(warm: Attached, nonce: str, job: ContainerJob, limit: int) -> tuple[Report | None, str | None]:
    """-> (the supervisor's report, decoded strictly, or None; why it was rejected, or None)."""
    if warm.overflow:
        return None, f"the container wrote more than {limit:,} bytes of report, all its job can explain; it was killed"
    line = find_result(warm.stdout, nonce)
    if line is None:
        return None, None
    try:
        return decode_report(line, job), None
    except BadReport as exc:
        return None, f"the harness's report is malformed: {exc}"


def end(warm: Attached, report: Report | None, kill_first: bool, retire: Callable) -> tuple[int | None, bool]:
    """The container's end -> (its exit code, whether the engine saw an OOM kill). One whose report
    came whole, and could count its own OOM kills, has said all there is: `retire` removes it
    behind the job (its exit code is not asked for: None). Any other is waited for here, its exit
    state read for the failure's message, then removed."""
    if report is not None and report.oom_kills is not None and not kill_first:
        retire(warm.container)
        return None, False
    if kill_first:
        kill(warm.container)
    state = final_state(warm.container)
    remove(warm.container)
    return state
