"""Hostile models against the real sandbox: every attack is contained and reported specifically.

Plain attacks run with the pre-check in "flag" mode, so what is tested is the container, not
the AST filter; obfuscated ones pass the pre-check in "reject" mode and are contained all the
same. Each attack lets its exception propagate (or, where the attack is that nothing happens,
returns a valid model), so a contained attack is a result whose reason and message say what
stopped it. Most jobs run in pooled (pre-started) containers. The last tests check that the
suite left nothing behind on the host and that a benign model still validates.
"""

import ast
import dataclasses
import json
import os
import re
import textwrap
import time

import pytest

from shared.modelspec.assemble import assemble
from shared.sandboxing.validate import flag_constructs, validate
from shared.sandboxing.containers import JOB_LABEL, OWNER_LABEL, ContainerRunner, Limits
from shared.messaging.messages import ValidateRequest
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker]

OWNER = "tests-hostile"
MINE = {"label": f"{OWNER_LABEL}={OWNER}"}
MEMORY = "512m"
PREFIX = "pwned-by-sandbox"  # names the code tries to create "on the host"; none may appear there
CANARY = f"/tmp/{PREFIX}"
INPUT = [2, 8]
MODEL = """
import torch
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
    def forward(self, x):
        return self.fc(x)
"""
MODEL_PARAMS = 8 * 4 + 4


def attack(code: str, then_model: bool = False) -> str:
    """`code` runs at import; then a valid model (when the attack should change nothing) or none."""
    return textwrap.dedent(code).strip() + "\n" + (MODEL if then_model else "Model = None\n")


def host_canaries() -> list[str]:
    return sorted(name for name in os.listdir("/tmp") if name.startswith(PREFIX))


@pytest.fixture(scope="module")
def host_before():
    return host_canaries()


@pytest.fixture(scope="module")
def runner(docker_engine, host_before):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory=MEMORY), owner=OWNER, pool_size=2)
    runner.remove_strays()
    runner.start_pool()
    assert runner.wait_warm(timeout_s=120)
    yield runner
    runner.close()
    runner.remove_strays()


def check(runner, source, timeout=30.0, policy="flag", class_name="Model", run_id=""):
    request = ValidateRequest(run_id=run_id, source=source, class_name=class_name, input_shape=INPUT)
    return validate(request, runner, timeout, MEMORY, policy)


def message(result, tag):
    """What the code put between <tag> and </tag> in its exception's message."""
    found = re.search(f"<{tag}>(.*)</{tag}>", result.error or "", re.S)
    assert found, (result.reason, result.error)
    return found.group(1)


# ---- attacks whose own exception says what stopped them ----
CTYPES_CALL = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.{call} != 0:
        raise OSError(ctypes.get_errno(), "{name}: " + os.strerror(ctypes.get_errno()))
"""
# a raw system call by number (x86_64), raising with its errno: 0 ("Success") when it was allowed
SYSCALL = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    libc.syscall({call})
    raise OSError(ctypes.get_errno(), "{name}: " + os.strerror(ctypes.get_errno()))
"""
CONTAINED = [
    # network
    ("tcp-egress", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
     "exception", "OSError while importing the code: [Errno 101] Network is unreachable"),
    ("udp-egress", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))",
     "exception", "OSError while importing the code: [Errno 101] Network is unreachable"),
    ("dns", "import socket\nsocket.getaddrinfo('example.com', 443)",
     "exception", "gaierror while importing the code: [Errno -3] Temporary failure in name resolution"),
    ("docker-socket", "import socket\nsocket.socket(socket.AF_UNIX).connect('/var/run/docker.sock')",
     "exception", "FileNotFoundError while importing the code: [Errno 2] No such file or directory"),
    # host files and the image
    ("etc-shadow", "open('/etc/shadow').read()", "exception", "PermissionError while importing the code: "
     "[Errno 13] Permission denied: '/etc/shadow'"),
    ("root-fs-write", f"open('/{PREFIX}', 'w')", "exception", f"[Errno 30] Read-only file system: '/{PREFIX}'"),
    ("harness-overwrite", "open('/opt/harness/worker.py', 'a')", "exception",
     "PermissionError while importing the code: [Errno 13] Permission denied: '/opt/harness/worker.py'"),
    ("harness-delete", "import os\nos.unlink('/opt/harness/supervisor.py')", "exception",
     "Read-only file system: '/opt/harness/supervisor.py'"),
    ("torch-overwrite", "import torch\nopen(torch.__file__, 'a')", "exception",
     "[Errno 13] Permission denied: '/opt/venv/lib/python3.11/site-packages/torch/__init__.py'"),
    ("exec-from-tmp", f"""
        import os, subprocess
        with open('{CANARY}.sh', 'w') as f:
            f.write('#!/bin/sh\\necho escaped\\n')
        os.chmod('{CANARY}.sh', 0o755)
        subprocess.run(['{CANARY}.sh'])
        """, "exception", f"PermissionError while importing the code: [Errno 13] Permission denied: '{CANARY}.sh'"),
    # privileges and capabilities
    ("setuid-root", "import os\nos.setuid(0)", "exception",
     "PermissionError while importing the code: [Errno 1] Operation not permitted"),
    ("raw-socket", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
     "exception", "PermissionError while importing the code: [Errno 1] Operation not permitted"),
    ("mknod-device", f"import os, stat\nos.mknod('{CANARY}-mem', stat.S_IFCHR | 0o600, os.makedev(1, 1))",
     "exception", "PermissionError while importing the code: [Errno 1] Operation not permitted"),
    ("mount", CTYPES_CALL.format(call='mount(b"none", b"/tmp", b"tmpfs", 0, None)', name="mount"),
     "exception", "PermissionError while importing the code: [Errno 1] mount: Operation not permitted"),
    ("user-namespace", CTYPES_CALL.format(call="unshare(0x10000000)", name="unshare(CLONE_NEWUSER)"),
     "exception", "[Errno 1] unshare(CLONE_NEWUSER): Operation not permitted"),
    ("chroot", "import os\nos.chroot('/tmp')", "exception", "[Errno 1] Operation not permitted: '/tmp'"),
    # what Docker 20.10's default seccomp profile allows and the sandbox's own refuses (seccomp.py)
    ("io-uring", SYSCALL.format(call="425, 8, ctypes.create_string_buffer(120)", name="io_uring_setup"),
     "exception", "[Errno 1] io_uring_setup: Operation not permitted"),
    ("sysv-message-queue", SYSCALL.format(call="68, 0, 0o1600", name="msgget"),
     "exception", "[Errno 1] msgget: Operation not permitted"),
    ("vmsplice", SYSCALL.format(call="278, 0, 0, 0, 0", name="vmsplice"),
     "exception", "[Errno 1] vmsplice: Operation not permitted"),
    # kernel interfaces
    ("proc-sys-hostname", "open('/proc/sys/kernel/hostname', 'w').write('pwned')", "exception",
     "[Errno 30] Read-only file system: '/proc/sys/kernel/hostname'"),
    ("proc-core-pattern", "open('/proc/sys/kernel/core_pattern', 'w').write('|/tmp/x')", "exception",
     "[Errno 30] Read-only file system: '/proc/sys/kernel/core_pattern'"),
    ("sys-cgroup-memory-limit", """
        import os
        limit = next(p for p in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes')
                     if os.path.exists(p))
        open(limit, 'w').write('-1')
        """, "exception", "[Errno 30] Read-only file system: '/sys/fs/cgroup/"),
    ("kernel-log", "open('/dev/kmsg').read(64)", "exception", "No such file or directory: '/dev/kmsg'"),
    # the trusted harness processes
    ("worker-memory", "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb')", "exception",
     "PermissionError while importing the code: [Errno 13] Permission denied: '/proc/"),
    ("worker-fds", "import os\nos.listdir(f'/proc/{os.getppid()}/fd')", "exception",
     "PermissionError while importing the code: [Errno 13] Permission denied: '/proc/"),
    ("container-stdout", "import os\nos.open('/proc/1/fd/1', os.O_WRONLY)", "exception",
     "[Errno 13] Permission denied: '/proc/1/fd/1'"),
    ("ptrace-worker", CTYPES_CALL.format(call="ptrace(16, os.getppid(), 0, 0)", name="ptrace(ATTACH, worker)"),
     "exception", "[Errno 1] ptrace(ATTACH, worker): Operation not permitted"),
    ("ptrace-pid-1", CTYPES_CALL.format(call="ptrace(16, 1, 0, 0)", name="ptrace(ATTACH, 1)"),
     "exception", "[Errno 1] ptrace(ATTACH, 1): Operation not permitted"),
    # resources
    ("shm-fill", """
        block = b'x' * (4 << 20)
        for i in range(100):
            with open(f'/dev/shm/fill{i}', 'wb') as f:
                f.write(block)
        """, "exception", "OSError while importing the code: [Errno 28] No space left on device"),
    ("file-over-fsize", f"with open('{CANARY}-big', 'wb') as f:\n    f.seek(65 << 20)\n    f.write(b'x')",
     "exception", "OSError while importing the code: [Errno 27] File too large"),
    ("memory-bomb", "blocks = []\nwhile True:\n    blocks.append(b'x' * (32 << 20))", "oom",
     f"out of memory: killed at the {MEMORY} memory cap (during import)"),
    ("fork-bomb", "import os\nwhile True:\n    os.fork()", "pids", "too many processes or threads: hit the pids cap of 128"),
    ("thread-bomb", """
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        """, "pids", "too many processes or threads: hit the pids cap of 128 during import (RuntimeError"),
    # ending or killing the harness
    ("sys-exit", "import sys\nsys.exit(0)", "exception", "SystemExit while importing the code: 0"),
    ("os-exit-0", "import os\nos._exit(0)", "exited", "ended its process (exit code 0) during import"),
    ("os-exit-7", "import os\nos._exit(7)", "exited", "ended its process (exit code 7) during import"),
    ("self-segfault", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "exited",
     "the model's process was killed by SIGSEGV during import"),
    ("kill-the-worker", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "harness_failed",
     "the harness's worker ended with exit code -9 before it reported"),
    ("kill-everything", "import os, signal\nos.kill(-1, signal.SIGKILL)", "harness_failed",
     "the harness's worker ended with exit code -9 before it reported"),
]


@pytest.mark.parametrize("source, reason, fragment", [case[1:] for case in CONTAINED],
                         ids=[case[0] for case in CONTAINED])
def test_attack_is_contained(runner, source, reason, fragment):
    result = check(runner, attack(source))
    assert (result.ok, result.reason) == (False, reason), result.error
    assert fragment in result.error


def test_privileges_are_gone_for_good(runner):
    result = check(runner, attack("raise RuntimeError('<s>' + open('/proc/self/status').read() + '</s>')"))
    status = dict(line.split(":\t", 1) for line in message(result, "s").splitlines())
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert {status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {"0000000000000000"}
    assert status["Uid"].split() == ["10001"] * 4 and status["Groups"].split() == ["10001"]


def test_the_supervisor_is_pid_1_and_ignores_every_signal_from_the_code(runner):
    # PID 1 of a pid namespace gets only the signals it has a handler for, from inside: none.
    source = """
        import os, signal
        for sig in sorted(signal.valid_signals()):  # SIGKILL and SIGSTOP included
            os.kill(1, sig)
        """
    result = check(runner, attack(source, then_model=True))
    assert result.ok and result.param_count == MODEL_PARAMS, result.error


def test_secrets_in_the_services_environment_never_reach_the_code(runner, monkeypatch):
    secret = f"s3cr3t-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("RESEARCHER_API_KEY", secret)
    monkeypatch.setenv("NATS_URL", f"nats://user:{secret}@10.0.0.1:4222")
    result = check(runner, attack("import json, os\nraise RuntimeError('<env>' + json.dumps(dict(os.environ)) + '</env>')"))
    env = json.loads(message(result, "env"))
    assert secret not in result.error and "NATS" not in result.error
    assert sorted(env) == ["HOME", "HOSTNAME", "LANG", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "PATH",
                           "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "VIRTUAL_ENV"]
    assert (env["HOME"], env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["HOSTNAME"]) == ("/tmp", "1", "1", "sandbox")


def test_no_host_path_is_mounted(runner, tmp_path):
    host_file = tmp_path / f"{PREFIX}-secret.txt"
    host_file.write_text("host data")
    result = check(runner, attack(f"open({str(host_file)!r}).read()"))
    assert result.reason == "exception"
    assert f"FileNotFoundError while importing the code: [Errno 2] No such file or directory: '{host_file}'" in result.error

    result = check(runner, attack("raise RuntimeError('<m>' + open('/proc/self/mountinfo').read() + '</m>')"))
    mounts = [line.split() for line in message(result, "m").splitlines()]
    points = sorted(m[4] for m in mounts if not m[4].startswith(("/proc", "/sys", "/dev")))
    assert points == ["/", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/tmp"]
    # the only host files: the three the engine writes for each container, mounted read-only
    binds = [m[3] for m in mounts if m[3] != "/" and not m[4].startswith(("/proc", "/sys", "/dev"))]
    assert len(binds) == 3 and all(re.search(r"/containers/[0-9a-f]{64}/(hostname|hosts|resolv\.conf)$", b) for b in binds)
    assert all(m[5].startswith("ro,") for m in mounts if m[4] in points and m[4] != "/tmp")


def test_a_canary_written_to_tmp_stays_in_the_containers_tmpfs(runner):
    result = check(runner, attack(f"open({CANARY!r}, 'w').write('x')", then_model=True))
    assert result.ok, result.error
    assert not os.path.exists(CANARY)


def test_inode_exhaustion_stops_before_the_inode_cap(runner):
    source = """
        count = 0
        try:
            while True:
                open(f'{CANARY}-i{count}', 'w').close()
                count += 1
        except OSError as exc:
            raise OSError(exc.errno, f'{exc.strerror} <n>{count}</n>') from None
        """
    result = check(runner, attack(f"CANARY = {CANARY!r}\n" + textwrap.dedent(source)))
    assert result.reason == "exception" and "[Errno 28] No space left on device" in result.error
    assert int(message(result, "n")) == runner.limits.tmpfs_inodes - 1  # the tmpfs's root directory is one


def test_disk_fill_stops_at_the_tmpfs_size(runner):
    source = """
        written = 0
        try:
            for i in range(100):
                with open(f'{CANARY}-fill{i}', 'wb') as f:
                    written += f.write(b'x' * (4 << 20))
        except OSError as exc:
            raise OSError(exc.errno, f'{exc.strerror} <n>{written}</n>') from None
        """
    result = check(runner, attack(f"CANARY = {CANARY!r}\n" + textwrap.dedent(source)))
    assert result.reason == "exception" and "[Errno 28] No space left on device" in result.error
    assert int(message(result, "n")) == 64 << 20  # bytes written: the whole tmpfs (64m), not one more


def test_a_model_too_large_for_memory_is_oom_killed_during_init(runner):
    source = MODEL.replace("torch.nn.Linear(8, 4)", "torch.nn.Linear(40000, 40000)")
    result = check(runner, source)
    assert (result.reason, result.oom_killed) == ("oom", True)
    assert f"out of memory: killed at the {MEMORY} memory cap (during init)" in result.error


@pytest.mark.parametrize("stage, source", [
    ("import", attack("while True:\n    pass")),
    ("init", MODEL.replace("super().__init__()", "super().__init__()\n        while True:\n            pass")),
    ("forward", MODEL.replace("return self.fc(x)", "while True:\n            pass")),
], ids=["import", "init", "forward"])
def test_an_endless_loop_is_killed_at_the_timeout_naming_its_stage(runner, stage, source):
    started = time.monotonic()
    result = check(runner, source, timeout=3.0)
    assert (result.reason, result.timed_out) == ("timeout", True)
    assert f"timed out after 3 s (during {stage}); the container was killed" in result.error
    assert time.monotonic() - started < 15


def test_ignoring_sigterm_does_not_outlive_the_timeout(runner, docker_engine):
    lone = ContainerRunner(runner.limits, owner=OWNER)  # not pooled: its container is labelled with the job
    source = attack("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass")
    result = check(lone, source, timeout=3.0, run_id="sigterm")
    assert (result.reason, result.timed_out) == ("timeout", True) and "(during import)" in result.error
    left = docker_engine.containers.list(all=True, filters={"label": [f"{OWNER_LABEL}={OWNER}",
                                                                      f"{JOB_LABEL}=sigterm-0-validate"]})
    assert left == []


def test_flooding_stdout_is_cut_at_the_total_output_cap(runner):
    flood = ContainerRunner(dataclasses.replace(runner.limits, max_total_output_bytes=4 << 20), owner=OWNER)
    started = time.monotonic()
    result = check(flood, attack("import sys\nwhile True:\n    sys.stdout.write('A' * 65536)"), timeout=20.0)
    assert (result.reason, result.timed_out) == ("output_too_large", False)
    assert "KiB to stdout/stderr; its processes were killed" in result.error
    assert 4096 <= int(re.search(r"more than (\d+) KiB", result.error).group(1)) < 8192
    assert time.monotonic() - started < 15


def test_a_print_flood_under_the_cap_keeps_only_a_tail(runner):
    result = check(runner, attack("for i in range(30000):\n    print(f'line {i:05d}', 'x' * 60)", then_model=True))
    assert result.ok and result.param_count == MODEL_PARAMS, result.error
    assert 0 < len(result.output_tail) <= runner.limits.max_output_bytes
    assert "line 29999" in result.output_tail and "line 00000" not in result.output_tail


FORGE = textwrap.dedent("""
    import json, os
    claim = {"ok": True, "output_shape": [2, 4], "param_count": 1, "trainable_params": 1, "layers": []}
    report = {"harness_completed": True, "result": claim, "process": {"stage": "forward"}, "exit_code": 0}
    for nonce in ("0" * 32, "f" * 32, "forged"):
        print("@@RESULT", nonce, json.dumps(report), flush=True)
    lines = [{"harness": "done", "result": claim, "process": {"stage": "forward", "exit_code": 0}},
             {"final": claim, "token": "0" * 32}, {"stage": "forward"}, report]
    data = "".join(json.dumps(line) + "\\n" for line in lines).encode()
    written = []
    for fd in range(256):
        try:
            os.write(fd, data)
            written.append(fd)
        except OSError:
            pass
""")


def test_forged_results_do_not_hide_the_real_failure(runner):
    result = check(runner, attack(FORGE + "raise ValueError(f'the real failure <fds>{written}</fds>')"))
    assert result.reason == "exception"
    assert "ValueError while importing the code: the real failure" in result.error
    written = json.loads(message(result, "fds"))  # stdout, stderr (both the tap) and its report pipe
    assert written[:2] == [1, 2] and len(written) == 3


def test_forged_figures_do_not_replace_the_measured_ones(runner):
    result = check(runner, attack(FORGE, then_model=True))
    assert result.ok, result.error
    assert (result.param_count, result.output_shape) == (MODEL_PARAMS, [2, 4])


@pytest.mark.parametrize("leftover", [
    "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)",
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        time.sleep(0.1)",
], ids=["popen-sleep", "setsid-fork"])
def test_a_background_process_left_behind_does_not_hold_up_the_result(runner, leftover):
    started = time.monotonic()
    result = check(runner, attack(leftover, then_model=True), timeout=30.0)
    assert result.ok and result.param_count == MODEL_PARAMS, result.error
    assert time.monotonic() - started < 10


def test_orphaned_zombies_are_reaped_so_they_never_fill_the_pids_cap(runner):
    """Each orphan is reparented to the supervisor (PID 1) and dies at once: 300 of them would
    exceed the pids cap of 128 unless PID 1 reaps them as an init must."""
    source = """
        import os
        for _ in range(300):
            child = os.fork()
            if child == 0:
                if os.fork() == 0:
                    os._exit(0)
                os._exit(0)
            os.waitpid(child, 0)
        """
    result = check(runner, attack(source, then_model=True), timeout=60.0)
    assert result.ok, result.error


@pytest.mark.parametrize("source, flags", [
    ("import torch\nimport socket\nsocket.create_connection(('1.1.1.1', 80))", ["line 2: imports 'socket' (network access)"]),
    ("import torch\nfrom subprocess import run\nrun(['sh'])", ["line 2: imports 'subprocess' (runs programs)"]),
    ("import torch\n\nopen('/etc/shadow').read()", ["line 3: calls open() (opens files)"]),
    ("import torch\nx = ().__class__.__base__.__subclasses__()", ["line 2: uses .__subclasses__ (sandbox-escape idiom)"]),
], ids=["socket", "subprocess", "open", "subclasses"])
def test_a_plain_attack_is_rejected_by_the_precheck_with_its_line(runner, source, flags):
    result = check(runner, attack(source), policy="reject")
    assert (result.ok, result.reason, result.flags) == (False, "flagged", flags)
    assert result.error.endswith(flags[0]) and result.duration_s < 1  # rejected before any container


OBFUSCATED = [
    ("socket-through-torch-builtins", """
        import torch
        load = getattr(torch, "__buil" + "tins__")["__imp" + "ort__"]
        load("soc" + "ket").create_connection(("1.1.1.1", 80), timeout=2)
        """, "exception", "OSError while importing the code: [Errno 101] Network is unreachable"),
    ("write-through-torch-os", f"""
        import torch
        fs = getattr(torch, "o" + "s")
        fs.open("/usr/{PREFIX}", fs.O_CREAT | fs.O_WRONLY)
        """, "exception", f"[Errno 30] Read-only file system: '/usr/{PREFIX}'"),
    ("write-through-numpy-tofile", """
        import numpy
        numpy.zeros(3).tofile("/opt/harness/worker.py")
        """, "exception", "OSError while importing the code: [Errno 30] Read-only file system: '/opt/harness/worker.py'"),
    ("setuid-by-name", """
        import torch
        getattr(getattr(torch, "o" + "s"), "set" + "uid")(0)
        """, "exception", "PermissionError while importing the code: [Errno 1] Operation not permitted"),
    ("fork-bomb-from-base64", """
        import base64, torch
        run = getattr(torch, "__buil" + "tins__")["ex" + "ec"]
        run(base64.b64decode(b"aW1wb3J0IG9zCndoaWxlIFRydWU6CiAgICBvcy5mb3JrKCkK"))  # import os; fork forever
        """, "pids", "hit the pids cap of 128"),
]


@pytest.mark.parametrize("source, reason, fragment", [case[1:] for case in OBFUSCATED],
                         ids=[case[0] for case in OBFUSCATED])
def test_an_obfuscated_attack_passes_the_precheck_and_is_contained(runner, source, reason, fragment):
    code = attack(source)
    assert flag_constructs(ast.parse(code)) == []
    result = check(runner, code, policy="reject")
    assert (result.ok, result.reason, result.flags) == (False, reason, []), result.error
    assert fragment in result.error


# ---- after the whole suite (pytest runs a file's tests in order) ----
def test_after_the_suite_a_benign_model_still_validates(runner):
    model = assemble({"class_name": "Benign", "input_shape": [8], "num_classes": 4,
                      "layers": [{"type": "Linear", "out_features": 16}, {"type": "ReLU"},
                                 {"type": "Linear", "out_features": 4}]})
    request = ValidateRequest(source=model.source, class_name="Benign", input_shape=INPUT, expected_output_shape=[2, 4])
    result = validate(request, runner, 30.0, MEMORY, "reject")
    assert result.ok, result.error
    assert (result.output_shape, result.param_count, result.flags) == ([2, 4], 8 * 16 + 16 + 16 * 4 + 4, [])


def test_after_the_suite_nothing_is_left_on_the_host(runner, docker_engine, host_before):
    runner.close()
    assert docker_engine.containers.list(all=True, filters=MINE) == []
    assert host_canaries() == host_before
    assert not any(os.path.exists(path) for path in (CANARY, f"/{PREFIX}", f"/usr/{PREFIX}"))
