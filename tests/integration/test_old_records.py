"""Stored records stay readable: a run written before the typed records (the JSON below was
written by the code of a1a1ba2, tests/data/registry_before_typed_records.json) still reports and
exports with today's code, through a real JetStream KV."""

import json
from pathlib import Path

import msgspec

from shared.messaging import subjects
from shared.messaging.bus import key_value
from shared.registry.records import Evaluation, ModelSummary
from shared.registry.report import build_report, export_run, format_report, load_records
from shared.registry.store import Registry

OLD = json.loads((Path(__file__).parents[1] / "data" / "registry_before_typed_records.json").read_text())


async def registry_with_old_records(nc) -> Registry:
    js = nc.jetstream()
    runs, iterations = await key_value(js, subjects.RUNS_BUCKET), await key_value(js, subjects.ITERATIONS_BUCKET)
    for key, record in OLD["runs"].items():
        await runs.put(key, json.dumps(record).encode())
    for key, record in OLD["iterations"].items():
        await iterations.put(key, json.dumps(record).encode())
    return await Registry.open(js)


async def test_a_run_written_before_the_typed_records_still_reports(nc, tmp_path):
    registry = await registry_with_old_records(nc)
    run, iterations = await load_records(registry, "old-run")
    first = iterations[0]
    assert isinstance(first.evaluation, Evaluation) and isinstance(first.summary, ModelSummary)
    old = OLD["iterations"]["old-run.it0001"]["evaluation"]
    assert first.evaluation.summary().mean == old["aggregated"]["val_accuracy"]["mean"]
    assert first.evaluation.final.per_class[0].class_name == old["final"]["per_class"][0]["class"]
    assert first.evaluation.seed_results[0].dynamics.convergence.status == old["seed_results"][0]["dynamics"]["convergence"]["status"]
    assert first.code_attempts[0].reason == "output_shape" and first.summary.narrative.architecture == "an MLP"
    assert run.dataset_facts.num_classes == 10
    text = format_report(run, iterations)
    assert "#1 SmallCNN: 650 params, 1,280 FLOPs per sample (reported by the model's process), val_accuracy" in text
    assert "rejected: RuntimeError: boom" in text
    assert "compute measured: not measured (" in text  # its seeds ran before their containers' cost was read
    report = build_report(run, iterations)
    assert report["iterations"][0]["evaluation"]["aggregated"]["val_accuracy"] == msgspec.to_builtins(first.evaluation.summary())
    await export_run(registry, "old-run", tmp_path)
    results = json.loads((tmp_path / "experiments/old-run/results.json").read_text())
    assert results["evaluation"]["best_seed"] == old["best_seed"]
    assert (tmp_path / "experiments/old-run/accuracy_vs_compute.png").read_bytes().startswith(b"\x89PNG")
    # best/ of a run from before weights were kept: each seed says why it has none
    best = json.loads((tmp_path / "experiments/old-run/best/preprocessing.json").read_text())
    assert best["best_seed"] is None and best["class_name"] == "SmallCNN"
    assert all(seed["weights"] is None and seed["weights_error"] for seed in best["seeds"].values())


async def test_a_failed_run_of_before_with_empty_facts_still_reports(nc):
    registry = await registry_with_old_records(nc)
    run, iterations = await load_records(registry, "old-failed")
    assert run.status == "failed" and run.dataset_facts is None and iterations == []
    assert "status: failed (data set 'cifar10' not found)" in format_report(run, iterations)
