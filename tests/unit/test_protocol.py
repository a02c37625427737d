"""The container protocol's trusted side: jobs on the wire, the strict report decoder, the seed
built from a forged report, NaN through NATS, and stray scans that race other processes."""

import base64
import json
import math

import msgspec
import numpy as np
import pytest
from docker.errors import NotFound

from shared.data.datasets import load_dataset, split, with_test_split
from shared.evaluation.in_container import evaluate_job
from shared.messaging.bus import decode, encode
from shared.messaging.messages import EpochStats, EvalJob, SeedResult, TrainingRecipe
from shared.sandboxing.containers import OWNER_LABEL, EXPIRES_LABEL, ContainerRunner, RunOutcome
from shared.sandboxing.protocol import (BadReport, Hparams, TrainJob, ValidateJob, b64_len, decode_report,
                                        max_report_bytes)
from shared.sandboxing.validate import outcome_to_result

VALIDATE = ValidateJob(source="", class_name="Net", input_shape=[2, 8])
TRAIN = TrainJob(source="", class_name="Net", seed=0, hparams=Hparams(epochs=2, batch_size=8, lr=0.1, optimizer="adam",
                                                                   weight_decay=0.0),
                 n_val=5, num_classes=3)
VALID = {"ok": True, "output_shape": [2, 4], "param_count": 36, "trainable_params": 36,
         "layers": [{"name": "fc", "type": "Linear", "params": 36}], "flops": 128}


def report(result, **extra) -> bytes:
    return json.dumps({"harness_completed": True, "result": result, "exit_code": 0,
                       "process": {"stage": "forward", "exit_code": 0, "signal": None}, **extra}).encode()


# ---- jobs ----
def test_jobs_travel_as_the_dicts_the_harness_reads():
    assert msgspec.to_builtins(VALIDATE) == {"mode": "validate", "source": "", "class_name": "Net",
                                             "input_shape": [2, 8], "threads": 1, "input_dtype": "float32",
                                             "vocab_size": 0}
    wire = msgspec.to_builtins(TRAIN)
    assert wire["mode"] == "train" and wire["hparams"] == {"epochs": 2, "batch_size": 8, "lr": 0.1,
                                                           "optimizer": "adam", "weight_decay": 0.0}
    assert msgspec.convert(wire, type=ValidateJob | TrainJob) == TRAIN


def test_the_report_bound_grows_with_the_predictions_the_job_implies():
    small, large = max_report_bytes(VALIDATE, 65536), max_report_bytes(TRAIN, 65536)
    assert small < 8 << 20 and large - small >= b64_len(5 * 3 * 4) + b64_len(2 * 5 * 3 * 2)
    cifar = msgspec.structs.replace(TRAIN, n_val=10_000, num_classes=10, hparams=Hparams(epochs=50, batch_size=8, lr=0.1,
                                                                                          optimizer="adam", weight_decay=0.0))
    assert 15 << 20 < max_report_bytes(cifar, 65536) < 25 << 20  # far below the 768 MB of old


# ---- the strict decoder ----
@pytest.mark.parametrize("line, where", [
    (report({**VALID, "param_count": "36"}), "$.result.param_count"),
    (report({**VALID, "param_count": -1}), "$.result.param_count"),
    (report({**VALID, "param_count": 2**64}), "$.result.param_count"),
    (report({**VALID, "output_shape": "x"}), "$.result.output_shape"),
    (report({**VALID, "output_shape": [1] * 17}), "$.result.output_shape"),
    (report({**VALID, "layers": [{"name": "x", "type": "Linear", "params": 1}] * 201}), "$.result.layers"),
    (report({**VALID, "layers": [{"name": "x" * 2000, "type": "Linear", "params": 1}]}), "$.result.layers[0].name"),
    (report({"ok": False, "error": "e" * 20000}), "$.result.error"),
    (report({"ok": False, "error": 7}), "$.result.error"),
    (report(VALID, oom_kills=-3), "$.oom_kills"),
    (report(VALID, process={"stage": "x", "signal": 1000}), "$.process.signal"),
    (report("not an object"), "$.result"),
    (b"[1, 2]", "Expected `object`"),
    (b"{not json", "not JSON"),
    (b"[" * 100_000, "not JSON"),
])
def test_a_malformed_report_is_rejected_naming_where(line, where):
    with pytest.raises(BadReport, match=__import__("re").escape(where)):
        decode_report(line, VALIDATE)


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_are_unknown_so_a_required_count_rejects_the_model(number):
    line = report(VALID).replace(b'"param_count": 36', f'"param_count": {number}'.encode())
    result = outcome_to_result(RunOutcome(report=decode_report(line, VALIDATE), exit_code=0, timed_out=False,
                                          oom_killed=False, duration_s=0.1), 60, "2g")
    assert (result.ok, result.reason) == (False, "bad_report") and "no param_count" in result.error


def test_a_valid_report_is_labelled_as_the_codes_own_claims():
    result = outcome_to_result(RunOutcome(report=decode_report(report(VALID), VALIDATE), exit_code=0, timed_out=False,
                                          oom_killed=False, duration_s=0.1), 60, "2g")
    assert result.ok and result.param_count == 36 and result.reported_by == "model_process"
    assert result.layers == [{"name": "fc", "type": "Linear", "params": 36}]


def test_a_report_past_its_bound_is_a_bad_report():
    outcome = RunOutcome(report=None, exit_code=137, timed_out=False, oom_killed=False, duration_s=0.1,
                         bad_report="the container wrote more than 10 bytes of report")
    result = outcome_to_result(outcome, 60, "2g")
    assert (result.ok, result.reason, result.error) == (False, "bad_report", outcome.bad_report)


# ---- a seed from a forged training report (the real evaluate_job, a fake runner) ----
def _b64(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


class FakeRunner:
    """Answers every job with the report `make(job)` writes, through the real decoder."""

    def __init__(self, make):
        self.make, self.jobs = make, []

    def run(self, job, blob, timeout_s, job_id=""):
        self.jobs.append(job)
        return RunOutcome(report=decode_report(report(self.make(job)), job), exit_code=0, timed_out=False,
                          oom_killed=False, duration_s=0.1)


EVAL = EvalJob.with_recipe(TrainingRecipe(epochs=2), job_id="j", run_id="r", iteration=1, seed=0, dataset="iris", class_name="Net", source="")


def trained(job, **override):
    probs = np.full((job.n_val, job.num_classes), 1.0 / job.num_classes, np.float32)
    epochs = np.stack([probs, probs]).astype(np.float16)
    return {"ok": True, "probs_b64": _b64(probs), "probs_shape": list(probs.shape),
            "epoch_probs_b64": _b64(epochs), "epoch_probs_shape": list(epochs.shape),
            "curve": [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.3}, {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.4}],
            "train_time_s": 1.0, "samples_per_s": 100.0, "device": "cpu", **override}


def test_a_fair_training_report_is_scored_and_the_job_states_its_predictions():
    runner = FakeRunner(trained)
    result = evaluate_job(EVAL, runner, timeout_s=60, memory="2g")
    assert result.ok, result.error
    data = split(with_test_split(load_dataset("iris")), 0, 0.2, None)  # from the pool: the test split is apart
    assert (runner.jobs[0].n_val, runner.jobs[0].num_classes) == (len(data.y_val), 3)


@pytest.mark.parametrize("override, fragment", [
    (lambda job: {"probs_shape": [job.n_val, 4]}, "the job needs"),
    (lambda job: {"probs_b64": "A" * 400_000}, "characters of base64"),
    (lambda job: {"probs_b64": "!" * b64_len(job.n_val * 3 * 4)}, "predictions:"),
    (lambda job: {"probs_b64": _b64(np.full((job.n_val, 3), np.nan, np.float32))}, "non-finite"),
    (lambda job: {"curve": [{"epoch": i, "train_loss": 1.0, "train_accuracy": 0.5} for i in range(5)]}, "5 points for 2 epochs"),
    (lambda job: {"epoch_probs_shape": [2, job.n_val, 4]}, "per-epoch predictions of shape"),
])
def test_predictions_not_what_the_job_asked_for_fail_the_seed(override, fragment):
    result = evaluate_job(EVAL, FakeRunner(lambda job: trained(job, **override(job))), timeout_s=60, memory="2g")
    assert (result.ok, result.reason) == (False, "bad_predictions") and fragment in result.error


def test_a_failed_seed_says_why_in_fields():
    failing = {"ok": False, "reason": "exception", "error": "RuntimeError during training: boom",
               "exception_type": "RuntimeError"}
    result = evaluate_job(EVAL, FakeRunner(lambda job: failing), timeout_s=60, memory="2g")
    assert (result.ok, result.reason, result.exception_type) == (False, "exception", "RuntimeError")
    assert result.error == "training failed: RuntimeError during training: boom"


def test_a_nan_curve_survives_the_trip_through_nats():
    curve = [{"epoch": 1, "train_loss": float("nan"), "train_accuracy": float("inf"), "grad_norm": float("nan")},
             {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.9}]
    epochs = np.full((2, 30, 3), np.nan, np.float16)
    runner = FakeRunner(lambda job: trained(job, curve=curve, epoch_probs_b64=_b64(epochs[:, : job.n_val])))
    result = evaluate_job(EVAL, runner, timeout_s=60, memory="2g")
    assert result.ok, result.error
    assert result.learning_curve[0] == EpochStats(epoch=1, train_loss=None, train_accuracy=None)
    back = decode(encode(result), SeedResult)
    assert back == result and b"NaN" not in encode(result)
    assert all(v is None or math.isfinite(v) for v in back.metrics.values())


def test_nan_in_any_seed_field_decodes_as_unknown_not_as_a_lost_seed():
    seed = SeedResult(job_id="j", run_id="r", iteration=1, seed=0, ok=True, metrics={"val_loss": float("nan")},
                      learning_curve=[EpochStats(epoch=1, train_loss=float("nan"), train_accuracy=float("nan"),
                                                 val_loss=float("inf"))])
    back = decode(encode(seed), SeedResult)
    assert back.learning_curve[0].train_loss is None and back.metrics["val_loss"] is None


# ---- containers that vanish under a stray scan ----
class GoneContainer:
    def __init__(self, cid, labels, gone=False):
        self.id, self._labels, self.gone, self.removed = cid, labels, gone, False

    @property
    def labels(self):
        if self.gone:
            raise NotFound(f"No such container: {self.id}")
        return self._labels

    def remove(self, force=False):
        if self.gone:
            raise NotFound(f"No such container: {self.id}")
        self.removed = True

    def __eq__(self, other):
        return self.id == other.id

    def __hash__(self):
        return hash(self.id)


class FakeContainers:
    """docker-py's behaviour: list() inspects every container, so one removed meanwhile raises
    NotFound unless ignore_removed=True skips it."""

    def __init__(self, containers, vanished):
        self.containers, self.vanished = containers, vanished

    def list(self, all=False, filters=None, ignore_removed=False):
        if self.vanished and not ignore_removed:
            raise NotFound("No such container: vanished")
        wanted = filters["label"]
        key, _, value = wanted.partition("=")
        return [c for c in self.containers if key in c._labels and (not value or c._labels[key] == value)]


def test_remove_strays_tolerates_containers_removed_by_another_process():
    mine = GoneContainer("a", {OWNER_LABEL: "me", EXPIRES_LABEL: "0"})
    expired = GoneContainer("b", {OWNER_LABEL: "other", EXPIRES_LABEL: "0"})
    gone_mine = GoneContainer("c", {OWNER_LABEL: "me"}, gone=True)
    gone_other = GoneContainer("d", {OWNER_LABEL: "other", EXPIRES_LABEL: "0"}, gone=True)
    fresh = GoneContainer("e", {OWNER_LABEL: "other", EXPIRES_LABEL: "9999999999"})
    runner = ContainerRunner.__new__(ContainerRunner)
    runner.owner = "me"
    runner.client = type("Client", (), {"containers": FakeContainers([mine, expired, gone_mine, gone_other, fresh],
                                                                     vanished=True)})()
    runner.remove_strays()
    assert (mine.removed, expired.removed, fresh.removed) == (True, True, False)


# ---- timings: the container's claims, bounded, beside the trusted side's own ----
def test_a_report_without_timings_reads_as_none_claimed():
    decoded = decode_report(report(trained(TRAIN)), TRAIN)
    assert (decoded.timings, decoded.result.timings) == ({}, {})


@pytest.mark.parametrize("timings, where", [
    ({f"k{i}": 0.1 for i in range(17)}, "length <= 16"),
    ({"code_s": -1.0}, ">= 0.0"),
    ({"code_s": "soon"}, "Expected `float`"),
    ({"x" * 65: 0.1}, "length <= 64"),
], ids=["too-many", "negative", "not-a-number", "long-name"])
def test_claimed_timings_are_bounded(timings, where):
    with pytest.raises(BadReport, match="result.timings") as caught:
        decode_report(report(trained(TRAIN, timings=timings)), TRAIN)
    assert where in str(caught.value)


def test_a_seed_keeps_the_trusted_timings_and_the_containers_claims_apart():
    runner = FakeRunner(lambda job: trained(job, timings={"code_s": 0.02, "encode_s": 0.01}))
    result = evaluate_job(EVAL, runner, timeout_s=60, memory="2g")
    assert result.ok, result.error
    assert {"data_s", "score_s", "harness.code_s", "harness.encode_s"} <= set(result.timings)
    assert (result.timings["harness.code_s"], result.timings["harness.encode_s"]) == (0.02, 0.01)
    assert "code_s" not in result.timings  # a claim never poses as a trusted figure
