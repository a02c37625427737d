"""Research throughput: one run with K candidates in flight on 1, 2 and 4 evaluator replicas, with
jobs whose duration does not depend on the CPU, and how busy the replicas were while the run had
work for them (`make bench-scale`'s second part).

The whole stack runs (nats-server, planner, assembler, sandbox, R evaluators as processes, real
containers). The tools LLM is a local OpenAI-compatible server (tests/llm_server.py, the tests' own)
whose code for every candidate is a small MLP that sleeps SLEEP_S in each forward pass: a training
epoch takes about the same wall time on any CPU, so the replicas' concurrency is what is measured,
not this machine's arithmetic. Each job's span is the evaluator's own clock (its result's
`started_at` and `duration_s`); when its job was queued is the planner's `evaluating` event.

Figures per replica count R:
- busy: the replicas' time spent on jobs over the time they could have spent while jobs were
  queued or running: the integral of min(running, R) over that of min(queued + running, R);
- mean jobs in flight over the run's training window (first job start to last job end);
- wall time of the run, from its goal to its end.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from researcher.stack import LocalStack
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import TERMINAL_STATUSES, Event, Goal
from shared.registry.report import load_report
from shared.registry.store import Registry
from tests.llm_server import Reply, ScriptedLLM

SLEEP_S = 0.25  # per forward pass: ~6 passes an epoch on wine's training split
MODEL = "farm-bench-coder"
DATASET, FEATURES, CLASSES = "wine", 13, 3
CODE = f'''import time

import torch
from torch import nn


class SearchMLP(nn.Module):
    """A stand-in whose every forward pass takes {SLEEP_S} s of wall time, whatever the CPU."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear({FEATURES}, 32), nn.ReLU(), nn.Linear(32, {CLASSES}))

    def forward(self, x):
        time.sleep({SLEEP_S})
        return self.net(x.flatten(1))
'''


def _answer(body: dict) -> Reply:
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    if "class name:" in text:  # a code request (shared/llm/prompts/code_request.md)
        return Reply(content=json.dumps({"python": CODE}))
    return Reply(content=json.dumps({"architecture": "a sleeping MLP", "strengths": ["steady"], "weaknesses": ["slow"]}))


def _integral(intervals: list[tuple[float, float]], cap: int, start: float, end: float) -> float:
    """The integral over [start, end] of min(number of intervals covering t, cap)."""
    points = sorted({start, end, *(p for a, b in intervals for p in (a, b) if start <= p <= end)})
    total = 0.0
    for a, b in zip(points, points[1:]):
        mid = (a + b) / 2
        total += min(cap, sum(1 for s, e in intervals if s <= mid < e)) * (b - a)
    return total


def spans(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every seed job of the run: its candidate, rung, start and end (the evaluator's clock)."""
    rows = []
    for it in report["iterations"]:
        evaluations = [(p["index"], p["evaluation"]) for p in it["passed"]] + [(it["rung"], it["evaluation"])]
        for rung, evaluation in evaluations:
            for row in (evaluation or {}).get("seed_results", []):
                rows.append({"iteration": it["iteration"], "rung": rung, "start": row["started_at"],
                             "end": row["started_at"] + row["duration_s"]})
    return rows


def busy_figures(jobs: list[dict[str, Any]], queued: dict[tuple[int, Any], float], replicas: int) -> dict[str, float]:
    running = [(j["start"], j["end"]) for j in jobs]
    waiting = [(queued.get((j["iteration"], j["rung"]), j["start"]), j["end"]) for j in jobs]
    start, end = min(s for s, _ in waiting), max(e for _, e in running)
    could = _integral(waiting, replicas, start, end)
    did = _integral(running, replicas, start, end)
    window = max(e for _, e in running) - min(s for s, _ in running)
    return {"busy": did / could if could else 0.0,
            "mean_in_flight": _integral(running, 10**6, min(s for s, _ in running), max(e for _, e in running)) / window,
            "train_window_s": window}


async def farm_phase(replicas: int, parallel: int, budget: int) -> dict[str, Any]:
    with ScriptedLLM() as llm:
        llm.fallback(MODEL, _answer)
        env = {"RESEARCHER_LLM__TOOLS__BASE_URL": llm.url, "RESEARCHER_LLM__TOOLS__MODEL": MODEL}
        with LocalStack(services=("planner", "assembler", "sandbox"), env=env) as stack:
            names = [f"evaluator-f{replicas}-{i}" for i in range(replicas)]
            for name in names:
                stack.start_service("evaluator", replica=name)
            stack.wait_ready(["planner", "assembler", "sandbox", *names])
            nc = await connect(stack.url, "bench", role="admin")
            js = nc.jetstream()
            await ensure_streams(js)
            registry = await Registry.open(js)
            run_id = f"farm{replicas}-{uuid.uuid4().hex[:6]}"
            queued: dict[tuple[int, Any], float] = {}

            async def on_event(msg) -> None:
                event = decode(msg.data, Event, msg.subject)
                if event.kind == "evaluating" and event.iteration is not None:
                    queued[(event.iteration, event.data.get("rung"))] = event.ts

            await nc.subscribe(subjects.events_subject(run_id), cb=on_event)
            goal = Goal(run_id=run_id, goal="farm throughput", dataset=DATASET, target_accuracy=1.0, num_seeds=3,
                        max_epochs=6, parallel=parallel, epoch_budget=budget, patience=1000, submitted_at=time.time())
            started = time.perf_counter()
            await js.publish(subjects.GOALS_SUBJECT, encode(goal), headers={"Nats-Msg-Id": run_id})
            while True:
                run = await registry.get_run(run_id)
                if run is not None and run.status in TERMINAL_STATUSES:
                    break
                await asyncio.sleep(0.5)
            wall = time.perf_counter() - started
            report = await load_report(registry, run_id)
            await nc.close()
    assert report is not None
    jobs = spans(report)
    failed = [it["validation"]["error"] for it in report["iterations"] if it["validation"]["ok"] is False]
    if not jobs:
        raise SystemExit(f"farm run {run_id} trained nothing ({run.status}: {run.reason or run.error}); {failed[:1]}")
    return {"replicas": replicas, "wall_s": wall, "jobs": len(jobs), "candidates": len(report["iterations"]),
            "spent": report["compute"]["spent_seed_epochs"], **busy_figures(jobs, queued, replicas)}


def format_farm(rows: list[dict[str, Any]], parallel: int) -> list[str]:
    lines = [f"research throughput: one run with {parallel} candidates in flight, jobs that sleep {SLEEP_S} s per "
             f"forward pass ({DATASET}, CPU-independent), per evaluator replica count:"]
    for r in rows:
        lines.append(f"  {r['replicas']} replica(s): busy {r['busy']:.0%} while the run had work (target 85%), "
                     f"mean jobs in flight {r['mean_in_flight']:.2f}, {r['jobs']} jobs of {r['candidates']} candidates "
                     f"({r['spent']} seed-epochs), run wall time {r['wall_s']:.0f} s")
    base = rows[0]["wall_s"]
    lines.append("  wall time against 1 replica: " + ", ".join(f"{r['replicas']}: {base / r['wall_s']:.2f}x" for r in rows))
    return lines
