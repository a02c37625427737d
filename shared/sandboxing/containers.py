"""Runs the harness on generated code inside a locked-down container, through the Docker API.

The job goes in over the attached stdin (no bind mount, no archive on a read-only root), so
the same code works on a host and inside compose. Only the supervisor's nonce-tagged result line
is believed; whatever the generated code prints is kept as a capped tail for the report.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgspec
import structlog
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig, Ulimit

from shared.runtime.laps import Laps
from shared.sandboxing.boundary import Boundary, choose
# RunOutcome and stable_replica_name lived here once: still imported from here
from shared.sandboxing.container_io import Attached, RunOutcome, end, kill, last_stage, read_report, remove  # noqa: F401
from shared.sandboxing.engine import connect_engine, stable_replica_name  # noqa: F401
from shared.sandboxing.cost import GpuSampler, read_counters, seed_cost
from shared.sandboxing.pool import WarmPool
from shared.sandboxing.protocol import ContainerJob, max_report_bytes
from shared.errors import SandboxUnavailableError

OWNER_LABEL = "org.pytorch-researcher.owner"
JOB_LABEL = "org.pytorch-researcher.job"
EXPIRES_LABEL = "org.pytorch-researcher.expires"  # unix time after which any service may remove it
HARNESS_CMD = ["/opt/venv/bin/python", "-I", "/opt/harness/supervisor.py"]
SANDBOX_UID = "10001:10001"
READY_LINE = b"@@READY\n"
START_TIMEOUT_S = 120.0  # create, start and import torch
# cgroup CPU weights (docker's cpu_shares; 1024 is its default). A pooled container starting, or
# waiting, has the lowest, so a refill importing torch yields the cores to the job in hand; it gets
# the default the moment it is given a job. Measured on 2 cores, a 2-epoch digits job with its
# refill starting beside it: at equal weight it trained 0.66-1.31 s and spent 0.44-0.81 s outside
# training; at the lowest weight for the refill, 0.35-0.38 s and 0.33-0.37 s.
POOL_CPU_SHARES = 2
JOB_CPU_SHARES = 1024
log = structlog.get_logger()


@dataclass(frozen=True)
class Limits:
    image: str
    memory: str = "2g"
    cpus: float = 1.0
    pids: int = 128
    tmpfs_size: str = "64m"
    tmpfs_inodes: int = 4096
    nofile: int = 256
    fsize_bytes: int = 64 * 1024 * 1024
    max_output_bytes: int = 65536  # tail of the code's stdout+stderr kept for the report
    max_total_output_bytes: int = 64 * 1024 * 1024  # past this the code's processes are killed
    # auto | runsc | runc (None: auto), resolved once per runner (shared/sandboxing/boundary.py); the
    # configuration's default is auto, a Limits built by hand (the tests') runs runc unless told
    runtime: str | None = "runc"
    gpus: bool = False
    gpu_ids: tuple[str, ...] = ()  # with gpus: only these devices (indices or UUIDs); (): all


def gpu_request(gpu_ids: tuple[str, ...] = ()) -> DeviceRequest:
    """The containers' GPUs: these devices (host indices or UUIDs, as `docker run --gpus
    '"device=0,2"'`), or every one when none is named."""
    if gpu_ids:
        return DeviceRequest(driver="nvidia", device_ids=list(gpu_ids), capabilities=[["gpu"]])
    return DeviceRequest(count=-1, capabilities=[["gpu"]])


class ContainerRunner:
    """Runs harness jobs in single-use locked-down containers, optionally from a warm pool.

    A pooled container has been created, started and has imported torch; it waits for its job
    on stdin and is removed after that one job, whatever happened. Thread-safe: `run` may be
    called from several threads at once (the sandbox service's concurrency limit bounds them).
    """

    def __init__(self, limits: Limits, owner: str, *, pool_size: int = 0, max_idle_s: float = 600.0,
                 max_job_s: float = 3600.0, warm_flops: bool = False, warm_train: bool = False,
                 measure_cost: bool = False) -> None:
        self.limits, self.owner = limits, owner
        self.measure_cost = measure_cost  # training containers: each job's cost, from the engine (RunOutcome.cost)
        self.max_idle_s, self.max_job_s = max_idle_s, max_job_s
        self.warm_flops = warm_flops  # validation containers: pooled ones warm the FLOP counter too
        self.warm_train = warm_train  # training containers: pooled ones import what an optimizer needs too
        self.client = connect_engine()
        try:
            self.client.images.get(limits.image)
        except ImageNotFound as exc:
            raise SandboxUnavailableError(f"image {limits.image!r} not found; build it with `make images`") from exc
        self._pool = WarmPool(pool_size, lambda created: self._start("pool", POOL_CPU_SHARES, created), self._prioritise,
                              max_idle_s=max_idle_s, name=owner, start_timeout_s=START_TIMEOUT_S)
        self._running: set = set()  # containers with a job in hand, for abort_running
        self._running_lock = threading.Lock()
        self._retiring: list[threading.Thread] = []  # containers being removed behind their jobs
        self._boundary: Boundary | None = None
        self._boundary_lock = threading.Lock()

    @property
    def boundary(self) -> Boundary:
        """The runtime and seccomp profile of this runner's containers, chosen (runsc probed) on first
        use: after make_eval_runner has settled the GPUs, which decide whether gVisor can run."""
        with self._boundary_lock:
            if self._boundary is None:
                self._boundary = choose(self.client, self.limits.runtime, self.limits.image, self.limits.gpus, self.owner)
                log.info("container_runtime", runtime=self._boundary.runtime, why=self._boundary.why,
                         profile_enforced=self._boundary.profile_enforced, owner=self.owner)
            return self._boundary

    @property
    def pool_size(self) -> int:
        return self._pool.size

    @pool_size.setter
    def pool_size(self, size: int) -> None:  # before start_pool(): the benches compare sizes on one runner
        self._pool.size = size

    # ---- housekeeping ----
    def remove_strays(self) -> int:
        """Remove what a crashed run of this owner left behind, and any project container past its expiry."""
        # Another process (a second CLI, a replica) may remove any of these between the list and
        # the look at its labels: one that vanished is skipped, never an error.
        removed, now, expired = self._remove_own(), time.time(), []
        for container in self._list({"label": OWNER_LABEL}):
            try:
                if float(container.labels.get(EXPIRES_LABEL, "inf")) < now:
                    expired.append(container)
            except (ValueError, NotFound):
                continue
        for container in expired:
            remove(container)
        return removed + len(expired)

    def _list(self, filters: dict) -> list:
        try:
            return self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        except NotFound:  # an engine that lost one mid-listing: what is left is found next time
            return []

    def start_pool(self) -> None:
        """Start keeping `pool_size` warm containers (no-op for a pool size of 0)."""
        self._pool.start()

    def close(self) -> None:
        """Stop refilling and remove every container of this owner: the warm ones, one the filler
        is starting and any with a job still in hand (its run() returns, failed). By label, so that
        what a thread cut short left behind goes too; again after the fillers have ended, for one
        they may have created meanwhile (removed under it, its start fails at once)."""
        self._pool.stop()
        self.wait_retired()
        self._remove_own()
        if self._pool.join():
            self._remove_own()

    def wait_retired(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until every container removed behind its job is gone."""
        with self._running_lock:
            retiring = list(self._retiring)
        for thread in retiring:
            thread.join(timeout=timeout_s)

    def _remove_own(self) -> int:
        mine = self._list({"label": f"{OWNER_LABEL}={self.owner}"})
        for container in mine:
            remove(container)
        return len(mine)

    def abort_running(self) -> int:
        """SIGKILL every container with a job in hand (their run() calls return at once, failed);
        -> how many. For a service handing its jobs back as it stops."""
        with self._running_lock:
            running = list(self._running)
        for container in running:
            kill(container)
        return len(running)

    def wait_warm(self, count: int | None = None, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Block until the pool holds `count` (default: pool_size) warm containers."""
        return self._pool.wait_warm(count, timeout_s)

    # ---- one container ----
    def _create(self, job_id: str, threads: int, cpu_shares: int = JOB_CPU_SHARES):
        lim = self.limits
        boundary = self.boundary
        if not boundary.reweights:
            cpu_shares = JOB_CPU_SHARES  # it could never be raised to it when given its job
        kwargs: dict[str, Any] = {}
        if lim.gpus:
            kwargs["device_requests"] = [gpu_request(lim.gpu_ids)]
        expires = int(time.time() + START_TIMEOUT_S + self.max_idle_s + self.max_job_s + 60)
        return self.client.containers.create(
            lim.image,
            command=HARNESS_CMD,
            stdin_open=True,
            tty=False,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={lim.tmpfs_size},nr_inodes={lim.tmpfs_inodes},mode=1777"},
            mem_limit=lim.memory,
            memswap_limit=lim.memory,  # swap equal to memory: no swap at all
            nano_cpus=int(lim.cpus * 1e9),
            cpu_shares=cpu_shares,
            pids_limit=lim.pids,
            cap_drop=["ALL"],
            # no-new-privileges and the sandbox's own seccomp profile (Docker's default less io_uring
            # and more: shared/sandboxing/seccomp.py), under runc or gVisor
            security_opt=boundary.security_opt,
            runtime=boundary.runtime,
            user=SANDBOX_UID,
            # No docker-init: it would run as the sandbox uid and be dumpable, so the code could
            # open /proc/1/fd/1 (container stdout, past the output cap) and ptrace it. The
            # supervisor is PID 1 instead: non-dumpable, immune to the code's signals, and its
            # exit ends every process the code left behind.
            init=False,
            ulimits=[
                Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
                Ulimit(name="fsize", soft=lim.fsize_bytes, hard=lim.fsize_bytes),
                Ulimit(name="core", soft=0, hard=0),
            ],
            environment={"HOME": "/tmp", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                         # idle OpenMP threads sleep instead of spinning: replicas sharing cores do not
                         # burn them on one another's barriers
                         "OMP_WAIT_POLICY": "PASSIVE",
                         # a pooled validation container's start-up is off the clock: it warms the
                         # FLOP counter too (training containers never count FLOPs)
                         "HARNESS_WARM_FLOPS": "1" if self.warm_flops and self.pool_size > 0 else "0",
                         "HARNESS_WARM_TRAIN": "1" if self.warm_train and self.pool_size > 0 else "0"},
            labels={OWNER_LABEL: self.owner, JOB_LABEL: job_id, EXPIRES_LABEL: str(expires)},
            log_config=LogConfig(type="none"),
            hostname="sandbox",
            working_dir="/tmp",
            **kwargs,
        )

    def _start(self, job_id: str, cpu_shares: int = JOB_CPU_SHARES, on_created: Callable | None = None) -> Attached:
        """Create, attach and start a container, and wait until its harness has imported torch;
        `on_created(container)` is told of it as soon as the engine has made it."""
        started = time.monotonic()
        try:
            container = self._create(job_id, max(1, int(self.limits.cpus)), cpu_shares)
        except (APIError, DockerException) as exc:
            raise SandboxUnavailableError(f"cannot create a container: {exc}") from exc
        if on_created is not None:
            on_created(container)
        try:
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container.start()
            warm = Attached(container, sock, started, self.limits.max_output_bytes)
            if not warm.read(started + START_TIMEOUT_S, until=READY_LINE) or READY_LINE not in warm.stdout:
                tail = bytes(warm.stderr[-2000:]).decode("utf-8", "replace")
                raise SandboxUnavailableError(f"the sandbox harness did not start within {START_TIMEOUT_S:g} s: {tail}")
            if self.measure_cost:  # the job's CPU time counts from here (a pooled one's start is not its)
                warm.ready_counters = read_counters(container)
            return warm
        except BaseException as exc:
            remove(container)
            if isinstance(exc, SandboxUnavailableError):
                raise
            if isinstance(exc, (APIError, DockerException, OSError)):
                raise SandboxUnavailableError(f"cannot start a container: {exc}") from exc
            raise

    def run(self, job: ContainerJob, blob: bytes, timeout_s: float, job_id: str = "") -> RunOutcome:
        """Blocking: hand the job to a warm (or a freshly started) container, read its result,
        remove it. The hard timeout counts from the hand-over; the container is always removed,
        and killed first when it timed out or wrote more than the job implies. Once a whole report
        is read, the container's end (its exit, its removal) happens behind the job, off its path."""
        laps = Laps()
        nonce = secrets.token_hex(16)
        warm = self._pool.take()
        pooled = warm is not None
        if warm is None:
            warm = self._start(job_id or nonce[:12])
        else:
            self._prioritise(warm.container)
        laps.lap("container_wait_s")
        log.debug("container_job", job_id=job_id, container=warm.container.short_id, pooled=pooled)
        deadline = time.monotonic() + timeout_s
        job = msgspec.structs.replace(job, threads=max(1, int(self.limits.cpus)))
        limit = max_report_bytes(job, self.limits.max_output_bytes)
        warm.stdout_limit = len(warm.stdout) + limit
        timed_out, ended, cost = False, False, None
        with self._running_lock:
            self._running.add(warm.container)
        try:
            header = {"nonce": nonce, "job": msgspec.to_builtins(job), "blob_len": len(blob),
                      "max_output_bytes": self.limits.max_output_bytes,
                      "max_total_output_bytes": self.limits.max_total_output_bytes}
            warm.raw.settimeout(max(0.1, deadline - time.monotonic()))
            handed = time.monotonic()
            gpu = GpuSampler(warm.container.id).start() if self.measure_cost and self.limits.gpus else None
            try:
                warm.raw.sendall(msgspec.json.encode(header) + b"\n" + blob)
                laps.lap("send_s")
                timed_out = not warm.read(deadline, until=f"@@RESULT {nonce} ".encode(), line=True)
            except (socket.timeout, TimeoutError):
                timed_out = True
            except OSError:  # the container closed its stdin early (died): read what is left below
                pass
            finally:
                if self.measure_cost:  # before the supervisor may exit: its cgroup's counters go with it
                    wall_s = time.monotonic() - handed
                    cost = seed_cost(warm.ready_counters, read_counters(warm.container), wall_s, self.boundary.runtime,
                                     gpu.stop() if gpu else None)
                warm.release()
                warm.close()
            laps.lap("in_container_s")
            report, bad = read_report(warm, nonce, job, limit)
            laps.lap("decode_s")
            exit_code, oom = end(warm, report, kill_first=timed_out or warm.overflow, retire=self._retire)
            ended = True
            laps.lap("end_s")
        finally:
            with self._running_lock:
                self._running.discard(warm.container)
            if not ended:
                remove(warm.container)
        return RunOutcome(
            report=report,
            bad_report=bad,
            report_limit=limit,
            exit_code=exit_code,
            timed_out=timed_out,
            oom_killed=oom,
            duration_s=laps.total(),
            stderr_tail=bytes(warm.stderr[-self.limits.max_output_bytes :]).decode("utf-8", "replace"),
            pooled=pooled,
            timings=laps.seconds,
            stage=last_stage(warm.stdout, nonce),
            cost=cost,
        )

    def _retire(self, container) -> None:
        """Remove `container` in the background; close() waits for every one still going."""
        thread = threading.Thread(target=remove, args=(container,), name="retire", daemon=True)
        with self._running_lock:
            self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
        thread.start()

    def _prioritise(self, container) -> None:
        """A pooled container given its job: the default CPU weight, from the lowest it waited at."""
        if not self.boundary.reweights:
            return
        try:
            container.update(cpu_shares=JOB_CPU_SHARES)
        except NotFound:  # removed meanwhile (a refill that failed, a runner closing)
            pass
        except (APIError, DockerException) as exc:  # it runs at the low weight: slower, not wrong
            log.warning("container_not_prioritised", container=container.short_id, error=str(exc))
