"""`make bench-scale`: evaluation jobs per minute with 1 and with 2 evaluator replicas, in one run.

A real nats-server with JetStream and real evaluator services (each its own process, as in the
embedded stack), sharing the EVAL work queue through their one durable pull consumer. Each phase
queues the same batch of one-seed jobs (a small CNN on digits) and times the batch from the
moment the jobs are queued to the last result on the RESULTS stream. Replicas start, and are ready,
before the clock starts. What bounds the ratio on a given machine is printed beside it: the CPU
cores, the CPU cap of each training container, and the mean time a job spends training.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from researcher.stack import LocalStack
from shared.messaging import subjects
from shared.modelspec.assemble import assemble
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.runtime.config import load_config
from shared.runtime.log import configure_logging
from shared.messaging.messages import EvalJob, SeedResult, TrainingRecipe

SMALL_CNN = {"class_name": "BenchCNN", "input_shape": [1, 8, 8], "num_classes": 10,
             "layers": [{"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1}, {"type": "ReLU"},
                        {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
                        {"type": "Linear", "out_features": 64}, {"type": "ReLU"}, {"type": "Linear", "out_features": 10}]}


async def phase(stack: LocalStack, replicas: int, jobs: int, epochs: int, subset: int) -> dict:
    names = [f"evaluator-b{replicas}-{i}" for i in range(replicas)]
    for name in names:
        stack.start_service("evaluator", replica=name)
    stack.wait_ready(names)
    nc = await connect(stack.url, "bench")
    js = nc.jetstream()
    run_id = f"bench{replicas}-{uuid.uuid4().hex[:8]}"
    model = assemble(SMALL_CNN)
    results: list[SeedResult] = []
    done = asyncio.Event()

    async def on_result(msg) -> None:
        results.append(decode(msg.data, SeedResult, msg.subject))
        if len(results) >= jobs:
            done.set()

    sub = await nc.subscribe(subjects.results_subject(run_id), cb=on_result)
    started = time.perf_counter()
    for seed in range(jobs):
        job = EvalJob.with_recipe(TrainingRecipe(epochs=epochs, batch_size=64), job_id=f"{run_id}.it0001.seed{seed}", run_id=run_id, iteration=1, seed=seed, dataset="digits",
                      class_name=model.class_name, source=model.source, subset_size=subset)
        await js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})
    await asyncio.wait_for(done.wait(), timeout=1800)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    for name in names:
        stack.stop_process(name)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed, e.g. {failed[0]}")
    return {"replicas": replicas, "jobs": jobs, "elapsed_s": elapsed, "per_min": jobs / elapsed * 60,
            "train_s": statistics.fmean(r.train_time_s for r in results),
            "job_s": statistics.fmean(r.duration_s for r in results),
            "by_replica": {e: sum(1 for r in results if r.evaluator == e) for e in sorted({r.evaluator for r in results})}}


async def bench(args: argparse.Namespace) -> None:
    configure_logging("bench", "error")
    config = load_config()
    print(f"{args.jobs} one-seed jobs per phase: small CNN on digits, {args.epochs} epoch(s), {args.subset} samples; "
          f"{os.cpu_count()} CPU cores here, each training container capped at {config.evaluator.cpus:g} CPU "
          f"and {config.evaluator.memory}; warm containers per replica: "
          f"{config.evaluator.pool_size if args.pool_size is None else args.pool_size}")
    pool = {} if args.pool_size is None else {"RESEARCHER_EVALUATOR__POOL_SIZE": str(args.pool_size)}
    with LocalStack(services=(), env=pool) as stack:
        nc = await connect(stack.url, "bench")
        await ensure_streams(nc.jetstream())
        await nc.close()
        rows = [await phase(stack, n, args.jobs, args.epochs, args.subset) for n in (1, 2)]
    for row in rows:
        print(f"{row['replicas']} evaluator(s): {row['per_min']:6.1f} jobs/min  ({row['jobs']} jobs in "
              f"{row['elapsed_s']:.1f} s; per job {row['job_s']:.2f} s of which training {row['train_s']:.2f} s; "
              f"jobs per replica {sorted(row['by_replica'].values())})")
    ratio = rows[1]["per_min"] / rows[0]["per_min"]
    print(f"ratio 2 vs 1 replica: {ratio:.2f}x")
    slowdown = rows[1]["train_s"] / rows[0]["train_s"]
    overhead = rows[0]["job_s"] - rows[0]["train_s"]
    print(f"bound: a job alone spends {overhead:.2f} s outside training (data to the container, its start and torch "
          f"import, scoring); with 2 replicas each job trains {slowdown:.2f}x slower (shared cores). Replicas scale "
          f"while cores are free: up to {os.cpu_count()} cores / {config.evaluator.cpus:g} CPU per container here, "
          f"or one GPU per replica")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per phase")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=900, help="samples drawn from digits")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="warm training containers per replica (default: evaluator.pool_size)")
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
