"""The whole loop: a real nats-server, the four services as separate processes, real containers."""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from researcher.load import load_best
from researcher.stack import SERVICES, LocalStack
from shared.messaging import subjects
from shared.messaging.bus import connect, encode, ensure_streams
from shared.messaging.messages import TERMINAL_STATUSES, Goal
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.store import Registry
from shared.registry.report import export_run, load_report
from shared.data.datasets import load_dataset

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def cli(*args: str, home, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "researcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RESEARCHER_HOME": str(home)})


def test_researcher_run_reaches_the_goal_on_digits_and_its_results_outlive_it(docker_engine, tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = cli("run", "small CNN for digits", "--dataset", "digits", "--target-accuracy", "0.90",
               "--max-iterations", "4", "--num-seeds", "2", "--json", "--export", str(tmp_path / "at-the-end"),
               home=home, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "goal_achieved"
    assert report["best"]["val_accuracy"]["mean"] >= 0.90
    for it in report["iterations"]:
        assert {"iteration", "model_config", "validation", "evaluation", "decision", "fidelity"} <= set(it)
        assert it["validation"]["ok"] is True and it["validation"]["param_count"] > 0
        assert it["validation"]["output_shape"] == [10]  # per sample
        if it["fidelity"] == "full budget":  # both seeds; a cheap rung trained one
            acc = it["evaluation"]["aggregated"]["val_accuracy"]
            assert len(acc["values"]) == 2 and acc["ci_95"][0] <= acc["mean"] <= acc["ci_95"][1]
    assert report["leaderboard"][0]["fidelity"] == "full budget"
    assert report["leaderboard"][0]["iteration"] == report["best"]["iteration"]
    # every seed's container measured from outside, totalled for the run (shared/registry/costs.py)
    assert report["cost"]["total"]["seeds"] > 0 and report["cost"]["total"]["cpu_s"] > 0, report["cost"]
    assert "candidate 1: the built-in search proposed" in proc.stderr  # progress shown while it ran
    assert "\r" not in proc.stderr  # no terminal: a line per event, no progress bar redrawn among them
    run_id = report["run_id"]
    assert (tmp_path / "at-the-end" / "experiments" / run_id / "model_code.py").is_file()  # --export
    assert list((home / "logs").glob("*/planner.log"))  # the logs are in the home, not in the working directory

    # no stack runs any more: the home's registry answers on its own
    listed = cli("runs", home=home)
    assert listed.returncode == 0 and run_id in listed.stdout and "goal_achieved" in listed.stdout, listed.stderr
    again = cli("report", run_id, "--json", home=home)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == report
    exported = cli("export", run_id, str(tmp_path / "later"), home=home)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "later" / "experiments" / run_id / "results.json").is_file()
    assert (tmp_path / "later" / "experiments" / run_id / "accuracy_vs_compute.png").is_file()
    # the same run in the trackers, read back with their own readers (tests/integration/test_trackers.py: the rest)
    tracked = cli("export", run_id, "--mlflow", str(tmp_path / "mlruns"), "--tensorboard", str(tmp_path / "tb"),
                  home=home, timeout=120)
    assert tracked.returncode == 0, tracked.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("pytorch-researcher").experiment_id])
    chosen = next(r for r in runs if r.data.tags.get("researcher.best") == "true")
    assert chosen.data.tags["researcher.sandbox_image"] == "pytorch-researcher/sandbox:latest"
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == chosen.info.run_id]
    best_it = next(it for it in report["iterations"] if it["iteration"] == report["best"]["iteration"])
    epochs = len(best_it["evaluation"]["learning_curves"]["0"])
    assert len(seeds) == 2 and all(len(client.get_metric_history(s.info.run_id, "val_loss")) == epochs for s in seeds)
    curve = EventAccumulator(str(tmp_path / "tb" / run_id / f"c{report['best']['iteration']:04d}" / "seed0"))
    assert len(curve.Reload().Scalars("val_accuracy")) == epochs
    # the exported best model loads and predicts, with no retraining: near the accuracy its run recorded
    best = load_best(tmp_path / "later" / "experiments" / run_id / "best")
    digits = load_dataset("digits")
    predicted = best.predict(digits.x)
    accuracy = sum(p == digits.class_names[y] for p, y in zip(predicted, digits.y)) / len(digits.y)
    assert accuracy >= report["best"]["val_accuracy"]["mean"] - 0.1, accuracy  # the whole set, its training part included
    missing = cli("report", "no-such-run", home=home)
    assert missing.returncode == 1 and "no run 'no-such-run'" in missing.stderr


def test_unknown_dataset_fails_at_once_in_the_cli():
    proc = subprocess.run([sys.executable, "-m", "researcher.cli", "run", "g", "--dataset", "cifar11"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown data set 'cifar11'; did you mean cifar10? known: breast_cancer, cifar10" in proc.stderr


async def _wait_terminal(registry, run_id, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await registry.get_run(run_id)
        if run and run.status in TERMINAL_STATUSES:
            return run
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


async def test_bad_input_is_rejected_and_a_broken_config_is_an_iteration(docker_engine, tmp_path):
    """Malformed goals are rejected, an unknown data set fails its run, and a config that cannot be
    built ends as a rejected iteration while the run (resumed from the registry) goes on."""
    with LocalStack(log_dir=tmp_path / "logs", services=()) as stack:
        nc = await connect(stack.url, "test", role="admin")
        js = nc.jetstream()
        await ensure_streams(js)
        registry = await Registry.open(js)
        # a run whose first iteration was proposed (and persisted) before the planner started
        broken_id = f"broken-{uuid.uuid4().hex[:8]}"
        goal = Goal(run_id=broken_id, goal="digits", dataset="digits", target_accuracy=0.9, max_iterations=2, num_seeds=1)
        await registry.create_run(RunRecord(run_id=broken_id, goal=goal, current_iteration=1,
                                            dataset_facts=load_dataset("digits").facts()))
        await registry.put_iteration(IterationRecord(run_id=broken_id, iteration=1, seeds=[0], model_config={
            "class_name": "Broken", "input_shape": [1, 8, 8], "num_classes": 10,
            "layers": [{"type": "Conv2dd", "out_channels": 8, "kernel_size": 3}, {"type": "Flatten"},
                       {"type": "Linear", "out_features": 10}]}))
        for name in SERVICES:
            stack.start_service(name)
        stack.wait_ready(SERVICES)

        await js.publish(subjects.GOALS_SUBJECT, b"{not json")
        await js.publish(subjects.GOALS_SUBJECT, b'{"run_id": "x", "goal": 3}')
        await js.publish(subjects.GOALS_SUBJECT, encode(Goal(run_id="bad id!", goal="g")))
        unknown_id = f"unknown-{uuid.uuid4().hex[:8]}"
        await js.publish(subjects.GOALS_SUBJECT, encode(Goal(run_id=unknown_id, goal="g", dataset="cifar11")))

        failed = await _wait_terminal(registry, unknown_id, 60)
        assert failed.status == "failed" and "unknown data set 'cifar11'; did you mean cifar10? known:" in failed.error

        run = await _wait_terminal(registry, broken_id)
        report = await load_report(registry, broken_id)
        first, second = report["iterations"][:2]
        assert first["validation"]["ok"] is False
        assert "unknown layer type 'Conv2dd'; did you mean 'Conv2d'" in first["validation"]["error"]
        assert first["decision"]["action"] == "iterate"
        assert second["validation"]["ok"] is True
        assert run.status == "goal_achieved" and report["best"]["iteration"] >= 2

        out = await export_run(registry, broken_id, tmp_path / "export")
        experiment = out / "experiments" / broken_id
        for name in ("model_config.yaml", "model_code.py", "summary.json", "results.json"):
            assert (experiment / name).is_file(), name
        for name in ("confusion_matrix.png", "learning_curves.png"):  # plots stored as artifacts, exported beside
            assert (experiment / name).read_bytes().startswith(b"\x89PNG"), name
        evaluation = json.loads((experiment / "results.json").read_text())["evaluation"]
        assert {"val_f1_weighted", "val_roc_auc", "val_pr_auc", "val_balanced_accuracy"} <= set(evaluation["aggregated"])
        assert len(evaluation["final"]["per_class"]) == 10 and len(evaluation["final"]["confusion_matrix"]) == 10
        assert evaluation["final"]["auc_kind"] == "ovr"
        assert {"val_loss", "val_accuracy"} <= set(evaluation["learning_curves"]["0"][0])
        assert evaluation["seed_results"][0]["dynamics"]["convergence"]["status"] in ("converged", "still_improving", "unstable")
        assert json.loads((out / "registry.json").read_text())["runs"][0]["status"] == "goal_achieved"
        assert list((out / "src" / "models").glob("*.py")) and list((out / "configs" / "models").glob("*.yaml"))
        await nc.close()
        planner_log = (stack.log_dir / "planner.log").read_text()
        assert "malformed Goal" in planner_log and "run_id must be" in planner_log
