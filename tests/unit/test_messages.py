"""The message schema and the edge decoder: round trips, and strict decoding that names the
type and the JSON path of what is wrong."""

import msgspec
import pytest

from shared.messaging.bus import decode, encode
from shared.errors import MessageError
from shared.messaging.messages import (DEFAULT_RECIPE, AssembleRequest, EpochStats, EvalJob, Goal, SeedResult,
                                       TrainingRecipe, ValidationResult)

GOAL = Goal(run_id="run-1", goal="beat 95% on digits", dataset="wine", target_accuracy=0.95,
            max_iterations=7, num_seeds=3, patience=2, goal_statistic="ci_lower", subset_size=500,
            max_epochs=12, submitted_at=1_700_000_000.5)
EVAL_JOB = EvalJob.with_recipe(TrainingRecipe(epochs=4, batch_size=32, lr=3e-3, optimizer="adamw", weight_decay=1e-4), job_id="run-1.it0002.seed1", run_id="run-1", iteration=2, seed=1, dataset="digits",
                   class_name="SmallCNN", source="import torch\nclass SmallCNN: ...\n",
                   subset_size=None)
SEED_RESULT = SeedResult(job_id="run-1.it0002.seed1", run_id="run-1", iteration=2, seed=1, ok=True,
                         metrics={"val_accuracy": 0.93, "val_loss": 0.21},
                         learning_curve=[EpochStats(epoch=1, train_loss=1.2, train_accuracy=0.6),
                                         EpochStats(epoch=2, train_loss=0.4, train_accuracy=0.9)],
                         train_time_s=3.5, duration_s=5.25, evaluator="evaluator-0", device="cuda")
VALIDATION = ValidationResult(ok=True, output_shape=[2, 10], param_count=12_345, trainable_params=12_000,
                              layers=[{"name": "conv1", "type": "Conv2d", "params": 160}],
                              output_tail="hello\n", duration_s=0.8)
REJECTED = ValidationResult(ok=False, error="RuntimeError: shape mismatch", reason="exception",
                            exception_type="RuntimeError", timed_out=False, oom_killed=False)


@pytest.mark.parametrize("message", [GOAL, EVAL_JOB, SEED_RESULT, VALIDATION, REJECTED],
                         ids=["goal", "eval_job", "seed_result", "validation", "rejected"])
def test_round_trip_returns_an_equal_struct(message):
    data = encode(message)
    assert isinstance(data, bytes)
    assert decode(data, type(message)) == message


def test_round_trip_keeps_nested_structs_typed():
    decoded = decode(encode(SEED_RESULT), SeedResult)
    assert all(isinstance(e, EpochStats) for e in decoded.learning_curve)
    assert decoded.learning_curve[1].train_accuracy == 0.9


def test_defaults_fill_absent_optional_fields():
    goal = decode(b'{"run_id": "r", "goal": "g"}', Goal)
    assert goal == Goal(run_id="r", goal="g")
    assert (goal.dataset, goal.target_accuracy, goal.goal_statistic, goal.subset_size) == ("digits", 0.95, "mean", None)


def test_wrong_type_names_the_type_and_the_path():
    with pytest.raises(MessageError) as caught:
        decode(b'{"run_id": "r", "goal": "g", "target_accuracy": "high"}', Goal, "researcher.goals")
    err = caught.value
    assert err.type_name == "Goal"
    assert err.subject == "researcher.goals"
    assert "Goal" in str(err)
    assert "$.target_accuracy" in str(err)
    assert "researcher.goals" in str(err)
    assert isinstance(err.__cause__, msgspec.ValidationError)


def test_a_value_outside_a_literal_is_rejected_with_its_path():
    with pytest.raises(MessageError, match=r"\$\.goal_statistic"):
        decode(b'{"run_id": "r", "goal": "g", "goal_statistic": "median"}', Goal)


def test_missing_required_field_names_the_type_and_the_field():
    with pytest.raises(MessageError) as caught:
        decode(b'{"goal": "g"}', Goal)
    assert "Goal" in str(caught.value)
    assert "run_id" in str(caught.value)


def test_missing_field_of_a_nested_struct_names_its_path():
    data = (b'{"job_id": "j", "run_id": "r", "iteration": 1, "seed": 0, "ok": true,'
            b' "learning_curve": [{"epoch": 1}]}')
    with pytest.raises(MessageError) as caught:
        decode(data, SeedResult)
    assert "SeedResult" in str(caught.value)
    assert "train_loss" in str(caught.value)
    assert "$.learning_curve[0]" in str(caught.value)


@pytest.mark.parametrize("data", [b"not json", b"", b'{"run_id": "r",', b"\xff\xfe"])
def test_bytes_that_are_not_json_raise_message_error(data):
    with pytest.raises(MessageError) as caught:
        decode(data, EvalJob, "researcher.eval")
    assert caught.value.type_name == "EvalJob"
    assert "EvalJob" in str(caught.value)
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)


def test_json_of_the_wrong_shape_raises_message_error():
    with pytest.raises(MessageError, match="ValidationResult"):
        decode(b"[1, 2, 3]", ValidationResult)


def test_no_subject_leaves_it_out_of_the_message():
    with pytest.raises(MessageError) as caught:
        decode(b"{}", Goal)
    assert caught.value.subject == ""
    assert " on " not in str(caught.value)


def test_unknown_extra_fields_are_accepted_for_schema_evolution():
    """A newer publisher may add fields with defaults; an older consumer ignores them."""
    data = b'{"run_id": "r", "goal": "g", "target_accuracy": 0.8, "priority": "high", "tags": [1, 2]}'
    goal = decode(data, Goal)
    assert goal == Goal(run_id="r", goal="g", target_accuracy=0.8)


def test_an_old_message_without_a_newer_optional_field_still_decodes():
    old = msgspec.json.encode({"job_id": "j", "run_id": "r", "iteration": 1, "seed": 0, "dataset": "digits",
                               "class_name": "M", "source": "x"})
    job = decode(old, EvalJob)
    assert job.subset_size is None and job.recipe == DEFAULT_RECIPE


def test_model_config_travels_as_a_plain_json_object():
    config = {"class_name": "Net", "layers": [{"type": "linear", "out": 10}], "dropout": 0.1}
    request = AssembleRequest(run_id="r", iteration=1, model_config=config)
    assert decode(encode(request), AssembleRequest).model_config == config


def test_a_job_of_the_flat_shape_keeps_its_recipe():
    """Jobs queued before the recipe type, and evaluators not yet upgraded, see the same fields."""
    old = msgspec.json.encode({"job_id": "j", "run_id": "r", "iteration": 1, "seed": 0, "dataset": "digits",
                               "class_name": "M", "source": "x", "epochs": 3, "batch_size": 256, "lr": 0.05,
                               "optimizer": "sgd", "weight_decay": 0.01, "augment": True})
    assert decode(old, EvalJob).recipe == TrainingRecipe(epochs=3, batch_size=256, lr=0.05, optimizer="sgd",
                                                         weight_decay=0.01, augment=True)
    assert msgspec.json.decode(encode(EVAL_JOB))["epochs"] == 4  # and a new job is flat on the wire


def test_standardisation_is_a_recipe_choice_that_travels_and_is_read_from_a_model_config():
    raw = TrainingRecipe(standardize=False)
    job = EvalJob.with_recipe(raw, job_id="j", run_id="r", iteration=1, seed=0, dataset="wine", class_name="M", source="x")
    assert msgspec.json.decode(encode(job))["standardize"] is False  # flat on the wire, like the rest of the recipe
    assert decode(encode(job), EvalJob).recipe == raw
    assert TrainingRecipe.from_model_config({"class_name": "Net", "standardize": False}) == raw
    assert TrainingRecipe.from_model_config({"class_name": "Net"}).standardize is True  # today's behaviour
