"""What a training container cost, read from outside the code: the engine's stats (its cgroup's
counters), a cgroup v2 host's own files where the engine gives no peak, and NVML for the GPUs.
Never the generated code's or the in-container harness's word.

The counters vanish with the container, so the runner reads them once its report is in and
before it lets the supervisor exit (sandbox-image/harness/supervisor.py lingers for that). A
pooled container imported torch before its job: its CPU time is counted from the harness's ready
line (`Counters` read then), while its memory high-water mark, which cannot be reset from
outside, includes that warm harness; `baseline_memory_bytes` says how much it held then.
Under gVisor (runsc) the engine's stats are the sandbox's, its Sentry's own memory included.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass

import structlog
from docker.errors import DockerException

from shared.messaging.messages import SeedCost

# cgroup v2 hosts: where a container's cgroup lives, by the engine's cgroup driver (systemd, cgroupfs)
CGROUP_ROOT = "/sys/fs/cgroup"
V2_DIRS = ("system.slice/docker-{id}.scope", "docker/{id}")
V1_PROCS = "memory/docker/{id}/cgroup.procs"
GPU_SAMPLE_S = 0.5  # seconds between NVML samples: a shorter kernel burst between two is missed
log = structlog.get_logger()


@dataclass(frozen=True)
class Counters:
    """One reading of a container's cgroup, through the engine."""

    cpu_ns: int | None  # user + system CPU time of all its processes since it started
    memory_bytes: int | None  # in use now (page cache included, as the cgroup charges it)
    peak_memory_bytes: int | None  # high-water mark since it started
    source: str


def read_counters(container, cgroup_root: str = CGROUP_ROOT) -> Counters | None:
    """The container's counters now, or None when the engine has none (it ended, or was removed)."""
    try:
        stats = container.stats(stream=False, one_shot=True)  # one sample: no second one a second later
    except (DockerException, OSError, ValueError) as exc:
        log.debug("container_stats_unread", container=container.short_id, error=str(exc))
        return None
    return counters_of(stats, container.id, cgroup_root)


def counters_of(stats: dict, container_id: str, cgroup_root: str = CGROUP_ROOT) -> Counters | None:
    """The engine's stats (GET /containers/{id}/stats) -> Counters. cgroup v1 gives `max_usage`;
    v2 gives none, so the peak comes from the cgroup's own memory.peak (kernel 5.19+) where
    this process can read the host's cgroup tree."""
    memory = stats.get("memory_stats") or {}
    cpu_ns = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if not memory and not cpu_ns:  # an ended container's stats are empty
        return None
    peak, source = memory.get("max_usage"), "cgroup v1 (docker stats)"
    if not peak:
        peak = v2_peak(container_id, cgroup_root)
        source = "cgroup v2 (docker stats, memory.peak)" if peak else "cgroup v2 (docker stats; no peak readable)"
    return Counters(cpu_ns=cpu_ns, memory_bytes=memory.get("usage"), peak_memory_bytes=peak or None, source=source)


def v2_peak(container_id: str, cgroup_root: str = CGROUP_ROOT) -> int | None:
    for pattern in V2_DIRS:
        try:
            with open(os.path.join(cgroup_root, pattern.format(id=container_id), "memory.peak")) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def seed_cost(ready: Counters | None, end: Counters | None, wall_s: float, runtime: str | None = None,
              gpu: tuple[float, int] | None = None) -> SeedCost:
    """The figures of one job: CPU from its container's ready line to its report (from the
    container's start when the ready reading is missing), the memory peak, the job's wall time
    (seconds, hand-over to report, by the trusted side's clock), and the GPU's (seconds, bytes)."""
    source = end.source if end is not None else "engine clock only (the container's counters were gone)"
    cpu_s = None
    if end is not None and end.cpu_ns is not None:
        since = ready.cpu_ns if ready is not None and ready.cpu_ns is not None else 0
        cpu_s = round(max(0, end.cpu_ns - since) / 1e9, 3)
        if ready is None:
            source += ", CPU from the container's start"
    if runtime == "runsc":
        source += ", gVisor's Sentry included"
    if gpu is not None:
        source += ", nvml"
    return SeedCost(wall_s=round(wall_s, 3), cpu_s=cpu_s, peak_memory_bytes=end.peak_memory_bytes if end else None,
                    gpu_s=round(gpu[0], 3) if gpu else None, peak_gpu_memory_bytes=gpu[1] if gpu else None,
                    measured_by=source, baseline_memory_bytes=ready.memory_bytes if ready else None)


# ---- GPUs: sampled while the job runs (a process's GPU memory is gone once it exits) ----
def container_pids(container_id: str, cgroup_root: str = CGROUP_ROOT) -> set[int]:
    """The container's processes as the host numbers them (NVML's numbering), from its cgroup."""
    for pattern in (V1_PROCS, *(f"{d}/cgroup.procs" for d in V2_DIRS)):
        try:
            with open(os.path.join(cgroup_root, pattern.format(id=container_id))) as handle:
                return {int(line) for line in handle if line.strip()}
        except (OSError, ValueError):
            continue
    return set()


def gpu_apps() -> tuple[dict[int, tuple[str, int]], dict[str, float]] | None:
    """-> ({host pid: (its GPU's uuid, its GPU memory bytes)} of every compute process, {GPU uuid:
    utilisation 0..1}), or None without nvidia-smi."""
    try:
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
                              check=True).stdout
        util = subprocess.run(["nvidia-smi", "--query-gpu=uuid,utilization.gpu", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_apps(apps), parse_loads(util)


def parse_apps(text: str) -> dict[int, tuple[str, int]]:
    """nvidia-smi's "pid, gpu_uuid, used_memory [MiB]" lines (a process on two GPUs: its memory summed)."""
    used: dict[int, tuple[str, int]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3 and fields[0].isdigit() and fields[2].isdigit():
            pid = int(fields[0])
            used[pid] = (fields[1], used.get(pid, ("", 0))[1] + int(fields[2]) * 2**20)
    return used


def parse_loads(text: str) -> dict[str, float]:
    """nvidia-smi's "uuid, utilization.gpu [%]" lines."""
    loads = {}
    for line in text.splitlines():
        uuid, _, value = (f.strip() for f in line.partition(","))
        if uuid and value.replace(".", "", 1).isdigit():
            loads[uuid] = float(value) / 100
    return loads


class GpuSampler:
    """While a job runs: the container's processes' GPU memory high-water mark, and its GPU
    seconds (each interval in which one of them holds a context, weighted by the GPUs'
    utilisation). Not measured here (no GPU has been available to this project)."""

    def __init__(self, container_id: str, every_s: float = GPU_SAMPLE_S, cgroup_root: str = CGROUP_ROOT) -> None:
        self.container_id, self.every_s, self.cgroup_root = container_id, every_s, cgroup_root
        self.gpu_s, self.peak, self.seen = 0.0, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    def stop(self) -> tuple[float, int] | None:
        """-> (GPU seconds, peak GPU memory bytes), or None when none of the container's processes
        was ever seen on a GPU (no nvidia-smi, or one that cannot see them: never a measured 0)."""
        self._stop.set()
        self._thread.join(timeout=10)
        return (self.gpu_s, self.peak) if self.seen else None

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            sample = gpu_apps()
            now = time.monotonic()
            if sample is not None:
                used, loads = sample
                pids = container_pids(self.container_id, self.cgroup_root) if used else set()
                mine = [used[pid] for pid in pids if pid in used]
                if mine:  # the load of the GPUs its processes are on, not of every GPU of the machine
                    self.seen = True
                    self.peak = max(self.peak, sum(b for _, b in mine))
                    gpus = {uuid for uuid, _ in mine}
                    self.gpu_s += (now - last) * sum(loads.get(u, 0.0) for u in gpus)  # GPU-seconds: per GPU
            last = now
            self._stop.wait(self.every_s)
