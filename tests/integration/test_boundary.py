"""The container boundary against the real engine: io_uring under Docker's default profile, under
the sandbox's own (runc) and under gVisor (runsc), and the hostile suite's representative subset
under gVisor. tests/integration/test_hostile.py runs the whole suite under runc with the profile;
running all of it again under gVisor would add minutes to a 2-core CI run for cases whose
containment gVisor does not change (the pids cap, the harness's signals), so a subset covering
each kind of attack runs here, and the cases gVisor answers in its own words are checked in them.
"""

import os

import pytest

from shared.messaging.messages import ValidateRequest
from shared.sandboxing.containers import OWNER_LABEL, ContainerRunner, Limits
from shared.sandboxing.validate import validate
from tests.conftest import SANDBOX_IMAGE
from tests.integration.test_hostile import CONTAINED, INPUT, MEMORY, SYSCALL, attack

pytestmark = [pytest.mark.docker]

OWNER = "tests-boundary"
IO_URING = SYSCALL.format(call="425, 8, ctypes.create_string_buffer(120)", name="io_uring_setup").replace(
    '"io_uring_setup: "', '"io_uring_setup on " + os.uname().release + ": "')
# one or more of each kind: network, files, privileges, kernel interfaces, the harness, resources, exits
GVISOR_SUBSET = ["dns", "docker-socket", "etc-shadow", "harness-overwrite", "torch-overwrite", "exec-from-tmp",
                 "setuid-root", "raw-socket", "mount", "chroot", "kernel-log", "worker-memory", "ptrace-pid-1",
                 "shm-fill", "file-over-fsize", "memory-bomb", "os-exit-7", "self-segfault", "kill-everything"]
# contained under gVisor too, in gVisor's own words
GVISOR_OWN_WORDS = [
    ("tcp-egress", "exception", "[Errno 113] No route to host"),
    ("root-fs-write", "exception", "[Errno 13] Permission denied: '/pwned-by-sandbox'"),
    ("proc-core-pattern", "exception", "[Errno 13] Permission denied: '/proc/sys/kernel/core_pattern'"),
]
SOURCES = {case[0]: case[1] for case in CONTAINED}
EXPECTED = {case[0]: case[2:] for case in CONTAINED}


def run_code(runner, source):
    request = ValidateRequest(source=attack(source), class_name="Model", input_shape=INPUT)
    return validate(request, runner, 60.0, MEMORY, "flag")


@pytest.fixture(scope="module")
def gvisor(docker_engine):
    if "runsc" not in (docker_engine.info().get("Runtimes") or {}):
        pytest.fail("the Docker engine lists no runsc runtime: `bash scripts/setup-host.sh` installs and registers "
                    "gVisor (apt-get install runsc)")
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory=MEMORY, runtime="runsc"), owner=OWNER, pool_size=2)
    assert runner.boundary.runtime == "runsc", runner.boundary.why
    runner.remove_strays()
    runner.start_pool()
    yield runner
    runner.close()


def test_io_uring_is_open_under_dockers_own_default_profile(docker_engine):
    """What the sandbox's profile is for: Docker 20.10's default lets io_uring_setup through."""
    engine = docker_engine.version()["Version"]
    if not engine.startswith("20."):  # Docker 25 and later deny io_uring in their own default
        pytest.fail(f"this test states Docker 20.10's default profile; the engine is {engine}: update it")
    result = docker_engine.containers.create(SANDBOX_IMAGE, ["/opt/venv/bin/python", "-c", attack(IO_URING)],
                                             network_mode="none", cap_drop=["ALL"], user="10001:10001",
                                             security_opt=["no-new-privileges:true"], labels={OWNER_LABEL: OWNER})
    try:
        result.start()
        assert result.wait(timeout=60)["StatusCode"] == 1
        assert "[Errno 0] io_uring_setup on " in result.logs(stdout=False, stderr=True).decode()
    finally:
        result.remove(force=True)


def test_io_uring_is_refused_by_the_sandboxs_profile_under_runc(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory=MEMORY), owner=OWNER)
    try:
        assert runner.boundary.runtime == "runc"
        result = run_code(runner, IO_URING)
    finally:
        runner.close()
    assert result.reason == "exception"
    assert f"[Errno 1] io_uring_setup on {os.uname().release}: Operation not permitted" in result.error


def test_io_uring_under_gvisor_reaches_gvisors_kernel_not_the_hosts(gvisor):
    """gVisor (Debian's 2022-12 build) implements io_uring_setup itself and answers with a file
    descriptor of its own; the host's kernel (its release differs) never sees the call."""
    result = run_code(gvisor, IO_URING)
    assert result.reason == "exception", result.error
    refused = any(f"[Errno {n}] io_uring_setup" in result.error for n in (1, 38))
    answered_by_gvisor = "[Errno 0] io_uring_setup on " in result.error and os.uname().release not in result.error
    assert refused or answered_by_gvisor, result.error


@pytest.mark.parametrize("name", GVISOR_SUBSET)
def test_attack_is_contained_under_gvisor(gvisor, name):
    reason, fragment = EXPECTED[name]
    result = run_code(gvisor, SOURCES[name])
    assert (result.ok, result.reason) == (False, reason), result.error
    assert fragment in result.error


@pytest.mark.parametrize("name, reason, fragment", GVISOR_OWN_WORDS, ids=[case[0] for case in GVISOR_OWN_WORDS])
def test_attack_is_contained_under_gvisor_in_its_own_words(gvisor, name, reason, fragment):
    result = run_code(gvisor, SOURCES[name])
    assert (result.ok, result.reason) == (False, reason), result.error
    assert fragment in result.error


def test_after_gvisor_nothing_is_left_on_the_host(gvisor, docker_engine):
    gvisor.close()
    assert docker_engine.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={OWNER}"}) == []
