"""An embedded stack never outlives the `researcher run` that started it, however the command ends:
SIGTERM, SIGINT, SIGKILL, or a crash (its NATS server killed under it, so following the run
fails). The real command runs as a subprocess with a small goal; it is ended at a chosen moment,
then no process of its stack and no container of its services may be left after a bounded time.

The stack's processes are the CLI's children (seen before the end) and any process whose
RESEARCHER_REPLICA names the CLI's pid (LocalStack sets it); its containers carry the owner label
of the stack's sandbox and evaluator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from researcher.stack import STOP_MARGIN_S
from shared.runtime.config import Config
from shared.runtime.service import stop_limit_s
from shared.sandboxing.containers import OWNER_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("sequential_search")]

ROOT = Path(__file__).resolve().parents[2]
LEFT_S = stop_limit_s(Config()) + STOP_MARGIN_S + 20  # the longest a stack may take to be gone, seconds


def started_at(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def replicas_of(cli_pid: int) -> set[int]:
    """Processes whose RESEARCHER_REPLICA ends in -<cli pid>: the stack's services, wherever they were reparented."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if any(v.startswith(b"RESEARCHER_REPLICA=") and v.endswith(f"-{cli_pid}".encode()) for v in env):
                found.add(int(entry.name))
    return found


class Run:
    """`researcher run` on iris in a subprocess, with its own home and logs."""

    def __init__(self, tmp_path: Path) -> None:
        self.logs, self.err = tmp_path / "logs", tmp_path / "cli.err"
        cmd = [sys.executable, "-m", "researcher.cli", "run", "stack lifetime", "--dataset", "iris",
               "--max-iterations", "3", "--num-seeds", "1", "--max-epochs", "1",
               "--home", str(tmp_path / "home"), "--log-dir", str(self.logs)]
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        # a short drain: killed outright, the evaluator waits it out with its server gone (the
        # default's 30 s bound would hold here too, only slower; tests/unit covers the bounds)
        env["RESEARCHER_EVALUATOR__DRAIN_TIMEOUT_S"] = "3"
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))
        self.owners = [f"{OWNER_LABEL}={s}-{s}-{self.proc.pid}" for s in ("sandbox", "evaluator")]
        self.seen: dict[int, str] = {}

    def wait_for(self, done, what: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.note_processes()
            if done():
                self.note_processes()  # a process started between the two looks (the last of the stack's, say)
                return
            ended = self.proc.poll()
            assert ended is None, f"researcher run ended ({ended}) before {what}:\n{self.stderr()}"
            time.sleep(0.1)
        raise AssertionError(f"no {what} after {timeout} s:\n{self.stderr()}")

    def note_processes(self) -> None:
        for pid in children(self.proc.pid) | replicas_of(self.proc.pid):
            self.seen.setdefault(pid, started_at(pid))

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")[-3000:]

    def logged(self, name: str, text: str) -> bool:
        path = self.logs / f"{name}.log"
        return path.exists() and text in path.read_text(errors="replace")

    def containers(self, docker_engine) -> list:
        return [c for owner in self.owners
                for c in docker_engine.containers.list(all=True, filters={"label": owner}, ignore_removed=True)]

    def left(self, docker_engine) -> tuple[list[int], list]:
        self.seen.update({pid: started_at(pid) for pid in replicas_of(self.proc.pid) if pid not in self.seen})
        alive = [pid for pid, start in self.seen.items() if start is not None and started_at(pid) == start]
        return alive, self.containers(docker_engine)


def nats_server(run: Run) -> int:
    [pid] = [p for p in children(run.proc.pid) if "nats-server" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
    return pid


def crash(run: Run) -> None:
    """A real failure: the stack's NATS server dies, and following the run fails in the CLI."""
    os.kill(nats_server(run), signal.SIGKILL)


ENDINGS = {
    "sigterm": lambda run: run.proc.send_signal(signal.SIGTERM),
    "sigint": lambda run: run.proc.send_signal(signal.SIGINT),
    "sigkill": lambda run: run.proc.send_signal(signal.SIGKILL),
    "crash": crash,
}


@pytest.mark.parametrize(("ending", "moment", "status"), [
    ("sigterm", "mid-run", 128 + signal.SIGTERM),
    ("sigkill", "mid-run", -signal.SIGKILL),
    ("crash", "mid-run", 1),
    ("sigint", "ready", 128 + signal.SIGINT),
    ("sigterm", "starting", 128 + signal.SIGTERM),
])
def test_nothing_of_an_embedded_stack_outlives_its_command(docker_engine, tmp_path, ending, moment, status):
    run = Run(tmp_path)
    try:
        if moment == "starting":  # every process spawned, the services not all ready yet
            run.wait_for(lambda: len(children(run.proc.pid)) == 5, "stack processes")
        elif moment == "ready":
            run.wait_for(lambda: " accepted" in run.err.read_text(), "accepted goal")
        else:  # a seed training in the evaluator's container
            run.wait_for(lambda: run.logged("evaluator", '"job_started"'), "job_started")
        assert len(run.seen) == 5, run.seen  # nats-server and the four services
        if moment != "starting":
            assert run.containers(docker_engine)  # the pools, and the training container
        began = time.monotonic()
        ENDINGS[ending](run)
        assert run.proc.wait(timeout=LEFT_S) == status, run.stderr()
        if ending in ("sigterm", "sigint") and moment != "starting":  # its run ends with it, recorded
            assert "stopped; `researcher report" in run.stderr(), run.stderr()
        if ending == "crash":  # said plainly, not as a traceback
            assert "stopped answering while run" in run.stderr() and "Traceback" not in run.stderr(), run.stderr()
        deadline = began + LEFT_S
        while (left := run.left(docker_engine)) != ([], []):
            assert time.monotonic() < deadline, f"left {LEFT_S:g} s after {ending}: {left}\n{run.stderr()}"
            time.sleep(0.2)
        print(f"\n{ending} {moment}: nothing left after {time.monotonic() - began:.1f} s")
    finally:
        run.proc.kill()
        for pid, start in run.seen.items():
            if start is not None and started_at(pid) == start:
                os.kill(pid, signal.SIGKILL)
        for container in run.containers(docker_engine):
            container.remove(force=True)
