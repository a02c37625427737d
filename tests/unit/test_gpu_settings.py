"""GPU pinning: evaluator.gpus parsing, the device request the training containers get, and the
per-GPU evaluators scripts/gpu-compose.py writes for compose."""

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from docker.types import DeviceRequest

import shared.sandboxing.runners as runners
from shared.sandboxing.runners import make_eval_runner, want_gpus
from shared.runtime.config import Config, EvaluatorConfig, load_config
from shared.sandboxing.containers import Limits, gpu_request

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-compose.py"
NVIDIA = {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}}
PLAIN = {"runc": {"path": "runc"}}


# ---- evaluator.gpus ----
@pytest.mark.parametrize("setting, runtimes, expected", [
    ("auto", NVIDIA, (True, ())),
    ("auto", PLAIN, (False, ())),
    ("auto", {}, (False, ())),
    ("none", NVIDIA, (False, ())),
    ("all", PLAIN, (True, ())),
    (" ALL ", PLAIN, (True, ())),
    ("0", PLAIN, (True, ("0",))),
    ("0,2", PLAIN, (True, ("0", "2"))),
    (" 1 , 3 ", NVIDIA, (True, ("1", "3"))),
    ("GPU-6f1c2d3e-0b4a-4c1e-9d55-0123456789ab", PLAIN, (True, ("GPU-6f1c2d3e-0b4a-4c1e-9d55-0123456789ab",))),
])
def testwant_gpus(setting, runtimes, expected):
    assert want_gpus(setting, runtimes) == expected


@pytest.mark.parametrize("setting", ["", "0,,1", "0,", "0 1", ","])
def test_want_gpus_rejects_malformed_lists_with_the_key_to_fix(setting):
    with pytest.raises(ValueError, match="evaluator.gpus"):
        want_gpus(setting, NVIDIA)


def test_the_environment_sets_a_list_of_ids(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no config/researcher.yaml
    assert load_config(environ={"RESEARCHER_EVALUATOR__GPUS": "0,2"}).evaluator.gpus == "0,2"
    assert load_config(environ={"RESEARCHER_EVALUATOR__GPUS": "1"}).evaluator.gpus == "1"
    assert EvaluatorConfig().gpus == "auto"


class _FakeRunner:
    """ContainerRunner's surface that make_eval_runner uses, without a Docker engine."""

    def __init__(self, limits, owner, max_job_s, runtimes=None):
        self.limits, self.owner, self.max_job_s = limits, owner, max_job_s
        self.client = self
        self._runtimes = runtimes

    def info(self):
        if self._runtimes is None:
            raise ConnectionError("engine away")
        return {"Runtimes": self._runtimes}


@pytest.mark.parametrize("setting, runtimes, gpus, ids", [
    ("0,1", PLAIN, True, ("0", "1")),
    ("auto", NVIDIA, True, ()),
    ("auto", None, False, ()),  # info() fails: no GPUs
    ("none", NVIDIA, False, ()),
])
def test_make_eval_runner_sets_the_limits(monkeypatch, setting, runtimes, gpus, ids):
    monkeypatch.setattr(runners, "ContainerRunner",
                        lambda limits, owner, max_job_s, pool_size, warm_train, **_: _FakeRunner(limits, owner, max_job_s, runtimes))
    config = Config(evaluator=EvaluatorConfig(gpus=setting))
    runner = make_eval_runner(config, owner="evaluator-test")
    assert (runner.limits.gpus, runner.limits.gpu_ids) == (gpus, ids)


# ---- the device request ----
def test_named_gpus_are_requested_by_id_from_the_nvidia_driver():
    request = gpu_request(("0", "2"))
    assert isinstance(request, DeviceRequest)
    assert request.driver == "nvidia"
    assert request.device_ids == ["0", "2"]
    assert request.capabilities == [["gpu"]]
    assert request.count == 0  # the API takes either a count or ids


def test_no_ids_requests_every_gpu():
    request = gpu_request(())
    assert request.count == -1
    assert request.device_ids == []
    assert request.capabilities == [["gpu"]]


class _Containers:
    def __init__(self):
        self.kwargs = None

    def create(self, image, **kwargs):
        self.kwargs = kwargs


class _Client:
    def __init__(self):
        self.containers = _Containers()


@pytest.mark.parametrize("limits, expected", [
    (Limits(image="x", gpus=True, gpu_ids=("1",)), [gpu_request(("1",))]),
    (Limits(image="x", gpus=True), [gpu_request()]),
    (Limits(image="x", gpus=False, gpu_ids=("1",)), None),
])
def test_the_training_container_gets_the_device_request(limits, expected):
    from shared.sandboxing.boundary import Boundary
    from shared.sandboxing.containers import ContainerRunner
    from shared.sandboxing.pool import WarmPool

    runner = ContainerRunner.__new__(ContainerRunner)  # no engine: only _create's arguments are under test
    runner.limits, runner.owner, runner.client = limits, "test", _Client()
    runner._boundary, runner._boundary_lock = Boundary("runc", "chosen by the test"), threading.Lock()
    runner._pool = WarmPool(0, start=None, prioritise=None, max_idle_s=60.0, name="test", start_timeout_s=1.0)
    runner.max_idle_s, runner.max_job_s, runner.warm_flops, runner.warm_train = 60.0, 60.0, False, False
    runner._create("job-1", threads=1)
    assert runner.client.containers.kwargs.get("device_requests") == expected
    assert runner.client.containers.kwargs["runtime"] == "runc"
    assert runner.client.containers.kwargs["security_opt"] == runner._boundary.security_opt


# ---- scripts/gpu-compose.py ----
def generate(tmp_path, *args, gpus="0,1", path=None):
    out = tmp_path / "compose.gpu.yaml"
    env = {**os.environ, "GPUS": gpus}
    if path is not None:
        env["PATH"] = path
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    return proc, out


def compose_service(file: str, name: str) -> dict:
    return yaml.safe_load((ROOT / file).read_text())["services"][name]  # merge keys resolved


def without_gpu(service: dict) -> dict:
    service = {k: v for k, v in service.items() if k != "deploy"}
    service["environment"] = {k: v for k, v in service["environment"].items() if k != "RESEARCHER_EVALUATOR__GPUS"}
    return service


def test_one_evaluator_per_gpu_pinned_to_it(tmp_path):
    proc, out = generate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(out.read_text())["services"]
    assert sorted(services) == ["evaluator-gpu0", "evaluator-gpu1"]
    for gpu in ("0", "1"):
        service = services[f"evaluator-gpu{gpu}"]
        assert service["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}]
        assert service["environment"]["RESEARCHER_EVALUATOR__GPUS"] == gpu
        assert service["environment"]["NATS_URL"] == "tls://nats:4222"
        assert service["depends_on"] == {"nats": {"condition": "service_healthy"}, "dockerproxy": {"condition": "service_healthy"}}


def test_the_gpu_evaluators_are_compose_yamls_evaluator(tmp_path):
    """Written out in full (anchors do not reach across files): they must not drift apart."""
    _, out = generate(tmp_path, gpus="3")
    service = yaml.safe_load(out.read_text())["services"]["evaluator-gpu3"]
    assert without_gpu(service) == compose_service("compose.yaml", "evaluator")


def test_standalone_evaluators_are_compose_evaluator_yamls(tmp_path):
    _, out = generate(tmp_path, "--standalone", gpus="GPU-6f1c2d3e-aaaa")
    services = yaml.safe_load(out.read_text())["services"]
    assert list(services) == ["evaluator-gpu-6f1c2d3e-aaaa"]
    service = services["evaluator-gpu-6f1c2d3e-aaaa"]
    assert service["environment"]["RESEARCHER_EVALUATOR__GPUS"] == "GPU-6f1c2d3e-aaaa"
    assert service["depends_on"] == {"dockerproxy": {"condition": "service_healthy"}}
    assert without_gpu(service) == compose_service("compose.evaluator.yaml", "evaluator")


def test_compose_evaluator_yaml_is_compose_yamls_evaluator_without_nats():
    standalone, head = compose_service("compose.evaluator.yaml", "evaluator"), compose_service("compose.yaml", "evaluator")
    assert standalone["environment"]["NATS_URL"].startswith("${NATS_URL:?")
    assert head["depends_on"].pop("nats") == {"condition": "service_healthy"}
    # the credential: the stack's own on the head, a copy of the head's elsewhere
    assert standalone["volumes"][-1].startswith("${NATS_CREDENTIALS:?")
    assert head["volumes"][-1].startswith("${RESEARCHER_CREDENTIALS:?") and "/roles/evaluator:" in head["volumes"][-1]
    for service in (standalone, head):
        del service["environment"]["NATS_URL"]
        assert service["volumes"].pop().endswith(":/run/secrets/nats:ro")
    assert standalone == head
    # the Docker socket proxy they reach the engine through is the same in both files
    assert compose_service("compose.evaluator.yaml", "dockerproxy") == compose_service("compose.yaml", "dockerproxy")


def test_without_gpus_it_asks_nvidia_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(0o755)
    proc, out = generate(tmp_path, gpus="", path=str(bin_dir))
    assert proc.returncode == 0, proc.stderr
    assert sorted(yaml.safe_load(out.read_text())["services"]) == ["evaluator-gpu0", "evaluator-gpu1", "evaluator-gpu2"]


@pytest.mark.parametrize("gpus, message", [
    ("", "GPUS is not set"),  # and no nvidia-smi on PATH
    ("0,0", "listed twice"),
    ("0;rm", "not a GPU index"),
])
def test_errors_say_what_to_set(tmp_path, gpus, message):
    proc, out = generate(tmp_path, gpus=gpus, path=str(tmp_path))
    assert proc.returncode != 0
    assert message in proc.stderr and "GPUS=" in proc.stderr
    assert not out.exists()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
@pytest.mark.parametrize("base, args", [("compose.yaml", ()), ("compose.evaluator.yaml", ("--standalone",))])
def test_docker_compose_accepts_the_files(tmp_path, base, args):
    _, out = generate(tmp_path, *args)
    env = {**os.environ, "NATS_URL": "tls://head:4222", "RESEARCHER_CREDENTIALS": str(tmp_path / "credentials"),
           "NATS_CREDENTIALS": str(tmp_path / "credentials/roles/evaluator")}
    proc = subprocess.run(["docker-compose", "-f", base, "-f", str(out), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
