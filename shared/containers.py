"""Runs the harness on generated code inside a locked-down container, through the Docker API.

The job goes in over the attached stdin (no bind mount, no archive on a read-only root), so
the same code works on a host and inside compose. Only the supervisor's nonce-tagged result line
is believed; whatever the generated code prints is kept as a capped tail for the report.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import structlog
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig, Ulimit

from shared.errors import SandboxUnavailableError

OWNER_LABEL = "org.pytorch-researcher.owner"
JOB_LABEL = "org.pytorch-researcher.job"
HARNESS_CMD = ["/opt/venv/bin/python", "-I", "/opt/harness/supervisor.py"]
SANDBOX_UID = "10001:10001"
MAX_STDOUT_BYTES = 768 * 1024 * 1024  # the result line carries predictions
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
    max_output_bytes: int = 65536
    runtime: str | None = None
    gpus: bool = False


@dataclass
class RunOutcome:
    """What happened to one container; `report` is the supervisor's, when it finished."""

    report: dict[str, Any] | None
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    duration_s: float
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _docker() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except DockerException as exc:
        raise SandboxUnavailableError(
            f"cannot reach the Docker engine ({exc}); start it (`dockerd`, see README) or set DOCKER_HOST"
        ) from exc


class ContainerRunner:
    def __init__(self, limits: Limits, owner: str) -> None:
        self.limits, self.owner = limits, owner
        self.client = _docker()
        try:
            self.client.images.get(limits.image)
        except ImageNotFound as exc:
            raise SandboxUnavailableError(f"image {limits.image!r} not found; build it with `make images`") from exc

    def remove_strays(self) -> int:
        """Remove containers a crashed run of this owner left behind."""
        strays = self.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"})
        for container in strays:
            try:
                container.remove(force=True)
            except (NotFound, APIError):
                pass
        return len(strays)

    def _create(self, job_id: str, threads: int):
        lim = self.limits
        kwargs: dict[str, Any] = {}
        if lim.runtime:
            kwargs["runtime"] = lim.runtime
        if lim.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
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
            pids_limit=lim.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            user=SANDBOX_UID,
            init=True,  # an init that reaps zombies and forwards signals
            ulimits=[
                Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
                Ulimit(name="fsize", soft=lim.fsize_bytes, hard=lim.fsize_bytes),
                Ulimit(name="core", soft=0, hard=0),
            ],
            environment={"HOME": "/tmp", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            labels={OWNER_LABEL: self.owner, JOB_LABEL: job_id},
            log_config=LogConfig(type="none"),
            hostname="sandbox",
            working_dir="/tmp",
            **kwargs,
        )

    def run(self, job: dict[str, Any], blob: bytes, timeout_s: float, job_id: str = "") -> RunOutcome:
        """Blocking: start a container, hand it the job, read its result, remove it. Always removes."""
        started = time.monotonic()
        deadline = started + timeout_s
        nonce = secrets.token_hex(16)
        threads = max(1, int(self.limits.cpus))
        job = {**job, "threads": threads}
        try:
            container = self._create(job_id or nonce[:12], threads)
        except (APIError, DockerException) as exc:
            raise SandboxUnavailableError(f"cannot create a container: {exc}") from exc
        timed_out, stdout, stderr = False, bytearray(), bytearray()
        try:
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            raw = sock._sock
            container.start()
            header = {"nonce": nonce, "job": job, "blob_len": len(blob), "max_output_bytes": self.limits.max_output_bytes}
            raw.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                raw.sendall(json.dumps(header).encode() + b"\n" + blob)
                timed_out = not _read_frames(raw, deadline, stdout, stderr, self.limits.max_output_bytes)
            except (socket.timeout, TimeoutError):
                timed_out = True
            except OSError:  # the container closed its stdin early (died): read what is left below
                pass
            finally:
                raw.close()
            if timed_out:
                _kill(container)
            exit_code, oom = _final_state(container)
        finally:
            try:
                container.remove(force=True)
            except (NotFound, APIError):
                pass
        return RunOutcome(
            report=_find_result(stdout, nonce),
            exit_code=exit_code,
            timed_out=timed_out,
            oom_killed=oom,
            duration_s=time.monotonic() - started,
            stderr_tail=bytes(stderr[-self.limits.max_output_bytes :]).decode("utf-8", "replace"),
        )


def _read_frames(raw: socket.socket, deadline: float, stdout: bytearray, stderr: bytearray, cap: int) -> bool:
    """Demultiplex docker's attach stream until EOF. False when the deadline passed first."""
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        raw.settimeout(remaining)
        try:
            chunk = raw.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return False
        if not chunk:
            return True
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            payload = bytes(buffer[8 : 8 + size])
            del buffer[: 8 + size]
            if kind == 1 and len(stdout) < MAX_STDOUT_BYTES:
                stdout += payload
            elif kind == 2:
                stderr += payload
                if len(stderr) > 2 * cap:
                    del stderr[: len(stderr) - cap]


def _kill(container) -> None:
    try:
        container.kill()  # SIGKILL: whatever the code does with signals
    except (NotFound, APIError):
        pass


def _final_state(container) -> tuple[int | None, bool]:
    try:
        status = container.wait(timeout=30)
        container.reload()
        return status.get("StatusCode"), bool(container.attrs["State"].get("OOMKilled"))
    except Exception:  # the engine lost it: report what we know
        return None, False


def _find_result(stdout: bytes | bytearray, nonce: str) -> dict[str, Any] | None:
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
