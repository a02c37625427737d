"""Hostile reports against the real sandbox: code that speaks the harness's own protocol.

The model's process can reach its report channel (it walks its stack to the harness's `send`
and token), so whatever it sends as its result is a claim. Each test forges one through the real
code paths (validate, `researcher validate`, evaluate_job, `researcher evaluate`) and checks that
the trusted side rejects it clearly, stays bounded and leaves no container behind.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.evaluation.in_container import evaluate_job
from shared.messaging.bus import decode, encode
from shared.messaging.messages import EvalJob, SeedResult, TrainingRecipe, ValidateRequest
from shared.sandboxing.containers import OWNER_LABEL, ContainerRunner, Limits
from shared.sandboxing.validate import validate
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker]

OWNER = "tests-hostile-reports"
ROOT = Path(__file__).resolve().parents[2]
MODEL = """
import torch
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""
# At import, find the harness's `send` and token up the stack and send `final` as the result.
FORGE = """
import io, math, sys, os, base64
import numpy as np
frame = sys._getframe()
while frame.f_code.co_name != "model_process":
    frame = frame.f_back
harness = frame.f_locals
def b64(array):
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()
if harness["blob"]:
    x_val = np.load(io.BytesIO(harness["blob"]))["x_val"]
    uniform = np.full((len(x_val), 3), 1 / 3, np.float32)
final = {final}
harness["send"]({{"final": final, "token": harness["token"]}})
os._exit(0)
"""
VALID = '{"ok": True, "output_shape": [2, 3], "param_count": 15, "trainable_params": 15, "layers": []}'
TRAINED = ('{"ok": True, "probs_b64": b64(uniform), "probs_shape": list(uniform.shape), "train_time_s": 1.0, '
           '"samples_per_s": 10.0, "device": "cpu", "curve": [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}]}')


def forged(final: str) -> str:
    return textwrap.dedent(FORGE).format(final=final) + MODEL


@pytest.fixture(scope="module")
def runner(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="2g", cpus=1.0), owner=OWNER)
    runner.remove_strays()
    yield runner
    runner.remove_strays()


def mine(docker_engine, prefix=OWNER):
    return [c for c in docker_engine.containers.list(all=True, filters={"label": OWNER_LABEL}, ignore_removed=True)
            if c.labels.get(OWNER_LABEL, "").startswith(prefix)]


def check(runner, source):
    request = ValidateRequest(run_id="hostile", source=source, class_name="Model", input_shape=[2, 4])
    return validate(request, runner, 60.0, "2g", "flag")


def train(runner, source, epochs=1):
    job = EvalJob.with_recipe(TrainingRecipe(epochs=epochs, batch_size=16), job_id="hostile-seed0", run_id="hostile", iteration=1, seed=0, dataset="iris", class_name="Model",
                  source=source)
    return evaluate_job(job, runner, timeout_s=120, memory="2g")


def cli(command: str, path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI under a small parent that reports its children's peak memory (KiB)."""
    wrapper = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(proc.stdout); sys.stderr.write(proc.stderr)\n"
               "print('@@PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(proc.returncode)\n")
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "researcher.cli", command, str(path),
                           "--class-name", "Model", *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    peak = int(proc.stderr.rsplit("@@PEAK", 1)[1].split()[0])
    return proc, peak


def write(tmp_path, source) -> Path:
    path = tmp_path / "model.py"
    path.write_text(source)
    return path


# ---- the validation path ----
@pytest.mark.parametrize("final, where", [
    (VALID.replace('"param_count": 15', '"param_count": math.inf'), "no param_count"),
    (VALID.replace('"param_count": 15', '"param_count": "15"'), "$.result.param_count"),
    (VALID.replace('"output_shape": [2, 3]', '"output_shape": [2, -3]'), "$.result.output_shape[1]"),
], ids=["infinity", "string", "negative-dim"])
def test_forged_figures_of_the_wrong_kind_reject_the_model(runner, tmp_path, final, where):
    result = check(runner, forged(final))
    assert (result.ok, result.reason) == (False, "bad_report") and where in result.error
    proc, _ = cli("validate", write(tmp_path, forged(final)), "--input-shape", "2,4", "--direct", "--precheck", "flag")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "rejected (bad_report)" in proc.stdout


def test_a_forged_valid_result_is_labelled_as_the_codes_claim(runner, tmp_path):
    result = check(runner, forged(VALID))
    assert result.ok and result.param_count == 15 and result.reported_by == "model_process"
    proc, _ = cli("validate", write(tmp_path, forged(VALID)), "--input-shape", "2,4", "--direct", "--precheck", "flag")
    assert proc.returncode == 0 and "reported by the model's process" in proc.stdout


def test_a_150_mb_error_is_cut_and_the_cli_stays_small(runner, tmp_path):
    source = "raise RuntimeError('E' * 150_000_000)\n" + MODEL
    result = check(runner, source)
    assert not result.ok and len(result.error) < 20_000, (result.reason, len(result.error or ""))
    baseline, base_peak = cli("validate", write(tmp_path, MODEL), "--input-shape", "2,4", "--direct")
    assert baseline.returncode == 0, baseline.stderr
    proc, peak = cli("validate", write(tmp_path, source), "--input-shape", "2,4", "--direct", "--precheck", "flag", "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stdout) < 100_000 and json.loads(proc.stdout)["ok"] is False
    assert peak < base_peak + 100 * 1024, (peak, base_peak)  # KiB: it once grew to 900 MB


def test_a_150_mb_forged_report_is_cut_off_at_its_bound(runner, docker_engine):
    result = check(runner, forged(VALID[:-1] + ', "padding": "x" * 150_000_000}'))
    assert (result.ok, result.reason) == (False, "bad_report") and "bytes of report" in result.error
    assert mine(docker_engine) == []


# ---- the training path ----
def test_an_enormous_prediction_array_is_rejected_and_its_container_removed(runner, docker_engine, tmp_path):
    final = TRAINED.replace('b64(uniform)', '"A" * 60_000_000').replace("list(uniform.shape)", "[len(x_val), 1_500_000]")
    result = train(runner, forged(final))
    assert (result.ok, result.reason) == (False, "bad_report") and "bytes of report" in result.error
    assert mine(docker_engine) == []
    before = {c.id for c in mine(docker_engine, "cli-evaluate-")}
    proc, _ = cli("evaluate", write(tmp_path, forged(final)), "--dataset", "iris", "--num-seeds", "1", "--epochs", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "bytes of report" in proc.stdout
    assert {c.id for c in mine(docker_engine, "cli-evaluate-")} <= before


@pytest.mark.parametrize("final, reason, where", [
    (TRAINED.replace('"train_time_s": 1.0', '"train_time_s": math.inf'), "bad_report", "$.result.train_time_s"),
    (TRAINED.replace('"samples_per_s": 10.0', '"samples_per_s": "fast"'), "bad_report", "$.result.samples_per_s"),
    (TRAINED.replace('b64(uniform)', 'b64(uniform[:, :2])'), "bad_predictions", "characters of base64"),
], ids=["infinity", "string", "short-predictions"])
def test_forged_training_reports_of_the_wrong_kind_fail_the_seed(runner, tmp_path, final, reason, where):
    result = train(runner, forged(final))
    assert (result.ok, result.reason) == (False, reason) and where in result.error
    proc, _ = cli("evaluate", write(tmp_path, forged(final)), "--dataset", "iris", "--num-seeds", "1", "--epochs", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_a_nan_curve_keeps_the_seed_through_nats_and_the_json_valid(runner, tmp_path):
    final = TRAINED.replace('"train_loss": 1.0', '"train_loss": math.nan').replace('"train_accuracy": 0.5', '"train_accuracy": math.inf')
    result = train(runner, forged(final))
    assert result.ok, result.error
    assert (result.learning_curve[0].train_loss, result.learning_curve[0].train_accuracy) == (None, None)
    assert decode(encode(result), SeedResult) == result
    proc, _ = cli("evaluate", write(tmp_path, forged(final)), "--dataset", "iris", "--num-seeds", "1", "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr

    def no_constants(token):
        raise AssertionError(f"{token} in the JSON")
    evaluation = json.loads(proc.stdout, parse_constant=no_constants)
    assert evaluation["failed_seeds"] == []


def test_a_failed_seed_says_why_in_fields(runner):
    result = train(runner, "import os\nos._exit(3)\n" + MODEL)
    assert (result.ok, result.reason, result.timed_out, result.oom_killed) == (False, "exited", False, False)
    assert "exit code 3" in result.error
    result = train(runner, MODEL.replace("return self.fc(x.flatten(1))", "raise KeyError('boom')"))
    assert (result.reason, result.exception_type) == ("exception", "KeyError")


def test_afterwards_nothing_is_left(runner, docker_engine):
    runner.wait_retired()  # a container whose report came whole is removed behind its job
    assert mine(docker_engine) == []
