"""Which OCI runtime the sandbox's containers run under, and the seccomp profile each gets.

gVisor (`runsc`) where it works: generated code then talks to gVisor's own kernel, and the
host's sees only what gVisor itself asks of it. Elsewhere runc, with the sandbox's seccomp
profile (shared/sandboxing/seccomp.py). `sandbox.runtime`: auto (runsc when the engine lists it
and a probe container runs under it, else runc), runsc (an error where it cannot run), runc.
Every container carries the profile either way; gVisor enforces it only when registered with
--oci-seccomp, which scripts/setup-host.sh does not do (Debian's 2022-12 build then refuses calls the
profile allows: select(), and clone3 answered EPERM for ENOSYS, so no thread starts). Under gVisor
the code's system calls reach gVisor's kernel (io_uring included), and the host's kernel sees only
gVisor's own calls, under gVisor's own seccomp filter.

GPUs: gVisor reaches them only through its nvproxy (`--nvproxy`, newer than Debian's build);
where GPUs are asked for and the engine's runsc is not registered with it, runc runs, and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from docker.errors import APIError, DockerException

from shared.errors import SandboxUnavailableError
from shared.sandboxing.seccomp import PROFILE_JSON

RUNTIMES = ("auto", "runsc", "runc")
# The probe: the image's Python under runsc with the containers' security options, starting a thread
# and waiting in select() as the harness does, so a runsc that cannot run our containers (a
# registration without --network=none, an --oci-seccomp that refuses what the profile allows) is
# found once, at start, and runc runs instead.
PROBE_CMD = ["/opt/venv/bin/python", "-I", "-S", "-c",
             "import os, select, threading; r, w = os.pipe(); t = threading.Thread(target=os.write, args=(w, b'x'));"
             " t.start(); assert select.select([r], [], [], 30)[0]; t.join()"]
log = structlog.get_logger()


@dataclass(frozen=True)
class Boundary:
    """What a container of this runner runs under."""

    runtime: str  # "runsc" | "runc": passed to the engine as HostConfig.Runtime
    why: str  # one line: how it was chosen
    profile_enforced: bool = True  # False: runsc registered without --oci-seccomp carries the profile unread

    @property
    def security_opt(self) -> list[str]:
        return ["no-new-privileges:true", f"seccomp={PROFILE_JSON}"]

    @property
    def reweights(self) -> bool:
        """Whether a running container's CPU weight can be changed (`docker update`): runsc (Debian's
        2022-12 build) has no `update` command, so under it pooled containers start at the job's weight."""
        return self.runtime == "runc"

    def describe(self) -> str:
        """One line for a ready log, a health check, validate's JSON."""
        if self.runtime == "runsc":
            inside = ("enforced inside gVisor too" if self.profile_enforced
                      else "left to gVisor's own kernel and host filter")
            return f"runsc (gVisor; system calls reach gVisor's kernel, the seccomp profile {inside})"
        return "runc (the sandbox's seccomp profile: Docker's default less io_uring and more)"


def runtime_setting(value: str | None) -> str:
    """sandbox.runtime -> auto | runsc | runc (unset: auto); ValueError naming the key otherwise."""
    chosen = (value or "auto").strip().lower()
    if chosen not in RUNTIMES:
        raise ValueError(f"sandbox.runtime must be auto, runsc or runc, not {value!r} "
                         "(RESEARCHER_SANDBOX__RUNTIME=runc, say)")
    return chosen


def registered_runsc(runtimes: dict) -> dict | None:
    """The engine's runsc entry (`docker info`'s Runtimes), or None when it has none."""
    entry = runtimes.get("runsc")
    return entry if isinstance(entry, dict) else ({} if entry is not None else None)


def _args(entry: dict) -> list[str]:
    return [str(arg) for arg in (entry.get("runtimeArgs") or entry.get("runtimeargs") or [])]


def flag_on(args: list[str], flag: str) -> bool:
    """Whether runsc's `args` turn `flag` (e.g. "oci-seccomp") on: --flag, -flag, --flag=true."""
    on = False
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        if name == flag:
            on = value.lower() in ("", "true", "1")
    return on


def choose(client, setting: str | None, image: str, gpus: bool = False, owner: str = "probe") -> Boundary:
    """The runtime for containers of `image` on this engine (see the module's docstring)."""
    wanted = runtime_setting(setting)
    if wanted == "runc":
        return Boundary("runc", "sandbox.runtime is runc")
    try:
        entry = registered_runsc(client.info().get("Runtimes") or {})
    except (APIError, DockerException) as exc:
        raise SandboxUnavailableError(f"the Docker engine did not say which runtimes it has: {exc}") from exc
    if entry is None:
        if wanted == "runsc":
            raise SandboxUnavailableError(
                "sandbox.runtime is runsc but the Docker engine lists no runsc runtime; install and register "
                "gVisor (`bash scripts/setup-host.sh` does both where Debian has runsc), or set "
                "sandbox.runtime to auto or runc")
        return Boundary("runc", "the engine lists no runsc runtime (gVisor not installed or not registered)")
    args = _args(entry)
    if gpus and not flag_on(args, "nvproxy"):
        return Boundary("runc", "GPUs are passed through and the engine's runsc is not registered with --nvproxy, "
                                "gVisor's GPU support")
    failure = probe(client, image, enforced := flag_on(args, "oci-seccomp"), owner)
    if failure is None:
        return Boundary("runsc", f"sandbox.runtime is {wanted} and a probe container ran under runsc",
                        profile_enforced=enforced)
    if wanted == "runsc":
        raise SandboxUnavailableError(f"sandbox.runtime is runsc but a probe container failed under it: {failure}; "
                                      "fix runsc's registration (/etc/docker/daemon.json) or set sandbox.runtime "
                                      "to auto or runc")
    return Boundary("runc", f"a probe container failed under runsc: {failure}")


def probe(client, image: str, enforced: bool = True, owner: str = "probe") -> str | None:
    """Run PROBE_CMD under runsc as the sandbox runs its containers -> None, or what went wrong. It
    carries the runner's owner label (the compose stack's Docker socket proxy passes no other) and
    an expiry, so a probe a crash left behind is removed as a stray."""
    from shared.sandboxing.containers import EXPIRES_LABEL, OWNER_LABEL  # containers imports this module

    boundary = Boundary("runsc", "probe", profile_enforced=enforced)
    container = None
    try:
        container = client.containers.create(image, command=PROBE_CMD, network_mode="none", runtime="runsc",
                                             read_only=True, cap_drop=["ALL"], security_opt=boundary.security_opt,
                                             user="10001:10001",
                                             labels={OWNER_LABEL: owner, EXPIRES_LABEL: str(time.time() + 300),
                                                     "org.pytorch-researcher.probe": "runsc"})
        container.start()
        status = container.wait(timeout=60).get("StatusCode")
        return None if status == 0 else f"it exited with status {status}"
    except Exception as exc:  # a runtime that will not start is an answer, whatever the engine raises
        return f"{type(exc).__name__}: {exc}".strip()[:500]
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (APIError, DockerException):
                pass
