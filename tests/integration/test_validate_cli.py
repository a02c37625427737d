"""`researcher validate`: one file through the sandbox's code path, directly or through the service."""

import asyncio
import json
import subprocess
import sys

import nats
import pytest

from services.sandbox import main as sandbox_main
from shared.messaging import subjects
from shared.runtime.config import load_config, replica_name

pytestmark = [pytest.mark.docker]

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))
'''
BROKEN = NET.replace("self.conv(x).mean((2, 3))", "self.conv(x).flatten(1)")
PARAMS = 3 * 8 * 9 + 8 + 8 * 10 + 10


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "researcher.cli", "validate", *args],
                          capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def test_a_valid_model_exits_0_with_the_measured_facts(docker_engine, model_file, monkeypatch):
    monkeypatch.delenv("NATS_URL", raising=False)
    proc = cli(str(model_file), "--class-name", "Net", "--input-shape", "2,3,16,16", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["error"] is None
    assert result["output_shape"] == [2, 10] and result["param_count"] == PARAMS
    assert result["duration_s"] > 0 and result["via"] == "local sandbox"


def test_a_rejected_model_exits_1_with_the_reason(docker_engine, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    proc = cli(str(path), "--class-name", "Net", "--input-shape", "2,3,16,16", "--direct")
    assert proc.returncode == 1, proc.stderr
    assert "rejected (exception): RuntimeError in forward on input (2, 3, 16, 16)" in proc.stdout
    assert "model_code.py line 13" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--class-name", "Net", "--input-shape", "2,x"], "--input-shape must be comma-separated integers"),
    (["--class-name", "Net", "--input-shape", "2,3", "--expected-output-shape", "0"], "all positive"),
    (["--input-shape", "2,3"], "the following arguments are required: --class-name"),
])
def test_usage_errors_exit_2(model_file, args, message):
    proc = cli(str(model_file), *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_missing_file_exits_2(tmp_path):
    proc = cli(str(tmp_path / "absent.py"), "--class-name", "Net", "--input-shape", "1,3")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "absent.py" in proc.stderr


async def test_with_a_stack_the_sandbox_service_answers(docker_engine, model_file, nats_url, nc):
    config = load_config(environ={"NATS_URL": nats_url, "RESEARCHER_SANDBOX__POOL_SIZE": "1"})
    stop = asyncio.Event()
    service = asyncio.create_task(sandbox_main.main(config=config, stop=stop))
    try:
        while True:  # listening (gVisor's probe and the pool come first): a malformed request is answered
            try:
                await nc.request(subjects.VALIDATE_SUBJECT, b"{}", timeout=1)
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                assert not service.done(), service
                await asyncio.sleep(0.2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "researcher.cli", "validate", str(model_file), "--class-name", "Net",
            "--input-shape", "1,3,8,8", "--expected-output-shape", "1,10", "--json", "--nats-url", nats_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["via"] == "sandbox service" and result["ok"] is True and result["param_count"] == PARAMS
        assert result["runtime"] in ("runsc", "runc")  # the service's container said which
    finally:
        stop.set()
        await asyncio.wait_for(service, 120)
    owner = f"org.pytorch-researcher.owner=sandbox-{replica_name()}"
    assert not docker_engine.containers.list(all=True, filters={"label": owner})  # the pool went with it
