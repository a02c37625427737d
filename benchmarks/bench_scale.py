"""`make bench-scale`: where a cheap evaluation job's time goes, and jobs per minute with 1 and
with 2 evaluator replicas, in one run.

A real nats-server with JetStream and real evaluator services (each its own process, as in the
embedded stack), sharing the EVAL work queue through their one durable pull consumer. Replicas
start, and are ready, before any clock starts. Three phases of the same one-seed jobs (a small CNN
on digits):
- warm pool: one replica, each job queued once the one before is done and its container's
  replacement is warm (the replica's log says so). Its split, step by step (SeedResult.timings,
  each measured where it happens; the container's own clocks only divide the time the trusted side
  measured in it), ends in the time a job spends outside training, against the 0.5 s target.
- 1 and 2 replicas, all jobs queued at once: jobs per minute, timed from the moment the jobs are
  queued to the last result. What bounds them is printed beside them: a warm container's start
  (a replica starts one per job), the CPU cores, the CPU cap of each training container.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

from benchmarks.farm import farm_phase, format_farm
from researcher.stack import LocalStack
from shared.messaging import subjects
from shared.modelspec.assemble import assemble
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.runtime.config import load_config
from shared.runtime.log import configure_logging
from shared.messaging.messages import EvalJob, SeedResult, TrainingRecipe
from shared.evaluation.job_timings import STEPS, publish_seconds, split

TARGET_OUTSIDE_S = 0.5  # issue 13: a cheap job's time outside training, one replica, warm pool
WAIT_LABEL = dict(STEPS)["container_wait_s"]

SMALL_CNN = {"class_name": "BenchCNN", "input_shape": [1, 8, 8], "num_classes": 10,
             "layers": [{"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1}, {"type": "ReLU"},
                        {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
                        {"type": "Linear", "out_features": 64}, {"type": "ReLU"}, {"type": "Linear", "out_features": 10}]}


def warm_starts(stack: LocalStack, name: str) -> list[float]:
    """The seconds each warm container of replica `name` took to start, from its log so far."""
    starts = []
    for line in (stack.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
        if '"container_warm"' in line:
            try:
                starts.append(float(json.loads(line)["start_s"]))
            except (ValueError, KeyError, TypeError):
                continue
    return starts


async def until_warm(stack: LocalStack, name: str, count: int, timeout_s: float = 300.0) -> None:
    """Wait until replica `name` has logged `count` warm containers started."""
    deadline = time.monotonic() + timeout_s
    while len(warm_starts(stack, name)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: {count} warm containers not started within {timeout_s:g} s; see {stack.log_dir}")
        await asyncio.sleep(0.05)


async def phase(stack: LocalStack, replicas: int, jobs: int, epochs: int, subset: int, pool: int,
                one_by_one: bool = False) -> dict:
    """Queue `jobs` one-seed jobs to `replicas` fresh replicas, all at once, or (`one_by_one`)
    each after the result before it, once the replica's pool is full again (a warm pool)."""
    tag = "w" if one_by_one else str(replicas)
    names = [f"evaluator-b{tag}-{i}" for i in range(replicas)]
    for name in names:
        stack.start_service("evaluator", replica=name)
    stack.wait_ready(names)
    nc = await connect(stack.url, "bench", role="admin")
    js = nc.jetstream()
    run_id = f"bench{tag}-{uuid.uuid4().hex[:8]}"
    model = assemble(SMALL_CNN)
    results: list[SeedResult] = []
    queued: dict[str, float] = {}
    publish_s: list[float] = []
    arrived = asyncio.Condition()

    async def on_result(msg) -> None:
        result = decode(msg.data, SeedResult, msg.subject)
        publish_s.append(publish_seconds(result, time.time() - queued[result.job_id]))
        async with arrived:
            results.append(result)
            arrived.notify_all()

    async def until_results(count: int) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(results) >= count), timeout=1800)

    sub = await nc.subscribe(subjects.results_subject(run_id), cb=on_result)
    if one_by_one:
        await until_warm(stack, names[0], pool)
    started = time.perf_counter()
    for seed in range(jobs):
        if one_by_one and seed:
            await until_results(seed)
            await until_warm(stack, names[0], pool + seed)  # its container's replacement is warm
        job = EvalJob.with_recipe(TrainingRecipe(epochs=epochs, batch_size=64), job_id=f"{run_id}.it0001.seed{seed}",
                                  run_id=run_id, iteration=1, seed=seed, dataset="digits",
                                  class_name=model.class_name, source=model.source, subset_size=subset)
        queued[job.job_id] = time.time()
        await js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})
    await until_results(jobs)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    starts = [s for name in names for s in warm_starts(stack, name)]
    for name in names:
        stack.stop_process(name)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed, e.g. {failed[0]}")
    return {"replicas": replicas, "jobs": jobs, "elapsed_s": elapsed, "per_min": jobs / elapsed * 60,
            "split": split(results, publish_s), "warm_start_s": statistics.fmean(starts) if starts else float("nan"),
            "by_replica": {e: sum(1 for r in results if r.evaluator == e) for e in sorted({r.evaluator for r in results})}}


def print_split(row: dict) -> None:
    result = row["split"]
    for label, seconds, depth in result.rows:
        print(f"  {'    ' * depth}{label:<{62 - 4 * depth}} {seconds:7.3f} s")
    verdict = "met" if result.outside_s < TARGET_OUTSIDE_S else "NOT met"
    print(f"  outside training: {result.outside_s:.3f} s per job (training {result.train_s:.3f} s); "
          f"target < {TARGET_OUTSIDE_S} s: {verdict}")


async def bench(args: argparse.Namespace) -> None:
    configure_logging("bench", "error")
    config = load_config()
    pool = config.evaluator.pool_size if args.pool_size is None else args.pool_size
    print(f"{args.jobs} one-seed jobs per phase: small CNN on digits, {args.epochs} epoch(s), {args.subset} samples; "
          f"{os.cpu_count()} CPU cores here, each training container capped at {config.evaluator.cpus:g} CPU "
          f"and {config.evaluator.memory}; warm containers per replica: {pool}")
    env = {} if args.pool_size is None else {"RESEARCHER_EVALUATOR__POOL_SIZE": str(args.pool_size)}
    with LocalStack(services=(), env=env) as stack:
        nc = await connect(stack.url, "bench", role="admin")
        await ensure_streams(nc.jetstream())
        await nc.close()
        warm = await phase(stack, 1, args.jobs, args.epochs, args.subset, pool, one_by_one=True) if pool else None
        rows = [await phase(stack, n, args.jobs, args.epochs, args.subset, pool) for n in (1, 2)]
    if warm:
        print(f"where a job's time goes, 1 evaluator, warm pool (each job queued once the one before is done and "
              f"its container's replacement warm), mean of {warm['jobs']}:")
        print_split(warm)
    for row in rows:
        print(f"{row['replicas']} evaluator(s), all jobs queued at once: {row['per_min']:6.1f} jobs/min  ({row['jobs']} "
              f"jobs in {row['elapsed_s']:.1f} s; per job outside training {row['split'].outside_s:.2f} s, of which "
              f"waiting for a warm container {dict((r.label, r.seconds) for r in row['split'].rows)[WAIT_LABEL]:.2f} s; "
              f"training {row['split'].train_s:.2f} s; jobs per replica {sorted(row['by_replica'].values())})")
    ratio = rows[1]["per_min"] / rows[0]["per_min"]
    print(f"ratio 2 vs 1 replica: {ratio:.2f}x")
    slowdown = rows[1]["split"].train_s / rows[0]["split"].train_s
    start_s = rows[0]["warm_start_s"]
    print(f"bound: with a warm pool a job spends the split above outside training; queued at once, jobs outrun the "
          f"pool: a replica starts one container per job, a warm container took {start_s:.2f} s to start here (create, "
          f"start, import torch and torch._dynamo, at the lowest CPU weight while jobs train) and at most two start at "
          f"once (the pool's refill, and one more while a job waits), so one replica stays under 2 x 60 / "
          f"{start_s:.2f} = {120 / start_s:.1f} jobs/min. With 2 replicas each job trains {slowdown:.2f}x slower "
          f"(shared cores). Replicas scale while cores are free: up to {os.cpu_count()} cores / "
          f"{config.evaluator.cpus:g} CPU per container here, or one GPU per replica")
    if args.farm:  # research throughput: whole runs, K candidates in flight, on 1, 2 and 4 replicas
        farm = [await farm_phase(n, args.parallel, args.farm_budget) for n in args.farm]
        print("\n".join(format_farm(farm, args.parallel)))
        print("bound: between a candidate's jobs come its proposal, code, validation (a container) and dispatch; "
              "with few jobs per candidate at the cheap rungs that pipeline, not the replicas, sets how many jobs the "
              "run has in flight (busy counts only the time when jobs were waiting or running)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per phase")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=900, help="samples drawn from digits")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="warm training containers per replica (default: evaluator.pool_size)")
    parser.add_argument("--farm", type=lambda text: [int(n) for n in text.split(",") if n] if text else [],
                        default=[1, 2, 4], help="replica counts of the research-throughput runs, e.g. 1,2,4; '' skips them")
    parser.add_argument("--parallel", type=int, default=8, help="candidates in flight in each research-throughput run")
    parser.add_argument("--farm-budget", type=int, default=60, help="seed-epochs of each research-throughput run")
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
