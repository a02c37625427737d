"""A run's measured compute: seeds' figures summed per candidate (every rung) and per run, in the
report beside the LLM tokens, and plotted against each candidate's score."""

import json

import msgspec
import pytest

from shared.evaluation.aggregate import summarise
from shared.messaging.messages import SeedCost, SeedResult
from shared.registry.costs import RunCost, compute_points, run_cost
from shared.evaluation.plots import accuracy_vs_compute_png
from shared.registry.records import IterationRecord, RungResult, SeedRow
from shared.registry.report import build_report, format_report
from tests.unit.test_report import CNN, RUN, rejected_iteration, run_record

MB = 2**20


def seed(iteration: int, s: int, accuracy: float, cpu_s: float | None, peak_mb: int = 300,
         gpu_s: float | None = None) -> SeedResult:
    cost = None if cpu_s is None else SeedCost(wall_s=2 * cpu_s, cpu_s=cpu_s, peak_memory_bytes=peak_mb * MB,
                                               gpu_s=gpu_s, measured_by="cgroup v1 (docker stats)")
    return SeedResult(job_id=f"{RUN}.{iteration}.{s}", run_id=RUN, iteration=iteration, seed=s, ok=True,
                      metrics={"val_accuracy": accuracy}, cost=cost)


def promoted_iteration() -> IterationRecord:
    """Two seeds at the full budget (one measured by an older evaluator: no figures), after a cheap
    rung of one seed."""
    cheap = summarise({0: seed(1, 0, 0.80, cpu_s=1.5, peak_mb=280)}, [0])
    return IterationRecord(
        run_id=RUN, iteration=1, state="decided", model_config=CNN, class_name="SmallCNN", seeds=[0, 1],
        evaluation=summarise({0: seed(1, 0, 0.92, cpu_s=4.25, peak_mb=310), 1: seed(1, 1, 0.94, cpu_s=None)}, [0, 1]),
        passed=[RungResult(index=0, epochs=1, seeds=[0], evaluation=cheap)])


def test_a_candidates_cost_sums_every_rung_and_counts_the_unmeasured_seeds():
    total = run_cost([promoted_iteration(), rejected_iteration()])
    assert total == RunCost(cpu_s=5.75, gpu_s=None, wall_s=11.5, peak_memory_bytes=310 * MB, seeds=2, unmeasured=1)
    assert total.compute_s == 5.75


def test_gpu_seconds_are_the_compute_axis_where_there_are_any():
    gpu = IterationRecord(run_id=RUN, iteration=3, state="decided", model_config=CNN, seeds=[0],
                          evaluation=summarise({0: seed(3, 0, 0.97, cpu_s=2.0, gpu_s=0.5)}, [0]))
    assert run_cost([promoted_iteration(), gpu]).gpu_s == 0.5
    points, axis = compute_points([promoted_iteration(), gpu], "val_accuracy")
    assert axis == "GPU seconds" and points == [(1, 0.0, pytest.approx(0.93)), (3, 0.5, 0.97)]


def test_the_report_shows_each_candidates_and_the_runs_cost():
    run, iterations = run_record(), [promoted_iteration(), rejected_iteration()]
    text = format_report(run, iterations)
    assert "      cost: 5.8 CPU s, peak 310 MB, 11.5 s in containers over 2 seeds (1 not measured)" in text
    assert "        seed 0 4.2 CPU s, peak 310 MB" in text  # its current rung's seeds; seed 1 was not measured
    assert "compute measured: 5.8 CPU s, peak 310 MB, 11.5 s in containers over 2 seeds (1 not measured)" in text
    assert text.index("compute measured:") < text.index("wall time:")
    report = json.loads(json.dumps(build_report(run, iterations)))
    assert report["cost"]["total"]["cpu_s"] == 5.75 and report["cost"]["total"]["unmeasured"] == 1
    assert report["cost"]["per_candidate"]["2"]["seeds"] == 0
    rows = report["iterations"][0]["evaluation"]["seed_results"]
    assert rows[0]["cost"]["peak_memory_bytes"] == 310 * MB and rows[1]["cost"] is None


def test_a_seed_row_written_before_costs_decodes_without_one():
    assert msgspec.json.decode(b'{"seed": 0, "ok": true}', type=SeedRow).cost is None


def test_the_accuracy_against_compute_plot_is_a_png():
    points, axis = compute_points([promoted_iteration()], "val_accuracy")
    png = accuracy_vs_compute_png(points, metric="val_accuracy", axis=axis)
    assert png.startswith(b"\x89PNG") and accuracy_vs_compute_png([], metric="val_f1_macro", axis=axis).startswith(b"\x89PNG")
