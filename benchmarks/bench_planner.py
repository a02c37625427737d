"""`make bench-planner`: the planner's own CPU time per candidate early in a long run and late in it.

A real nats-server, the real planner and assembler services as processes, and one run of many
cheap candidates (parallel 4, the default rungs, a budget it never spends). What is around the
planner answers at once so the planner's cost is all there is to measure: this process answers the
sandbox's validation requests (every model valid) and plays the evaluators, answering each seed job
with a result whose accuracy is a fixed function of the job's learning rate and epochs (so the
search has something to learn). The planner's CPU seconds (utime + stime from /proc) are read as
the run passes candidate numbers; the figure is CPU seconds per candidate over a window of 25
candidates ending at 50, and at `--candidates` (default 500), and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
import uuid

from nats.js.api import AckPolicy, ConsumerConfig

from researcher.stack import LocalStack
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import (GOAL_LIMITS, EpochStats, EvalJob, Event, Goal, SeedResult, ValidateRequest,
                                       ValidationResult)
from shared.runtime.log import configure_logging

WINDOW = 25
BUDGET = GOAL_LIMITS["epoch_budget"][1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accuracy(job: EvalJob) -> float:
    """Best near lr 3e-3, better with more epochs; a little noise by seed."""
    return round(0.55 + 0.35 * math.exp(-(math.log10(job.lr) + 2.5) ** 2) + 0.01 * job.epochs ** 0.5
                 + 0.003 * (job.seed % 3), 4)


async def bench(args: argparse.Namespace) -> None:
    configure_logging("bench", "error")
    # a budget it never spends: the stack's cap on a goal's budget raised to what a goal may ask at most
    env = {"RESEARCHER_PLANNER__PARALLEL": "4", "RESEARCHER_LIMITS__MAX_EPOCH_BUDGET": str(BUDGET)}
    with LocalStack(services=("planner", "assembler"), env=env) as stack:
        stack.wait_ready(["planner", "assembler"])
        nc = await connect(stack.url, "bench", role="admin")
        js = nc.jetstream()
        await ensure_streams(js)

        async def validate(msg) -> None:
            request = decode(msg.data, ValidateRequest, msg.subject)
            await msg.respond(encode(ValidationResult(ok=True, output_shape=request.expected_output_shape,
                                                      param_count=1000, trainable_params=1000, flops=2000,
                                                      reported_by="model_process")))

        await nc.subscribe(subjects.VALIDATE_SUBJECT, queue=subjects.SANDBOX_QUEUE, cb=validate)
        await js.add_consumer(subjects.EVAL_STREAM, ConsumerConfig(durable_name=subjects.EVAL_CONSUMER,
                                                                   ack_policy=AckPolicy.EXPLICIT))
        jobs = await js.pull_subscribe_bind(subjects.EVAL_CONSUMER, subjects.EVAL_STREAM)
        seen: dict[int, float] = {}
        pid = stack.procs["planner"].pid

        async def on_event(msg) -> None:
            event = decode(msg.data, Event, msg.subject)
            if event.kind == "proposed" and event.iteration is not None:
                seen.setdefault(event.iteration, cpu_seconds(pid))

        run_id = f"bench-planner-{uuid.uuid4().hex[:6]}"
        await nc.subscribe(subjects.events_subject(run_id), cb=on_event)
        goal = Goal(run_id=run_id, goal="planner cost", dataset="digits", target_accuracy=1.0, num_seeds=3,
                    max_epochs=9, epoch_budget=BUDGET, patience=1000, submitted_at=time.time())
        await js.publish(subjects.GOALS_SUBJECT, encode(goal), headers={"Nats-Msg-Id": run_id})
        started, shown = time.perf_counter(), 0
        while len(seen) < args.candidates:
            try:
                batch = await jobs.fetch(8, timeout=1)
            except asyncio.TimeoutError:
                continue
            for msg in batch:
                job = decode(msg.data, EvalJob, msg.subject)
                acc = accuracy(job)
                curve = [EpochStats(epoch=e + 1, train_loss=1.0 / (e + 1), train_accuracy=acc, val_loss=1 - acc,
                                    val_accuracy=acc) for e in range(job.epochs)]
                result = SeedResult(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed,
                                    rung=job.rung, ok=True, metrics={"val_accuracy": acc, "val_loss": 1 - acc},
                                    learning_curve=curve, started_at=time.time(), evaluator="bench")
                await js.publish(subjects.results_subject(job.run_id), encode(result), headers={"Nats-Msg-Id": job.job_id})
                await msg.ack()
            if len(seen) // 50 > shown:
                shown = len(seen) // 50
                print(f"  {len(seen)} candidates, {time.perf_counter() - started:.0f} s", flush=True)
        await nc.close()
    early = (seen[50] - seen[50 - WINDOW]) / WINDOW
    late = (seen[args.candidates] - seen[args.candidates - WINDOW]) / WINDOW
    print(f"planner CPU per candidate: {early * 1000:.1f} ms at candidates {50 - WINDOW}-50, {late * 1000:.1f} ms at "
          f"{args.candidates - WINDOW}-{args.candidates}: ratio {late / early:.2f}x "
          f"({time.perf_counter() - started:.0f} s for {args.candidates} candidates)")
    print("bound: a proposal rebuilds TPE from at most 200 measured candidates (search.MAX_TRIALS), and a run's "
          "records are read once, not per step; what still grows is a pass over the candidates in memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=500)
    args = parser.parse_args()
    if args.candidates < 50 + WINDOW:
        parser.error(f"--candidates must be at least {50 + WINDOW}")
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
