"""The sandbox's own seccomp profile: Docker's default, less what a model never needs.

Every sandbox and training container gets `security_opt=["seccomp=<PROFILE_JSON>"]`, under runc
and under gVisor (which enforces it in its own kernel when registered with --oci-seccomp). The
profile is `seccomp.json` beside this module, derived from Docker 20.10.24's
profiles/seccomp/default.json (moby v20.10.24, as Debian ships it in
golang-github-docker-docker-dev 20.10.24+dfsg1-1+deb12u1) by `derive` below:

    python -m shared.sandboxing.seccomp /usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json

rewrites it. Docker 20.10's default allows io_uring (25 and later deny it); the engine a user
runs decides nothing here, since the profile travels with each container.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROFILE_PATH = Path(__file__).with_name("seccomp.json")
DOCKER_SOURCE = "moby v20.10.24 profiles/seccomp/default.json (Debian golang-github-docker-docker-dev 20.10.24+dfsg1-1+deb12u1)"

# What Docker's default allows unconditionally and this profile does not, and why. A refused
# call fails with EPERM (the profile's default action), so code that tries one gets an error,
# never a kill.
REMOVED: dict[str, str] = {
    **dict.fromkeys(("io_uring_setup", "io_uring_enter", "io_uring_register"),
                    "io_uring: a second system-call interface that has been the door of many kernel privilege "
                    "escalations (CVE-2022-29582, CVE-2023-2598, CVE-2024-0582); Docker 25 and later deny it"),
    **dict.fromkeys(("io_setup", "io_submit", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_cancel",
                     "io_destroy"),
                    "Linux native AIO: torch and Python never submit kernel AIO (their readers use plain reads)"),
    "ptrace": "a model never debugs a process; the harness is non-dumpable, this shuts the call itself "
              "(CVE-2019-13272 went through ptrace)",
    **dict.fromkeys(("msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
                     "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64", "mq_notify",
                     "mq_getsetattr"),
                    "System V and POSIX message queues: unused by torch's DataLoader (pipes and shared memory), "
                    "and msg_msg is the favourite heap-spraying object of kernel exploits (CVE-2021-22555)"),
    **dict.fromkeys(("splice", "vmsplice", "tee"),
                    "page splicing between pipes: Dirty Pipe (CVE-2022-0847) and the vmsplice root exploits "
                    "(CVE-2008-0600); Python copies with read/write and sendfile"),
    "memfd_secret": "secret memory areas hidden from the kernel's own mappings: nothing a model needs",
    "remap_file_pages": "deprecated since Linux 3.16 and emulated: nothing current calls it",
    "fanotify_mark": "useless without fanotify_init, which needs CAP_SYS_ADMIN the containers do not have",
}
# personality(): Docker allows 0 (PER_LINUX), 8 (PER_LINUX32), 0x20000 (UNAME26), 0x20008 and
# 0xffffffff (a query). Only the query and the default stay: UNAME26 leaked kernel stack bytes
# (CVE-2012-0957) and nothing 64-bit needs the others.
PERSONALITIES_KEPT = (0, 0xFFFFFFFF)
# x86_64's sub-architectures: Docker's default also filters (and so allows) 32-bit x86 and x32
# system calls. A model's process is 64-bit; the compat entry point has had its own escalations
# (CVE-2010-3081, CVE-2010-3301), so here those calls fail as an architecture the filter lacks.
X86_64_SUBARCHES: list[str] = []


def derive(docker_default: dict[str, Any]) -> dict[str, Any]:
    """Docker's default profile -> the sandbox's. Rules that only apply with a capability go (the
    containers drop every capability, so Docker would not apply them either; without them the file
    says on its own what is allowed): bpf, perf_event_open, the mount family, unshare, setns,
    process_vm_readv/writev, kcmp, pidfd_getfd, chroot, reboot, the module calls... Never allowed by
    Docker's default and not by this: keyctl, add_key, request_key, userfaultfd, kexec_load,
    kexec_file_load, open_by_handle_at (without CAP_DAC_READ_SEARCH)."""
    rules = []
    for rule in docker_default["syscalls"]:
        if (rule.get("includes") or {}).get("caps"):
            continue
        if rule["names"] == ["personality"] and rule.get("args"):
            if rule["args"][0]["value"] not in PERSONALITIES_KEPT:
                continue
        names = [name for name in rule["names"] if name not in REMOVED]
        if names:
            rules.append({**rule, "names": names})
    arch_map = [{**arch, "subArchitectures": list(X86_64_SUBARCHES)} if arch["architecture"] == "SCMP_ARCH_X86_64"
                else arch for arch in docker_default["archMap"]]
    return {**docker_default, "archMap": arch_map, "syscalls": rules}


def allowed_names(profile: dict[str, Any]) -> set[str]:
    """Every system call some rule of `profile` allows (for any argument or architecture)."""
    return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}


def _load() -> str:
    try:
        profile = json.loads(PROFILE_PATH.read_text())
    except (OSError, ValueError) as exc:  # a broken install: no container may start without it
        raise RuntimeError(f"the sandbox's seccomp profile {PROFILE_PATH} cannot be read ({exc}); reinstall the "
                           "project (its package data includes shared/sandboxing/seccomp.json)") from exc
    return json.dumps(profile, separators=(",", ":"))


# Compact JSON, as the engine takes it in security_opt (about 9 KB); read once, at import, so an
# install without the file fails at start rather than at the first container.
PROFILE_JSON = _load()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m shared.sandboxing.seccomp DOCKER_DEFAULT_JSON  (Docker's {DOCKER_SOURCE})",
              file=sys.stderr)
        return 2
    profile = derive(json.loads(Path(argv[0]).read_text()))
    PROFILE_PATH.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"wrote {PROFILE_PATH}: {len(allowed_names(profile))} system calls allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
