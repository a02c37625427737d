"""Which OCI runtime the sandbox's containers run under, and the seccomp profile each gets.

gVisor (`runsc`) where it works: generated code then talks to gVisor's own kernel, and the
host's sees only what gVisor itself asks of it. Elsewhere runc, with the sandbox's seccomp
profile (shared/sandboxing/seccomp.py). `sandbox.runtime`: auto (runsc when the engine lists it
and a probe container runs under it, else runc), runsc (an error where it cannot run), runc.
Every container gets the profile either way; gVisor enforces it too when registered with
--oci-seccomp, as scripts/setup-host.sh registers it.

GPUs: gVisor reaches them only through its nvproxy (`--nvproxy`, newer than Debian's build);
where GPUs are asked for and the engine's runsc is not registered with it, runc runs, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
from docker.errors import APIError, DockerException

from shared.errors import SandboxUnavailableError
from shared.sandboxing.seccomp import PROFILE_JSON

RUNTIMES = ("auto", "runsc", "runc")
# The probe: the image's own /bin/true under runsc, with the containers' security options, so a
# runtime that cannot start our containers (no netns support, a profile it rejects) is found once,
# at start, not at every job.
PROBE_CMD = ["/bin/true"]
log = structlog.get_logger()

# runsc answers an ERRNO rule with EPERM whatever its errnoRet (Debian's 2022-12 build does), so
# the profile's clone3 -> ENOSYS rule would become EPERM, which glibc takes as final: no thread
# could start. Under gVisor clone3 is let through to gVisor's kernel instead, which answers
# ENOSYS itself (or runs it, inside gVisor's own namespaces); glibc then falls back to clone.
_profile = json.loads(PROFILE_JSON)
_gvisor_rules = [rule for rule in _profile["syscalls"] if rule["names"] != ["clone3"]]
GVISOR_PROFILE_JSON = json.dumps({**_profile, "syscalls": _gvisor_rules + [
    {"names": ["clone3"], "action": "SCMP_ACT_ALLOW", "args": []}]}, separators=(",", ":"))


@dataclass(frozen=True)
class Boundary:
    """What a container of this runner runs under."""

    runtime: str  # "runsc" | "runc": passed to the engine as HostConfig.Runtime
    why: str  # one line: how it was chosen
    profile_enforced: bool = True  # False: runsc registered without --oci-seccomp ignores the profile

    @property
    def seccomp_json(self) -> str:
        return GVISOR_PROFILE_JSON if self.runtime == "runsc" else PROFILE_JSON

    @property
    def security_opt(self) -> list[str]:
        return ["no-new-privileges:true", f"seccomp={self.seccomp_json}"]

    def describe(self) -> str:
        """One line for a ready log, a health check, validate's JSON."""
        if self.runtime == "runsc":
            inside = "enforced inside gVisor" if self.profile_enforced else "not enforced: runsc lacks --oci-seccomp"
            return f"runsc (gVisor; the sandbox's seccomp profile {inside})"
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


def choose(client, setting: str | None, image: str, gpus: bool = False) -> Boundary:
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
    failure = probe(client, image, enforced := flag_on(args, "oci-seccomp"))
    if failure is None:
        return Boundary("runsc", f"sandbox.runtime is {wanted} and a probe container ran under runsc",
                        profile_enforced=enforced)
    if wanted == "runsc":
        raise SandboxUnavailableError(f"sandbox.runtime is runsc but a probe container failed under it: {failure}; "
                                      "fix runsc's registration (/etc/docker/daemon.json) or set sandbox.runtime "
                                      "to auto or runc")
    return Boundary("runc", f"a probe container failed under runsc: {failure}")


def probe(client, image: str, enforced: bool = True) -> str | None:
    """Run PROBE_CMD under runsc as the sandbox runs its containers -> None, or what went wrong."""
    boundary = Boundary("runsc", "probe", profile_enforced=enforced)
    container = None
    try:
        container = client.containers.create(image, command=PROBE_CMD, network_mode="none", runtime="runsc",
                                             read_only=True, cap_drop=["ALL"], security_opt=boundary.security_opt,
                                             user="10001:10001", labels={"org.pytorch-researcher.probe": "runsc"})
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
