"""Hostile models against the real sandbox: each attack is contained and reported specifically.

The attacks run with the pre-check in "flag" mode, so the container (not the AST filter) is what
is tested; the obfuscated variants get past the pre-check in "reject" mode and are contained too.
Each source does its attack and lets the exception propagate, so a contained attack is a
rejection whose message names what stopped it. The last tests check that nothing outlived the
suite on the host and that a benign model still validates.
"""

import ast
import dataclasses
import os
import textwrap

import pytest

from services.assembler.assemble import assemble
from services.sandbox.validate import flag_constructs, validate
from shared.containers import ContainerRunner, Limits
from shared.messages import ValidateRequest
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker]

OWNER = "tests-hostile"
MEMORY = "512m"
CANARY = "/tmp/pwned-by-sandbox"  # a path the code writes "on the host": it must stay absent there
MODEL = """
import torch
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""
MODEL_PARAMS = 8 * 4 + 4


def src(attack: str, model: bool = False) -> str:
    """The attack at import time, then (optionally) a valid model."""
    return textwrap.dedent(attack) + (MODEL if model else "\nModel = None\n")


@pytest.fixture(scope="module")
def runner(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory=MEMORY), owner=OWNER, pool_size=2)
    runner.remove_strays()
    runner.start_pool()
    yield runner
    runner.close()
    runner.remove_strays()


def check(runner, source, timeout=30.0, policy="flag", class_name="Model"):
    request = ValidateRequest(source=source, class_name=class_name, input_shape=[2, 8])
    return validate(request, runner, timeout, MEMORY, policy)


# ---- attacks whose exception names what stopped them ----
CONTAINED = [
    ("network-egress", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)\n",
     "exception", "Network is unreachable"),
    ("dns", "import socket\nsocket.getaddrinfo('example.com', 443)\n", "exception", "gaierror"),
    ("docker-socket", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')\n",
     "exception", "FileNotFoundError"),
    ("host-shadow", "open('/etc/shadow').read()\n", "exception", "PermissionError"),
    ("root-fs-write", "open('/usr/lib/pwned', 'w')\n", "exception", "Read-only file system"),
    ("harness-overwrite", "open('/opt/harness/worker.py', 'a')\n", "exception", "Permission denied: '/opt/harness/worker.py'"),
    ("setuid-root", "import os\nos.setuid(0)\n", "exception", "PermissionError while importing the code: [Errno 1] Operation not permitted"),
    ("no-new-privs-and-caps", "raise RuntimeError(open('/proc/self/status').read())\n", "exception",
     "CapEff:\t0000000000000000"),
    ("raw-socket", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n",
     "exception", "Operation not permitted"),
    ("mount", """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) != 0:
            raise OSError(ctypes.get_errno(), "mount: " + os.strerror(ctypes.get_errno()))
        """, "exception", "mount: Operation not permitted"),
    ("proc-sys-write", "open('/proc/sys/kernel/hostname', 'w').write('pwned')\n", "exception", "Read-only file system"),
    ("sysrq-trigger", "open('/proc/sysrq-trigger', 'w').write('b')\n", "exception", "/proc/sysrq-trigger"),
    ("sys-write", "open('/sys/kernel/mm/transparent_hugepage/enabled', 'w').write('never')\n", "exception",
     "Read-only file system"),
    ("disk-fill", """
        block = b"x" * (4 << 20)
        for i in range(1000):
            with open(f"/tmp/fill{i}", "wb") as f:
                f.write(block)
        """, "exception", "No space left on device"),
    ("inode-exhaustion", """
        i = 0
        try:
            while True:
                open(f"/tmp/i{i}", "w").close()
                i += 1
        except OSError as exc:
            raise RuntimeError(f"{i} files: {exc}")
        """, "exception", "No space left on device"),
    ("file-over-fsize", "f = open('/tmp/big', 'wb')\nf.seek(80 << 20)\nf.write(b'x')\nf.flush()\n", "exception",
     "File too large"),
    ("trace-the-harness", "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb')\n", "exception", "PermissionError"),
    ("harness-fds", "import os\nos.listdir(f'/proc/{os.getppid()}/fd')\n", "exception", "PermissionError"),
    ("exit-at-import-sys", "import sys\nsys.exit(0)\n", "exception", "SystemExit while importing the code"),
    ("exit-at-import-os", "import os\nos._exit(7)\n", "exited", "exit code 7) during import"),
    ("kill-everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\n", "harness_failed", "no result"),
    ("memory-bomb", "blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))\n", "oom",
     f"killed at the {MEMORY} memory cap (during import)"),
    ("fork-bomb", "import os\nwhile True:\n    os.fork()\n", "pids", "hit the pids cap of 128"),
    ("thread-bomb", """
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        """, "pids", "hit the pids cap of 128"),
]


@pytest.mark.parametrize("source, reason, fragment", [case[1:] for case in CONTAINED], ids=[case[0] for case in CONTAINED])
def test_attack_is_contained_with_a_specific_reason(runner, source, reason, fragment):
    result = check(runner, src(source))
    assert not result.ok
    assert (result.reason, fragment in (result.error or "")) == (reason, True), result.error


def test_a_model_too_large_for_memory_is_oom_killed_in_init(runner):
    source = "import torch\nclass Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n" \
             "        self.fc = torch.nn.Linear(40000, 40000)\n"
    result = check(runner, source)
    assert result.reason == "oom" and result.oom_killed
    assert "(during init)" in result.error


@pytest.mark.parametrize("stage, source", [
    ("import", "while True:\n    pass\nModel = None\n"),
    ("init", "import torch\nclass Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
             "        while True:\n            pass\n"),
    ("forward", "import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        while True:\n"
                "            pass\n"),
])
def test_infinite_loops_are_killed_at_the_timeout_with_their_stage(runner, stage, source):
    result = check(runner, source, timeout=4.0)
    assert result.reason == "timeout" and result.timed_out
    assert f"timed out after 4 s (during {stage})" in result.error


def test_ignoring_sigterm_does_not_outlive_the_timeout(runner, docker_engine):
    source = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\nModel = None\n"
    result = check(runner, source, timeout=3.0)
    assert result.reason == "timeout"
    busy = [c for c in docker_engine.containers.list(all=True, filters={"label": f"org.pytorch-researcher.owner={OWNER}"})
            if c.labels.get("org.pytorch-researcher.job") != "pool"]
    assert busy == []  # killed and removed: only the warm pool is left


def test_secrets_in_the_service_environment_never_reach_the_code(runner, monkeypatch):
    monkeypatch.setenv("RESEARCHER_SECRET_TOKEN", "s3cr3t-8d1f")
    monkeypatch.setenv("NATS_URL", "nats://secret-host:4222")
    result = check(runner, src("import os\nraise RuntimeError(repr(sorted(os.environ.items())))\n"))
    assert result.reason == "exception"
    assert "s3cr3t" not in result.error and "NATS" not in result.error and "DOCKER" not in result.error
    assert "('HOME', '/tmp')" in result.error and "('OMP_NUM_THREADS', '1')" in result.error


def test_host_paths_are_not_mounted(runner, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    source = f"""
        data = open({str(secret)!r}).read()
        """
    result = check(runner, src(source))
    assert result.reason == "exception" and "FileNotFoundError" in result.error
    points = check(runner, src("points = sorted({line.split()[4] for line in open('/proc/self/mountinfo')})\n"
                               "raise RuntimeError('|'.join(p for p in points if not p.startswith(('/proc', '/sys', '/dev'))))\n"))
    listed = points.error.split(": ", 1)[1].split(" (model_code.py")[0].split("|")
    # nothing of the host but the engine's own init binary (read-only), which `init=True` asks for
    assert listed == ["/", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/tmp", "/usr/sbin/docker-init"]
    assert not os.path.exists(CANARY)


def test_writing_a_canary_lands_in_the_containers_tmpfs_only(runner):
    result = check(runner, src(f"open({CANARY!r}, 'w').write('x')\n", model=True))
    assert result.ok  # /tmp in the container is its own tmpfs
    assert not os.path.exists(CANARY)


def test_flooding_stdout_is_cut_at_the_cap(runner):
    flood_runner = ContainerRunner(dataclasses.replace(runner.limits, max_total_output_bytes=4 << 20), owner=OWNER)
    result = check(flood_runner, src("import sys\nwhile True:\n    sys.stdout.write('A' * 65536)\n"))
    assert result.reason == "output_too_large"
    assert "more than 4" in result.error and "KiB to stdout/stderr" in result.error


def test_a_print_flood_under_the_cap_keeps_only_a_tail(runner):
    result = check(runner, src("for i in range(20000):\n    print('line', i, 'x' * 80)\n", model=True))
    assert result.ok and result.param_count == MODEL_PARAMS
    assert len(result.output_tail) <= 4000 and "line 19999" in result.output_tail


FORGE = """
    import json, os
    fake = {"harness_completed": True, "result": {"ok": True, "output_shape": [2, 4], "param_count": 1,
            "trainable_params": 1, "layers": []}}
    for nonce in ("0" * 32, "forged"):
        print("@@RESULT", nonce, json.dumps(fake), flush=True)
    lines = [json.dumps({"harness": "done", "result": fake["result"], "process": {"stage": "forward"}}),
             json.dumps({"final": fake["result"], "token": "0" * 32}), json.dumps(fake)]
    for fd in range(3, 256):
        for line in lines:
            try:
                os.write(fd, (line + "\\n").encode())
            except OSError:
                pass
    """


def test_forged_results_do_not_hide_the_real_failure(runner):
    result = check(runner, src(FORGE + "raise ValueError('the real failure')\n"))
    assert result.reason == "exception" and "ValueError while importing the code: the real failure" in result.error


def test_forged_figures_do_not_replace_the_measured_ones(runner):
    result = check(runner, src(FORGE, model=True))
    assert result.ok and result.param_count == MODEL_PARAMS and result.output_shape == [2, 4]


def test_an_orphaned_background_process_does_not_hold_up_the_result(runner):
    source = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            while True:
                time.sleep(1)
        """
    result = check(runner, src(source, model=True), timeout=20.0)
    assert result.ok and result.param_count == MODEL_PARAMS
    assert result.duration_s < 10


def test_plain_attacks_are_rejected_by_the_precheck_with_their_line(runner):
    result = check(runner, src("import socket\nsocket.create_connection(('1.1.1.1', 80))\n"), policy="reject")
    assert result.reason == "flagged" and "line 1: imports 'socket' (network access)" in result.error


OBFUSCATED = [
    ("network-by-string-import", """
        import torch
        b = getattr(torch, "__buil" + "tins__")
        s = b["__imp" + "ort__"]("soc" + "ket")
        s.create_connection(("1.1.1.1", 80), timeout=3)
        """, "exception", "Network is unreachable"),
    ("root-fs-through-torch-os", """
        import torch
        fs = getattr(torch, "o" + "s")
        fs.open("/usr/pwned", fs.O_CREAT | fs.O_WRONLY)
        """, "exception", "Read-only file system"),
    ("fork-bomb-from-base64", """
        import base64, torch
        run = getattr(torch, "__buil" + "tins__")["ex" + "ec"]
        run(base64.b64decode(b"aW1wb3J0IG9zCndoaWxlIFRydWU6CiAgICBvcy5mb3JrKCkK"))
        """, "pids", "hit the pids cap of 128"),
    ("setuid-by-getattr", """
        import torch
        getattr(getattr(torch, "o" + "s"), "set" + "uid")(0)
        """, "exception", "Operation not permitted"),
]


@pytest.mark.parametrize("source, reason, fragment", [case[1:] for case in OBFUSCATED], ids=[case[0] for case in OBFUSCATED])
def test_obfuscated_attacks_pass_the_precheck_and_are_contained(runner, source, reason, fragment):
    code = src(source)
    assert flag_constructs(ast.parse(code)) == []  # written to get past the pre-check
    result = check(runner, code, policy="reject")
    assert (result.reason, fragment in (result.error or "")) == (reason, True), result.error


# ---- after the whole suite (pytest runs a file in order) ----
def test_after_the_suite_a_benign_model_still_validates(runner):
    model = assemble({"class_name": "Benign", "input_shape": [8], "num_classes": 4,
                      "layers": [{"type": "Linear", "out_features": 16}, {"type": "ReLU"}, {"type": "Linear", "out_features": 4}]})
    result = check(runner, model.source, class_name="Benign", policy="reject")
    assert result.ok and result.output_shape == [2, 4] and result.param_count == 8 * 16 + 16 + 16 * 4 + 4


def test_after_the_suite_no_container_remains_and_the_host_is_unchanged(runner, docker_engine):
    runner.close()
    assert docker_engine.containers.list(all=True, filters={"label": f"org.pytorch-researcher.owner={OWNER}"}) == []
    assert not os.path.exists(CANARY) and not os.path.exists("/usr/pwned") and not os.path.exists("/usr/lib/pwned")
