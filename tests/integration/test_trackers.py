"""`researcher export --mlflow/--tensorboard`, read back with the trackers' own readers: MLflow's
MlflowClient and TensorBoard's EventAccumulator. The records are the stored run of
test_old_records.py (written by the code of a1a1ba2) in a real JetStream registry, with its code
and a plot stored as artifacts and its final test aggregated by the evaluation code."""

import subprocess
import sys

import msgspec
import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from researcher.trackers import mlflow_export, tensorboard_export
from researcher.trackers.view import load_view, run_view
from shared.errors import ExportTargetError
from shared.evaluation.aggregate import summarise
from shared.evaluation.plots import confusion_matrix_png
from shared.messaging.messages import SeedResult
from shared.registry.records import IterationRecord, RunRecord, TestEvaluation, upgrade_run
from tests.integration.test_old_records import OLD, registry_with_old_records

CODE = b"import torch.nn as nn\n\nclass SmallCNN(nn.Module):\n    pass\n"
FIRST = OLD["iterations"]["old-run.it0001"]["evaluation"]


async def old_run(nc):
    """The old run with its code, a plot and a final test on the held-out split."""
    registry = await registry_with_old_records(nc)
    await registry.put_artifact("old-run/it0001/model_code.py", CODE)
    await registry.put_artifact("old-run/it0001/confusion_matrix.png",
                                confusion_matrix_png([[3, 1], [0, 4]], ["a", "b"], title="c1"))
    results = {seed: SeedResult(job_id=f"t{seed}", run_id="old-run", iteration=1, seed=seed, ok=True, split="test",
                                metrics={"test_accuracy": acc}) for seed, acc in ((0, 0.9), (1, 0.8))}
    tested = TestEvaluation(iteration=1, seeds=[0, 1], status="max_iterations", reason="budget spent",
                            started_at=1012.0, evaluation=summarise(results, [0, 1], rank_by="test_accuracy"))
    await registry.update_run("old-run", lambda run: msgspec.structs.replace(run, test=tested))
    return await load_view(registry, "old-run")


async def test_a_run_in_mlflow_reads_back_with_mlflows_client(nc, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store asks for consent
    view = await old_run(nc)
    store = tmp_path / "mlruns"
    parent_id, experiment = mlflow_export.export(view, str(store))
    client = MlflowClient(tracking_uri=store.as_uri())
    runs = {run.info.run_name: run for run in client.search_runs([experiment])}
    assert sorted(runs) == ["c0001 SmallCNN", "c0001 SmallCNN seed 0", "c0001 SmallCNN seed 1", "c0002 Broken",
                            "old-run digits"]
    parent = runs["old-run digits"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert parent.data.tags["researcher.goal"] == "digits above 90%" and parent.data.tags["researcher.best_iteration"] == "1"
    assert parent.data.metrics["test_accuracy/mean"] == pytest.approx(0.85)
    assert parent.data.metrics["test_accuracy/ci_low"] < 0.85 < parent.data.metrics["test_accuracy/ci_high"]
    assert parent.data.params["num_seeds"] == "2" and parent.data.params["dataset"] == "digits"

    candidate = runs["c0001 SmallCNN"]
    assert candidate.data.tags["mlflow.parentRunId"] == parent_id and candidate.info.status == "FINISHED"
    assert candidate.data.params["layers.0.type"] == "Flatten" and candidate.data.params["lr"] == "0.001"
    assert candidate.data.params["layers.1.out_features"] == "10"
    assert candidate.data.params["weight_decay"] == "0.0"  # a recipe default its config left out, filled in
    summary = FIRST["aggregated"]["val_loss"]
    assert candidate.data.metrics["val_loss/mean"] == pytest.approx(summary["mean"])
    assert candidate.data.metrics["val_loss/ci_high"] == pytest.approx(summary["ci_95"][1])
    tags = candidate.data.tags
    assert tags["researcher.fidelity"] == "full budget" and tags["researcher.proposer"] == "builtin"
    assert len(tags["researcher.code_sha256"]) == 64 and tags["researcher.device"] == "cpu"
    assert {a.path for a in client.list_artifacts(candidate.info.run_id)} == {"config.yaml", "model_code.py", "plots"}
    assert [a.path for a in client.list_artifacts(candidate.info.run_id, "plots")] == ["plots/confusion_matrix.png"]

    seed = runs["c0001 SmallCNN seed 1"]
    assert seed.data.tags["mlflow.parentRunId"] == candidate.info.run_id
    history = client.get_metric_history(seed.info.run_id, "val_accuracy")
    curve = FIRST["learning_curves"]["1"]
    assert [(m.step, m.value) for m in history] == [(p["epoch"], pytest.approx(p["val_accuracy"])) for p in curve]
    assert seed.data.metrics["final/val_accuracy"] == FIRST["seed_results"][1]["metrics"]["val_accuracy"]

    broken = runs["c0002 Broken"]
    assert broken.info.status == "FAILED" and broken.data.tags["researcher.reason"] == "exception: RuntimeError: boom"

    # a second export replaces the first: one copy of the run, the old runs deleted
    again, _ = mlflow_export.export(view, str(store))
    now = client.search_runs([experiment])
    assert len(now) == 5 and again != parent_id and parent_id not in {r.info.run_id for r in now}
    assert client.get_run(again).data.tags["researcher.replaced_runs"] == "5"


async def test_a_run_in_tensorboard_reads_back_with_its_event_reader(nc, nats_url, tmp_path):
    view = await old_run(nc)
    # the command as a researcher runs it, on the registry of a running stack
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "export", "old-run", "--tensorboard",
                           str(tmp_path / "tb"), "--nats-url", nats_url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "tb" / "old-run"
    assert f"exported run old-run to TensorBoard event files in {folder} (open with: tensorboard --logdir" in done.stdout
    seed = EventAccumulator(str(folder / "c0001" / "seed0"))
    seed.Reload()
    curve = FIRST["learning_curves"]["0"]
    assert [(e.step, e.value) for e in seed.Scalars("train_loss")] == [
        (p["epoch"], pytest.approx(p["train_loss"])) for p in curve]
    assert seed.Scalars("final/val_accuracy")[0].step == len(curve)
    candidate = EventAccumulator(str(folder / "c0001"))
    candidate.Reload()
    assert candidate.Scalars("val_accuracy/mean")[0].value == pytest.approx(FIRST["aggregated"]["val_accuracy"]["mean"])
    assert {"config/text_summary", "code/text_summary"} <= set(candidate.Tags()["tensors"])
    code = candidate.Tensors("code/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "class SmallCNN(nn.Module):" in code
    run = EventAccumulator(str(folder))
    run.Reload()
    assert run.Scalars("test_accuracy/mean")[0].value == pytest.approx(0.85)
    assert [(e.step, e.value) for e in run.Scalars("candidates/val_accuracy_mean")] == [(1, 1.0)]
    assert not (folder / "c0002" / "seed0").exists()  # rejected: never trained

    # a second export replaces its own folder; a folder it did not write is refused
    (folder / "c0001" / "stale").write_text("from an earlier export")
    tensorboard_export.export(view, tmp_path / "tb")
    assert not (folder / "c0001" / "stale").exists()
    (tmp_path / "other" / "old-run").mkdir(parents=True)
    with pytest.raises(ExportTargetError, match="was not written by `researcher export`"):
        tensorboard_export.export(view, tmp_path / "other")


def test_mlflow_takes_a_config_beyond_its_limits(tmp_path, monkeypatch):
    """A proposal's config is free-form: a value over MLflow's 6,000 characters is cut with a note,
    keys with characters MLflow refuses are cleaned, and the run is still written."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = msgspec.convert(upgrade_run(OLD["runs"]["old-run"]), RunRecord)
    it = msgspec.convert(OLD["iterations"]["old-run.it0001"], IterationRecord)
    config = {**it.model_config, "notes": "x" * 7000, "odd key <1>": 1, "odd key <2>": 2, "k" * 300: "long"}
    view = run_view(run, [msgspec.structs.replace(it, model_config=config)], {})
    _, experiment = mlflow_export.export(view, str(tmp_path / "mlruns"))
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    params = next(r for r in client.search_runs([experiment]) if r.info.run_name == "c0001 SmallCNN").data.params
    assert len(params["notes"]) <= 6000 and params["notes"].endswith("(cut at 6000 characters; whole in config.yaml "
                                                                      "or report.json)")
    assert params["odd key _1_"] == "1" and params["odd key _2_"] == "2"
    assert params[mlflow_export.key("k" * 300)] == "long"
