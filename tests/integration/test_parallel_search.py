"""Many candidates in flight: a run with parallel 4 on two evaluator replicas trains seed jobs of
different candidates at the same time, promotes the best of its cheap rungs, survives its planner
being SIGKILLed with candidates in flight (each continued, none proposed twice, none lost), and
reaches its report. Real nats-server, real services as processes, real Docker."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
import uuid

import pytest

from researcher.stack import LocalStack
from shared.registry.report import load_report
from tests.integration.test_end_to_end import _wait_terminal
from tests.integration.test_resilience import FAST, goal, start_run

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def overlapping(rows: list[dict]) -> list[tuple[int, int]]:
    """Pairs of candidates whose seed jobs ran at the same time, by the evaluators' clocks."""
    spans = [(r["iteration"], r["started_at"], r["started_at"] + r["duration_s"]) for r in rows]
    return sorted({(a[0], b[0]) for a in spans for b in spans if a[0] < b[0] and a[1] < b[2] and b[1] < a[2]})


async def test_four_candidates_in_flight_on_two_evaluators_survive_a_planner_sigkill(docker_engine, tmp_path):
    env = {**FAST, "RESEARCHER_PLANNER__LOWER_RUNGS": "1"}  # one cheap rung: a short run still promotes
    with LocalStack(log_dir=tmp_path / "logs", services=("planner", "assembler", "sandbox"), env=env) as stack:
        for name in ("evaluator-a", "evaluator-b"):
            stack.start_service("evaluator", replica=name)
        stack.wait_ready(["evaluator-a", "evaluator-b"])
        # 3 seeds, up to 4 epochs: a rung-0 job is 2 epochs on 1 seed, a full one 4 epochs on 3 seeds
        g = goal(f"par-{uuid.uuid4().hex[:6]}", parallel=4, num_seeds=3, max_epochs=4, epoch_budget=40, patience=10,
                 target_accuracy=0.999)
        nc, js, registry, follower = await start_run(stack, g)
        deadline = time.monotonic() + 240
        while len({e.iteration for e in follower.events if e.kind == "evaluating"}) < 3:
            assert time.monotonic() < deadline, [e.message for e in follower.events]
            await asyncio.sleep(0.2)
        in_flight = {e.iteration for e in follower.events if e.kind == "proposed"}
        stack.procs["planner"].send_signal(signal.SIGKILL)
        stack.procs["planner"].wait()
        stack.start_service("planner")
        run = await _wait_terminal(registry, g.run_id, timeout=600)
        report = await load_report(registry, g.run_id)
        await nc.close()
    assert run.status in ("max_iterations", "no_progress"), (run.status, run.reason, run.error)
    proposed = collections.Counter(e.iteration for e in follower.events if e.kind == "proposed")
    assert set(proposed.values()) == {1}, proposed  # none proposed twice
    assert len(in_flight) >= 3
    states = {it["iteration"]: it["state"] for it in report["iterations"]}
    assert sorted(states) == list(range(1, len(states) + 1)) and set(in_flight) <= set(states)
    assert set(states.values()) <= {"parked", "decided"}, states  # none lost: each measured or closed
    # seed jobs of different candidates overlapped in time, on both replicas
    rows = [{"iteration": it["iteration"], **row} for it in report["iterations"] if it["evaluation"]
            for row in it["evaluation"]["seed_results"]]
    rows += [{"iteration": it["iteration"], **row} for it in report["iterations"] for p in it["passed"]
             for row in p["evaluation"]["seed_results"]]
    assert all(r["started_at"] > 0 for r in rows)
    assert overlapping(rows), rows
    assert len({r["evaluator"] for r in rows}) == 2  # both replicas trained
    # the cheap rung came first, the best earned the full budget, and the report says so
    assert any(it["passed"] and it["rung"] is None for it in report["iterations"]), states
    board = report["leaderboard"]
    assert board[0]["fidelity"] == "full budget" and board[0]["val_accuracy"]["n"] == 3
    assert report["compute"]["spent_seed_epochs"] <= 40 == report["compute"]["budget_seed_epochs"]
    assert {e.kind for e in follower.events} >= {"promoted", "parked", "progress"}
