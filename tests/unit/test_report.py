"""The run report built from registry records alone, and its terminal reading."""

import json

import pytest

from shared.evaluation.aggregate import summarise
from shared.messaging.messages import DatasetFacts, Goal, SeedResult, ValidationResult
from shared.registry.records import Decision, IterationRecord, RunRecord, TestEvaluation
from shared.registry.report import build_report, for_terminal, format_report

RUN = "run-report"
GOAL = Goal(run_id=RUN, goal="beat 90% on digits", dataset="digits", target_accuracy=0.9, num_seeds=2)
CNN = {"class_name": "SmallCNN", "layers": [{"type": "conv2d", "out_channels": 8}]}
MLP = {"class_name": "BrokenMLP", "layers": [{"type": "linear", "out_features": 3}]}


def seed(iteration: int, s: int, accuracy: float) -> SeedResult:
    return SeedResult(job_id=f"{RUN}.{iteration}.{s}", run_id=RUN, iteration=iteration, seed=s, ok=True,
                      metrics={"val_accuracy": accuracy, "val_loss": 0.3})


def evaluated_iteration() -> IterationRecord:
    return IterationRecord(
        run_id=RUN, iteration=1, state="decided", model_config=CNN, class_name="SmallCNN",
        validation=ValidationResult(ok=True, output_shape=[2, 10], param_count=12_345, trainable_params=12_345,
                                    flops=2 * 40_000),  # the probe pass: PROBE_BATCH samples
        seeds=[0, 1], evaluation=summarise({0: seed(1, 0, 0.92), 1: seed(1, 1, 0.94)}, [0, 1]),
        decision=Decision(action="goal_achieved", status="goal_achieved",
                          reasoning="validation accuracy mean 0.9300 >= target 0.9000"),
        started_at=1000.0, finished_at=1010.0)


def rejected_iteration() -> IterationRecord:
    return IterationRecord(
        run_id=RUN, iteration=2, state="rejected", model_config=MLP, class_name="BrokenMLP",
        validation=ValidationResult(ok=False, error="RuntimeError: mat1 and mat2 shapes cannot be multiplied",
                                    reason="exception", exception_type="RuntimeError"),
        decision=Decision(action="iterate", reasoning="this configuration was rejected or failed; trying another"),
        started_at=1010.0, finished_at=1012.0)


def run_record(**kw) -> RunRecord:
    settings = {"run_id": RUN, "goal": GOAL, "status": "goal_achieved", "current_iteration": 2,
                "best_iteration": 1, "best_score": 0.93, "created_at": 1000.0, "finished_at": 1012.5} | kw
    return RunRecord(**settings)


@pytest.fixture
def records():
    return run_record(), [evaluated_iteration(), rejected_iteration()]


@pytest.fixture
def report(records):
    return build_report(*records)


def test_report_top_level(report):
    assert report["run_id"] == RUN
    assert report["goal"] == "beat 90% on digits"
    assert report["dataset"] == "digits"
    assert report["status"] == "goal_achieved"
    assert report["target_accuracy"] == 0.9
    assert report["goal_statistic"] == "mean"
    assert report["settings"]["num_seeds"] == 2
    assert report["wall_time_s"] == 12.5
    assert [it["iteration"] for it in report["iterations"]] == [1, 2]


def test_report_is_plain_json(report):
    assert json.loads(json.dumps(report)) == report


def test_an_evaluated_iteration(report):
    it = report["iterations"][0]
    assert it["model_config"] == CNN
    assert it["class_name"] == "SmallCNN"
    v = it["validation"]
    assert (v["ok"], v["error"], v["output_shape"], v["param_count"]) == (True, None, [10], 12_345)  # per sample
    assert v["flops_per_sample"] == 40_000
    accuracy = it["evaluation"]["aggregated"]["val_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.93)
    assert accuracy["std"] == pytest.approx(0.0141421356)
    assert accuracy["values"] == [0.92, 0.94]
    assert len(accuracy["ci_95"]) == 2 and accuracy["ci_95"][0] < 0.93 < accuracy["ci_95"][1]
    assert it["decision"] == {"action": "goal_achieved", "status": "goal_achieved", "proposer": "builtin",
                              "reasoning": "validation accuracy mean 0.9300 >= target 0.9000", "next_config": None,
                              "llm_action": None, "llm_reasoning": None, "disagreement": None}


def test_a_rejected_iteration(report):
    it = report["iterations"][1]
    assert it["state"] == "rejected"
    assert it["validation"]["ok"] is False
    assert it["validation"]["error"].startswith("RuntimeError: mat1")
    assert it["validation"]["reason"] == "exception"
    assert it["validation"]["param_count"] is None
    assert it["evaluation"] is None
    assert it["decision"]["action"] == "iterate"


def test_best(report):
    best = report["best"]
    assert best["iteration"] == 1
    assert best["score"] == 0.93
    assert best["goal_statistic"] == "mean"
    assert best["val_accuracy"]["mean"] == pytest.approx(0.93)
    assert best["model_config"] == CNN
    assert best["param_count"] == 12_345


def test_no_best_and_an_unfinished_run():
    report = build_report(run_record(status="running", best_iteration=None, best_score=None, finished_at=None),
                          [rejected_iteration()])
    assert report["best"] is None
    assert report["wall_time_s"] is None
    assert report["status"] == "running"


def test_an_iteration_not_yet_validated():
    pending = IterationRecord(run_id=RUN, iteration=1, state="proposed", model_config=CNN)
    run = run_record(status="running", best_iteration=None, finished_at=None)
    report = build_report(run, [pending])
    assert report["iterations"][0]["validation"]["ok"] is None
    assert report["iterations"][0]["decision"] is None
    assert "#1 SmallCNN: proposed" in format_report(run, [pending])


def test_format_report(records, report):
    text = format_report(*records)
    assert f"run {RUN}" in text
    assert "status: goal_achieved" in text
    assert "target: val_accuracy >= 0.9000, on its mean over seeds on the validation split" in text
    assert ("#1 SmallCNN: 12,345 params, 40,000 FLOPs per sample (reported by the model's process), "
            "val_accuracy 0.9300 ± 0.0141") in text
    assert "over 2 seeds" in text
    low, high = report["iterations"][0]["evaluation"]["aggregated"]["val_accuracy"]["ci_95"]
    assert f"[{low:.4f}, {high:.4f}]" in text
    assert "-> goal_achieved: validation accuracy mean 0.9300 >= target 0.9000" in text
    assert "best: iteration 1 (val_accuracy mean 0.9300)" in text
    assert "its best seed: 1 (val_accuracy 0.9400), the one its confusion matrix shows" in text
    assert "wall time: 12.5 s" in text
    assert ("      trained: 10 epochs, batch 64, adam lr 0.001, weight decay 0; inputs standardised with the "
            "training split's mean and std") in text


def test_the_preprocessing_is_part_of_each_candidates_recipe():
    raw = IterationRecord(run_id=RUN, iteration=1, state="decided", class_name="SmallCNN",
                          model_config={**CNN, "optimizer": "sgd", "lr": 0.05, "standardize": False, "class_weights": True},
                          validation=ValidationResult(ok=True, param_count=10),
                          evaluation=summarise({0: seed(1, 0, 0.8), 1: seed(1, 1, 0.82)}, [0, 1]))
    run = run_record(best_iteration=1, best_score=0.81)
    report = build_report(run, [raw, rejected_iteration()])
    assert report["iterations"][0]["recipe"] == {"epochs": 10, "batch_size": 64, "lr": 0.05, "optimizer": "sgd",
                                                 "weight_decay": 0.0, "augment": False, "standardize": False,
                                                 "class_weights": True}
    assert report["best"]["recipe"]["standardize"] is False
    assert report["iterations"][1]["recipe"]["standardize"] is True  # left out: the default, as the planner reads it
    text = format_report(run, [raw, rejected_iteration()])
    assert ("trained: 10 epochs, batch 64, sgd lr 0.05, weight decay 0, class-weighted loss; raw inputs (not "
            "standardised)") in text
    assert text.count("trained:") == 1  # the rejected candidate never trained


def test_training_settings_that_do_not_decode_report_no_recipe():
    bad = IterationRecord(run_id=RUN, iteration=1, state="rejected", model_config={**CNN, "standardize": "yes"})
    assert build_report(run_record(best_iteration=None), [bad])["iterations"][0]["recipe"] is None


def test_format_report_shows_a_rejection_and_its_error(records):
    text = format_report(*records)
    line = next(line for line in text.splitlines() if "#2" in line)
    assert "BrokenMLP" in line
    assert "rejected: RuntimeError: mat1 and mat2 shapes cannot be multiplied" in line
    assert "-> iterate: this configuration was rejected or failed" in text


def test_format_report_shows_a_failed_run_error():
    run = run_record(status="failed", error="sandbox unavailable", best_iteration=None)
    assert "status: failed (sandbox unavailable)" in format_report(run, [rejected_iteration()])


def test_format_report_with_one_seed_has_no_interval():
    one = IterationRecord(run_id=RUN, iteration=1, state="evaluated", model_config=CNN, class_name="SmallCNN",
                          validation=ValidationResult(ok=True, param_count=10),
                          evaluation=summarise({0: seed(1, 0, 0.8)}, [0]))
    text = format_report(run_record(best_iteration=1, best_score=0.8), [one])
    line = next(line for line in text.splitlines() if line.startswith("  #1 SmallCNN"))
    assert line.endswith("val_accuracy 0.8000 from one seed (seed 0)")  # which seed, and no [low, high] interval


def test_the_report_says_which_runtime_each_container_ran_under():
    runsc = SeedResult(job_id=f"{RUN}.1.0", run_id=RUN, iteration=1, seed=0, ok=True, runtime="runsc",
                       metrics={"val_accuracy": 0.9})
    it = IterationRecord(run_id=RUN, iteration=1, state="decided", model_config=CNN, class_name="SmallCNN",
                         validation=ValidationResult(ok=True, output_shape=[2, 10], param_count=1, trainable_params=1,
                                                     runtime="runsc"),
                         seeds=[0, 1], evaluation=summarise({0: runsc, 1: seed(1, 1, 0.8)}, [0, 1]))
    report = build_report(run_record(current_iteration=1), [it])
    assert report["container_runtimes"] == {"runsc": 2}  # the validation and seed 0; seed 1 recorded none
    assert report["iterations"][0]["validation"]["runtime"] == "runsc"
    assert report["iterations"][0]["evaluation"]["seed_results"][0]["runtime"] == "runsc"
    assert "containers: 2 under runsc (gVisor" in format_report(run_record(current_iteration=1), [it])


def test_text_for_a_terminal_shows_its_control_characters_as_escapes():
    hostile = "goal\x1b]0;pwned\x07\x1b[2J\rforged line\x9b31m\ttab\nnext"
    assert for_terminal(hostile) == "goal\\x1b]0;pwned\\x07\\x1b[2J\\x0dforged line\\x9b31m\ttab\nnext"
    assert for_terminal("plain ünïcode — fine") == "plain ünïcode — fine"


# ---- the held-out test split ----
def run_with_test(**test) -> RunRecord:
    results = {s: SeedResult(job_id=f"{RUN}.it0001.test.seed{s}", run_id=RUN, iteration=1, seed=s, ok=True, split="test",
                             metrics={"test_accuracy": acc, "test_loss": 0.4}) for s, acc in ((0, 0.88), (1, 0.90))}
    fields = dict(iteration=1, seeds=[0, 1], status="goal_achieved", reason="met", started_at=1012.0,
                  evaluation=summarise(results, [0, 1], rank_by="test_accuracy"), finished_at=1020.0) | test
    facts = DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1437,
                         test_source="held_out", num_test=360)
    return run_record(test=TestEvaluation(**fields), dataset_facts=facts)


def test_the_report_leads_with_the_test_figures_of_the_candidate_chosen_on_validation():
    run, iterations = run_with_test(), [evaluated_iteration(), rejected_iteration()]
    section = build_report(run, iterations)["test"]
    assert section["iteration"] == 1 == run.best_iteration and section["selected_on"] == "validation"
    assert section["state"] == "tested" and (section["source"], section["num_test"]) == ("held_out", 360)
    accuracy = section["metrics"]["accuracy"]
    assert accuracy["test"]["mean"] == pytest.approx(0.89) and accuracy["validation"]["mean"] == pytest.approx(0.93)
    assert accuracy["test"]["ci_95"] and accuracy["validation"]["ci_95"]  # both with their intervals
    text = format_report(run, iterations)
    lines = text.splitlines()
    assert lines[4].startswith("test split (360 samples, held out of its training files; never seen by the search): "
                               "candidate 1, chosen on validation")
    row = next(line for line in lines if line.strip().startswith("accuracy"))
    assert row.index("0.8900") < row.index("0.9300")  # test first, validation beside it
    assert "validation (used for selection)" in text and text.index("test split") < text.index("SmallCNN")


@pytest.mark.parametrize("test, state, says", [
    ({"finished_at": None, "evaluation": None}, "testing", "testing: over its 2 seed(s); the run ends goal_achieved once"),
    ({"evaluation": None, "error": "no seed was scored in time"}, "failed",
     "the test could not be done: no seed was scored in time"),
    ({"finished_at": None, "evaluation": None, "status": "stopped"}, "unfinished",  # an interrupted researcher run
     "the test was not finished: the run was ended stopped before its results were in"),
])
def test_a_test_under_way_or_failed_says_so(test, state, says):
    run = run_with_test(**{k: v for k, v in test.items() if k != "status"})
    run.status = test.get("status", "running")
    assert says in format_report(run, [evaluated_iteration()])
    assert build_report(run, [evaluated_iteration()])["test"]["state"] == state


def test_an_untested_run_says_why(report):
    assert report["test"] == {"state": "untested", "selected_on": "validation",
                              "why": "its data set has no test split (a run started before test splits)"}


def test_a_text_models_layers_are_named_by_family():
    from shared.registry.leaderboard import layer_counts

    lstm = {"vocab_size": 100, "layers": [{"type": "Embedding"}, {"type": "LSTM"}, {"type": "SeqPool"}, {"type": "Linear"}]}
    cnn = {"vocab_size": 100, "layers": [{"type": "Embedding"}, {"type": "SeqConv1d"}, {"type": "ReLU"},
                                         {"type": "SeqConv1d"}, {"type": "SeqPool"}, {"type": "Linear"}]}
    assert layer_counts(lstm) == "1 LSTM, 1 linear" and layer_counts(cnn) == "2 conv, 1 linear"
    assert layer_counts({"layers": [{"type": "Conv2d"}, {"type": "Linear"}]}) == "1 conv, 1 linear"


def test_a_text_sets_tokens_in_one_line():
    from shared.messaging.messages import DatasetFacts, TextFacts

    facts = DatasetFacts(name="hf:reviews", kind="text", input_shape=[32], num_classes=2, num_samples=100,
                         input_dtype="int64", text=TextFacts(tokenizer="wordpiece trained on each seed's training split",
                                                             vocab_size=278, max_length=32, text_columns=["text"],
                                                             mean_length=17.7, p95_length=23.0, longest=26))
    assert facts.text_summary() == ("texts (text) -> 32 token ids from wordpiece trained on each seed's training split, "
                                    "vocabulary 278; lengths mean 17.7, p95 23, longest 26, 0.0% cut")
    assert DatasetFacts(name="iris", kind="tabular", input_shape=[4], num_classes=3, num_samples=150).text_summary() == ""
