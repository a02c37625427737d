"""Trusted half of the in-container harness. It never imports torch or runs generated code.

It is the container's PID 1 (no docker-init: that would run as the sandbox uid, dumpable, so
the code could ptrace it or write to /proc/1/fd/1 past the output cap). As PID 1 it reaps every
orphan, gets only the signals it handles, and its exit ends whatever the code left running.

Container stdout belongs to this process alone: the worker gets pipes for its output and for
its result, and the generated code runs in a child of the worker that holds neither the result
pipe nor this process's stdout, so nothing the code prints or writes can pose as a result.

Protocol on stdin: one JSON header line {"nonce", "job", "blob_len", "max_output_bytes",
"max_total_output_bytes"}, then blob_len bytes of data (npz). On stdout: "@@READY" once the
worker has imported torch (a pooled container waits here for its job), "@@STAGE <nonce> <name>"
as the code reaches import, init, forward, train, predict, then one "@@RESULT <nonce> <json>"
line, then it lingers until the trusted side has read the container's counters from outside (a
line on stdin, or LINGER_S) and exits. The report adds what only a trusted process can
see: the worker's exit status, and this container's cgroup counters (OOM kills, pids-cap hits).
"""

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
MAX_RESULT_BYTES = 512 * 1024 * 1024  # predictions of a large validation split, base64
PR_SET_DUMPABLE = 4
# seconds the container outlives its report at most: its cgroup counters (peak memory, CPU time)
# vanish with it, and the trusted side reads them from outside before it lets it go
LINGER_S = 30.0

# cgroup v2 (one file per counter) first, then v1's per-controller mounts.
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
PIDS_COUNTERS = ("/sys/fs/cgroup/pids.events", "/sys/fs/cgroup/pids/pids.events")


def not_dumpable():
    """No ptrace and no /proc/<pid>/mem or fd access from processes of the same uid (the code's)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def cgroup_counter(paths, key):
    for path in paths:
        try:
            with open(path) as handle:
                for line in handle:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


class OutputTap:
    """Keeps the last `cap` bytes of the worker's stdout+stderr; past `limit` bytes in all it
    kills the worker's process group (the generated code included) and says so."""

    def __init__(self, stream, pgid):
        self.stream, self.pgid = stream, pgid
        self.cap, self.limit = 65536, 64 * 1024 * 1024
        self.tail, self.total, self.too_large = bytearray(), 0, False

    def run(self):
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.total += len(chunk)
            self.tail += chunk
            if len(self.tail) > self.cap:
                del self.tail[: len(self.tail) - self.cap]
            if self.total > self.limit and not self.too_large:
                self.too_large = True
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except OSError:
                    pass


class Output:
    """This process's stdout, shared by the main thread and the result reader."""

    def __init__(self, stream):
        self.stream, self.lock, self.nonce = stream, threading.Lock(), None

    def line(self, text):
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()


class Reaper:
    """PID 1's duty: reap every child, so processes the code orphans do not linger as zombies
    holding pids under the cap. The worker's own exit status is kept (Popen.wait is not used)."""

    def __init__(self, worker_pid):
        self.worker_pid, self.code, self.done = worker_pid, None, threading.Event()

    def run(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:  # no children right now
                self.done.wait(0.05)
                continue
            except InterruptedError:
                continue
            if pid == self.worker_pid:
                self.code = os.waitstatus_to_exitcode(status)
                self.done.set()


def read_result(fd, sink, out):
    """The worker's result channel: {"stage": ...} lines as the model process reaches each stage
    (passed on at once as "@@STAGE <nonce> <stage>", so a timeout can say where the code was),
    then one final JSON line."""
    size = 0
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            size += len(line)
            if size > MAX_RESULT_BYTES:
                sink["overflow"] = True
                break
            if line.startswith(b'{"stage": '):
                try:
                    stage = json.loads(line)["stage"]
                except (ValueError, KeyError, TypeError):
                    continue
                if out.nonce and isinstance(stage, str) and stage.isalpha():
                    out.line(f"@@STAGE {out.nonce} {stage}")
                continue
            sink["data"] = line


def main():
    not_dumpable()
    out = Output(sys.stdout)
    result_r, result_w = os.pipe()
    ready_r, ready_w = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-I", WORKER, str(result_w), str(ready_w)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(result_w, ready_w),
        close_fds=True,
        start_new_session=True,  # its own process group, so an output flood can be cut at once
    )
    os.close(result_w)
    os.close(ready_w)
    # As PID 1 this process gets only the signals it handles; Python's SIGINT handler is the one
    # it has, so drop it (after starting the worker, which keeps the default): the code cannot
    # stop the report with os.kill(1, SIGINT).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Every thread this process needs starts now, before any generated code runs: a fork bomb
    # that fills the pids cap later cannot stop the harness from reading and reporting.
    tap, result, reaper = OutputTap(worker.stdout, worker.pid), {}, Reaper(worker.pid)
    threads = [threading.Thread(target=tap.run, daemon=True),
               threading.Thread(target=read_result, args=(result_r, result, out), daemon=True),
               threading.Thread(target=reaper.run, daemon=True)]
    for thread in threads:
        thread.start()
    with os.fdopen(ready_r, "rb") as ready:
        if ready.read(1) == b"R":
            out.line("@@READY")
    oom_before = cgroup_counter(OOM_COUNTERS, "oom_kill") or 0
    pids_before = cgroup_counter(PIDS_COUNTERS, "max") or 0

    header = json.loads(sys.stdin.buffer.readline())
    received = time.monotonic()
    out.nonce = header["nonce"]
    blob = sys.stdin.buffer.read(int(header.get("blob_len", 0)))
    handed = time.monotonic()
    tap.cap = int(header.get("max_output_bytes", tap.cap))
    tap.limit = int(header.get("max_total_output_bytes", tap.limit))
    try:
        worker.stdin.write(json.dumps(header["job"]).encode() + b"\n")
        worker.stdin.write(len(blob).to_bytes(8, "big") + blob)
        worker.stdin.close()
    except BrokenPipeError:  # the worker died before reading its job
        pass
    reaper.done.wait()
    worker_done = time.monotonic()
    code = reaper.code
    threads[1].join()
    threads[0].join(timeout=0.5)  # a background process the code left may hold the pipe open

    parsed, harness_completed = None, False
    if not result.get("overflow") and result.get("data"):
        try:
            parsed = json.loads(result["data"])
            harness_completed = isinstance(parsed, dict) and parsed.get("harness") == "done"
        except ValueError:
            parsed = None
    oom_after = cgroup_counter(OOM_COUNTERS, "oom_kill")
    pids_after = cgroup_counter(PIDS_COUNTERS, "max")
    report = {
        "harness_completed": harness_completed,
        "result": parsed.get("result") if harness_completed else None,
        "process": parsed.get("process") if harness_completed else None,
        "exit_code": code,
        "result_overflow": bool(result.get("overflow")),
        "output_too_large": tap.too_large,
        "output_bytes": tap.total,
        "output_tail": bytes(tap.tail).decode("utf-8", "replace"),
        "oom_kills": None if oom_after is None else oom_after - oom_before,
        "pids_cap_hits": None if pids_after is None else pids_after - pids_before,
        # seconds: the data read after the header line, and the worker's whole job (the model
        # process's run inside it)
        "timings": {"receive_s": handed - received, "worker_s": worker_done - handed},
    }
    try:  # whatever the code left running ends before the report: its cost is counted, then stops
        os.killpg(worker.pid, signal.SIGKILL)
    except OSError:
        pass
    out.line("@@RESULT " + header["nonce"] + " " + json.dumps(report))
    linger(LINGER_S)


def linger(seconds):
    """Wait for the trusted side's release (any byte on stdin, or its end) for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([0], [], [], left)[0]:
            return


if __name__ == "__main__":
    main()
