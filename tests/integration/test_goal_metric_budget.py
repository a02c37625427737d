"""Three goals on one real stack at once: on a data set with a 1% positive class, one judged on
macro F1 ends on that metric and one reaches a PR-AUC target; one with a CPU budget far below a
candidate's cost ends budget_spent, its judged best still tested and reported. Real nats-server, real services as processes, real Docker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from researcher.stack import LocalStack
from shared.registry.report import load_report
from tests.integration.test_end_to_end import _wait_terminal
from tests.integration.test_resilience import FAST, goal, start_run

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def test_a_goal_on_macro_f1_and_a_goal_whose_cpu_budget_runs_out(docker_engine, tmp_path):
    tag = uuid.uuid4().hex[:6]
    f1 = goal(f"f1-{tag}", goal="rare positives", dataset="imbalanced", goal_metric="val_f1_macro", target=0.999,
              max_iterations=2, num_seeds=2, subset_size=None, max_epochs=3)
    # one full evaluation (a budget of one: no cheap rung) of one seed, which costs more than 0.05 CPU s
    # (counted from its container's ready line: loading the data, building and training the model):
    # it is judged (all its seeds are in) before the spent budget ends the run
    tiny = goal(f"cpu-{tag}", max_iterations=1, num_seeds=1, max_epochs=2, max_cpu_s=0.05, patience=5)
    pr = goal(f"pr-{tag}", goal="rare positives, ranked", dataset="imbalanced", goal_metric="val_pr_auc", target=0.5,
              max_iterations=3, num_seeds=2, subset_size=None, max_epochs=10)
    with LocalStack(log_dir=tmp_path / "logs", env=FAST) as stack:
        nc, js, registry, f1_events = await start_run(stack, f1)
        _, _, _, tiny_events = await start_run(stack, tiny)
        _, _, _, pr_events = await start_run(stack, pr)
        f1_run, tiny_run, pr_run = await asyncio.gather(_wait_terminal(registry, f1.run_id, 400),
                                                        _wait_terminal(registry, tiny.run_id, 400),
                                                        _wait_terminal(registry, pr.run_id, 400))
        f1_report, tiny_report = await load_report(registry, f1.run_id), await load_report(registry, tiny.run_id)
        await nc.close()

    assert f1_run.status in ("max_iterations", "no_progress"), (f1_run.status, f1_run.reason, f1_run.error)
    assert f1_report["goal_metric"] == "val_f1_macro" and f1_report["leaderboard"][0]["metric"] == "val_f1_macro"
    best = next(it for it in f1_report["iterations"] if it["iteration"] == f1_run.best_iteration)
    f1s = best["evaluation"]["aggregated"]["val_f1_macro"]
    assert f1_run.best_score == pytest.approx(f1s["mean"])  # the best is the best on F1, judged on its mean
    full = [it for it in f1_report["iterations"] if it["fidelity"] == "full budget" and it["evaluation"]]
    assert f1_run.best_score == max(it["evaluation"]["aggregated"]["val_f1_macro"]["mean"] for it in full)
    decided = [e.message for e in f1_events.events if e.kind == "decided"]
    assert decided and all("val_f1_macro" in m for m in decided), decided
    assert "val_f1_macro" in f1_report["best"] and "val_accuracy" in f1_report["best"]
    assert f1_report["test"]["iteration"] == f1_run.best_iteration and f1_report["test"]["state"] == "tested"
    assert f1_report["test"]["metrics"]["f1_macro"]["test"]["n"] == 2  # the goal's metric on the test split

    # PR-AUC on the 1% positives (chance: 0.01): the candidates reach 0.65 to 0.72 (seeds 0 and 1, 10 epochs)
    assert pr_run.status == "goal_achieved", (pr_run.status, pr_run.reason, pr_run.error)
    assert "val_pr_auc mean" in pr_run.reason and ">= target 0.5000" in pr_run.reason

    assert tiny_run.status == "budget_spent", (tiny_run.status, tiny_run.reason, tiny_run.error)
    assert tiny_run.reason.startswith("the CPU budget is spent: ") and "of 0.05 CPU seconds" in tiny_run.reason
    assert tiny_run.best_iteration == 1 and tiny_report["best"]["iteration"] == 1  # judged before the run ended
    assert [e.data["status"] for e in tiny_events.events if e.kind == "run_finished"] == ["budget_spent"]
    assert tiny_report["test"]["iteration"] == 1 and tiny_report["test"]["state"] == "tested"  # still tested
    costs = [row["cost"] for row in tiny_report["iterations"][0]["evaluation"]["seed_results"]]
    assert all(c["cpu_s"] > 0.05 and c["peak_memory_bytes"] > 0 for c in costs), costs
