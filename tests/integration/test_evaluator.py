"""Training generated code in a real container; every metric computed outside it."""

import hashlib
import json

import msgspec
import numpy as np
import pytest

from shared.data.datasets import load_dataset, split, with_test_split
from shared.modelspec.assemble import assemble
from shared.evaluation.in_container import evaluate_job
from shared.sandboxing.containers import ContainerRunner, Limits
from shared.sandboxing.protocol import Hparams, TrainJob
from shared.messaging.messages import EvalJob, TrainingRecipe
from tests.conftest import SANDBOX_IMAGE
from tests.integration.test_sandbox import DIGITS_CNN

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def runner(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="2g", cpus=2.0), owner="tests-evaluator")
    yield runner
    runner.remove_strays()


def job(source, class_name, **recipe):
    return EvalJob.with_recipe(TrainingRecipe(**{"epochs": 3, "batch_size": 64, "lr": 3e-3, **recipe}), job_id="t.it0001.seed0", run_id="t", iteration=1, seed=0, dataset="digits",
                   class_name=class_name, source=source)


def test_generated_cnn_trains_and_is_scored_outside(runner):
    model = assemble(DIGITS_CNN)
    result = evaluate_job(job(model.source, model.class_name), runner, timeout_s=300, memory="2g")
    assert result.ok, result.error
    assert result.metrics["val_accuracy"] > 0.85
    assert set(result.metrics) >= {"val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro", "val_loss"}
    assert [e.epoch for e in result.learning_curve] == [1, 2, 3]
    assert result.learning_curve[-1].train_loss < result.learning_curve[0].train_loss
    # validation curves computed outside from per-epoch predictions; the last epoch's agrees with the final score
    assert all(e.val_loss is not None and e.val_accuracy is not None for e in result.learning_curve)
    assert abs(result.learning_curve[-1].val_accuracy - result.metrics["val_accuracy"]) < 0.01
    assert result.samples_per_s > 0


def test_printed_fake_metrics_change_nothing(runner):
    source = (
        "import torch\nfrom torch import nn\n"
        "class Liar(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.bias = nn.Parameter(torch.zeros(10))\n"
        "    def forward(self, x):\n"
        "        print('{\"val_accuracy\": 1.0}', flush=True)\n"
        "        return self.bias.expand(x.shape[0], 10) * 0  # a constant: chance-level predictions\n"
    )
    result = evaluate_job(job(source, "Liar", epochs=1), runner, timeout_s=300, memory="2g")
    assert result.ok, result.error
    assert result.metrics["val_accuracy"] < 0.2


def test_code_that_fails_in_training_is_a_failed_seed_with_its_reason(runner):
    source = (
        "import torch\nfrom torch import nn\n"
        "class Boom(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(64, 10)\n"
        "    def forward(self, x):\n"
        "        if self.training:\n"
        "            raise RuntimeError('exploded in training')\n"
        "        return self.fc(x.flatten(1))\n"
    )
    result = evaluate_job(job(source, "Boom", epochs=1), runner, timeout_s=300, memory="2g")
    assert not result.ok
    assert "exploded in training" in result.error


@pytest.mark.parametrize("standardize", [True, False])
def test_the_container_gets_the_inputs_standardised_or_raw_as_the_recipe_says(runner, standardize):
    """digits' pixels are 0..1 raw; standardised with the training split's mean and std, they go negative."""
    source = (
        "import torch\nfrom torch import nn\n"
        "class Peek(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = nn.Parameter(torch.zeros(1))  # an optimizer needs one\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError(f'inputs in [{float(x.min()):.3f}, {float(x.max()):.3f}]')\n"
    )
    result = evaluate_job(job(source, "Peek", epochs=1, standardize=standardize), runner, timeout_s=300, memory="2g")
    low, high = map(float, result.error.split("inputs in [")[1].split("]")[0].split(", "))
    assert (low < -0.5 and high > 1.5) if standardize else (low == 0.0 and high == 1.0)


def test_a_model_searching_its_container_for_the_labels_finds_none(runner):
    """Everything the container holds: the arrays in its memory and the files it can read."""
    source = (
        "import gc, os\nimport numpy as np\nimport torch\n"
        "found = set()\n"
        "for obj in gc.get_objects():\n"
        "    if type(obj).__name__ == 'NpzFile':\n"
        "        found.update(obj.files)\n"
        "for top in ('/tmp', '/opt/harness', '/home', '/root', '/srv', '/mnt', '/var'):\n"
        "    for folder, _, files in os.walk(top):\n"
        "        found.update(f for f in files if 'val' in f or f.endswith(('.npy', '.npz', '.csv')))\n"
        "raise RuntimeError('found: ' + ','.join(sorted(found)))\n"
    )
    result = evaluate_job(job(source, "Model", epochs=1), runner, timeout_s=300, memory="2g")
    assert not result.ok
    assert "found: x_train,x_val,y_train" in result.error  # the validation inputs, never their labels
    assert "y_val" not in result.error


def test_researcher_evaluate_trains_a_file_in_containers(docker_engine, tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "net.py"
    path.write_text(assemble(DIGITS_CNN).source)
    proc = subprocess.run([sys.executable, "-m", "researcher.cli", "evaluate", str(path), "--class-name", "DigitsCNN",
                           "--dataset", "digits", "--epochs", "2", "--num-seeds", "2", "--subset-size", "600", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluation = json.loads(proc.stdout)
    assert evaluation["aggregated"]["val_accuracy"]["n"] == 2 and evaluation["failed_seeds"] == []
    assert len(evaluation["final"]["confusion_matrix"]) == 10 and evaluation["seed_results"][0]["dynamics"]["insights"]
    # each seed's container measured from outside (the evaluator's runner measures; shared/sandboxing/cost.py)
    assert all(row["cost"]["cpu_s"] > 0 and row["cost"]["peak_memory_bytes"] > 0 for row in evaluation["seed_results"])


# ---- a cheap job's fixed cost (issue 13) ----
PROBE = (  # the model's code reports, from its own process, what its container imported before the job
    "import sys\nimport torch\nfrom torch import nn\n"
    "print('DYNAMO_IMPORTED', 'torch._dynamo' in sys.modules, flush=True)\n"
    "class Probe(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.fc = nn.Linear(64, 10)\n"
    "    def forward(self, x):\n"
    "        return self.fc(x.flatten(1))\n")


@pytest.fixture
def pooled(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="2g", cpus=2.0), owner="tests-evaluator-pool",
                             pool_size=1, warm_train=True)
    runner.start_pool()
    yield runner
    runner.close()


def test_a_pooled_training_container_waits_at_the_lowest_cpu_weight_with_the_optimizer_imported(pooled, docker_engine):
    assert pooled.wait_warm()
    (warm,) = docker_engine.containers.list(filters={"label": "org.pytorch-researcher.owner=tests-evaluator-pool"})
    assert warm.attrs["HostConfig"]["CpuShares"] == 2  # a refill yields the cores to the job in hand
    result = evaluate_job(job(PROBE, "Probe", epochs=1), pooled, timeout_s=300, memory="2g")
    assert result.ok, result.error
    # the optimizer's lazy import of torch._dynamo (~1.3 s of CPU) was paid before the job arrived
    assert "DYNAMO_IMPORTED True" in result.output_tail


def test_a_seed_says_where_its_time_went(pooled, docker_engine):
    assert pooled.wait_warm()
    result = evaluate_job(job(PROBE, "Probe", epochs=1), pooled, timeout_s=300, memory="2g")
    assert result.ok, result.error
    trusted = {"data_s", "container_wait_s", "send_s", "in_container_s", "decode_s", "end_s", "score_s"}
    claimed = {"harness.receive_s", "harness.worker_s", "harness.code_s", "harness.setup_s", "harness.predict_s",
               "harness.encode_s"}
    assert set(result.timings) == trusted | claimed
    # the container's claims fit inside the time the trusted side measured it for
    inside = sum(result.timings[k] for k in claimed - {"harness.worker_s"}) + result.train_time_s
    assert inside <= result.timings["in_container_s"]
    rounding = 0.0005 * len(trusted) + 0.0005  # each step is kept to 4 decimals, the duration to 3
    assert sum(result.timings[k] for k in trusted) <= result.duration_s + rounding
    pooled.close()  # the container removed behind the job is gone once the runner is closed
    assert not docker_engine.containers.list(all=True, filters={"label": "org.pytorch-researcher.owner=tests-evaluator-pool"})


def test_a_job_waits_for_the_refill_under_way_rather_than_starting_another(docker_engine):
    owner = "tests-evaluator-refill"
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="2g", cpus=2.0), owner=owner, pool_size=1, warm_train=True)
    try:
        runner.start_pool()
        while not docker_engine.containers.list(all=True, filters={"label": f"org.pytorch-researcher.owner={owner}"},
                                                ignore_removed=True):
            pass  # the filler has created its container: a refill is under way, not yet warm
        job_ = job(PROBE, "Probe", epochs=1)
        container_job = TrainJob(source=job_.source, class_name=job_.class_name, seed=0, n_val=0, num_classes=10,
                                 hparams=Hparams(epochs=1, batch_size=64, lr=1e-3, optimizer="adam", weight_decay=0.0))
        outcome = runner.run(container_job, b"", timeout_s=300, job_id="refill")
        assert outcome.pooled  # it got the refill's container, warm, not a cold one of its own
    finally:
        runner.close()


def test_class_weights_reach_the_loss_inside_the_container(runner):
    """On the 1%-positive set, the flag travels job -> container -> engine, which weighs the loss by
    the counts of the training labels it holds: the rare class's recall rises (the validation
    labels never enter the container; the scores are computed outside)."""
    model = assemble({"class_name": "RareMLP", "input_shape": [20], "num_classes": 2,
                      "layers": [{"type": "Linear", "out_features": 64}, {"type": "ReLU"}, {"type": "Linear", "out_features": 2}]})
    recall = {}
    for weighted in (False, True):
        result = evaluate_job(EvalJob.with_recipe(TrainingRecipe(epochs=10, batch_size=128, class_weights=weighted),
                                                  job_id=f"t.it0001.seed0.{weighted}", run_id="t", iteration=1, seed=0,
                                                  dataset="imbalanced", class_name=model.class_name, source=model.source),
                              runner, timeout_s=300, memory="2g")
        assert result.ok, result.error
        recall[weighted] = result.metrics["val_recall_macro"]
    assert recall[True] > recall[False] + 0.1, recall


# ---- the held-out test split (issue 15) ----
PEEK = '''import hashlib
import json
from torch import nn

try:  # the harness's frame that loaded the job's npz blob: every array the container was given
    raise RuntimeError("where am I")
except RuntimeError as exc:
    frame = exc.__traceback__.tb_frame
while "arrays" not in frame.f_locals:
    frame = frame.f_back
arrays = frame.f_locals["arrays"]
print("BLOB " + json.dumps({k: [list(arrays[k].shape), hashlib.sha256(arrays[k].tobytes()).hexdigest()]
                            for k in arrays.files}), flush=True)


class Peek(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def blob_seen(result) -> dict:
    line = next(line for line in result.output_tail.splitlines() if line.startswith("BLOB "))
    return json.loads(line.removeprefix("BLOB "))


def digest(array) -> list:
    return [list(array.shape), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()]


def test_a_test_job_trains_as_before_and_predicts_the_test_inputs_without_their_labels(runner):
    """The container of a test job holds the seed's training split, as its validation job's does,
    and the held-out test inputs in place of the validation ones: no label but the training ones."""
    val = evaluate_job(job(PEEK, "Peek", epochs=1), runner, timeout_s=300, memory="2g")
    test = evaluate_job(msgspec.structs.replace(job(PEEK, "Peek", epochs=1), split="test",
                                                job_id="t.it0001.test.seed0"), runner, timeout_s=300, memory="2g")
    assert val.ok and test.ok, (val.error, test.error)
    ds = with_test_split(load_dataset("digits"))
    data = split(ds, 0)
    x_test = ((ds.x_test - data.mean) / data.std).astype(np.float32)  # as the training split normalises it
    assert blob_seen(test) == {"x_train": digest(data.x_train), "y_train": digest(data.y_train), "x_val": digest(x_test)}
    assert blob_seen(val) == {"x_train": digest(data.x_train), "y_train": digest(data.y_train),
                              "x_val": digest(data.x_val)}
    # scored outside on the test labels, under test_ names, with no per-epoch curve against them
    assert test.split == "test" and val.split == "val"
    assert set(test.metrics) == {f"test_{name.removeprefix('val_')}" for name in val.metrics}
    assert 0.0 <= test.metrics["test_accuracy"] <= 1.0 and test.learning_curve == []
    assert sum(test.details["class_balance"]["counts"]) == len(ds.y_test) == 360
