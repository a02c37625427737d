"""`make bench-sandbox`: validation latency of a small CNN, cold and pooled, in one run.

Each validation goes through `shared.sandboxing.validate.validate`, the service's own code path
(pre-check, container, harness, result). Cold: a container is created, started and imports torch
for each validation (pool size 0). Pooled: a pre-started container, torch already imported, takes
the job; the pool is warm before each validation, as it is when validations arrive slower than
the pool refills (about one container start per validation). Burst: validations back to back at
the service's concurrency, the pool refilling as they go: what a busy sandbox sustains.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from shared.modelspec.assemble import assemble
from shared.sandboxing.runners import make_runner
from shared.sandboxing.validate import validate
from shared.runtime.config import load_config
from shared.runtime.log import configure_logging
from shared.messaging.messages import ValidateRequest

SMALL_CNN = {"class_name": "SmallCNN", "input_shape": [3, 32, 32], "num_classes": 10,
             "layers": [{"type": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1}, {"type": "BatchNorm2d"},
                        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
                        {"type": "Conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1}, {"type": "BatchNorm2d"},
                        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
                        {"type": "Linear", "out_features": 128}, {"type": "ReLU"}, {"type": "Linear", "out_features": 10}]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> str:
    return (f"{name:<8} n={len(values):<3} p50 {percentile(values, 50):6.3f} s   p95 {percentile(values, 95):6.3f} s   "
            f"mean {statistics.fmean(values):6.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="validations per mode")
    parser.add_argument("--burst", type=int, default=20, help="validations in the burst (0 to skip)")
    parser.add_argument("--runtime", choices=("auto", "runc", "runsc"), default=None,
                        help="the containers' runtime (default: sandbox.runtime, auto); run once with each to compare")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    config = load_config()
    if args.runtime:
        config.sandbox.runtime = args.runtime
    model = assemble(SMALL_CNN)
    request = ValidateRequest(run_id="bench", source=model.source, class_name=model.class_name,
                              input_shape=[1, 3, 32, 32], expected_output_shape=[1, 10])
    s = config.sandbox
    print(f"small CNN ({model.class_name}), input (1, 3, 32, 32); sandbox limits: {s.memory} memory, {s.cpus:g} CPU, "
          f"pids {s.pids}; concurrency {s.concurrency}, pool size {max(s.pool_size, 1)}")

    def timed(runner) -> float:
        started = time.perf_counter()
        result = validate(request, runner, s.validate_timeout_s, s.memory, s.precheck)
        if not result.ok:
            raise SystemExit(f"benchmark model rejected: {result.error}")
        return time.perf_counter() - started

    cold_runner = make_runner(config, owner="bench-cold")
    cold_runner.pool_size = 0
    print(f"containers: {cold_runner.boundary.describe()} ({cold_runner.boundary.why})")
    cold = [timed(cold_runner) for _ in range(args.runs)]
    print(summary("cold", cold))

    pooled_runner = make_runner(config, owner="bench-pooled")
    pooled_runner.pool_size = max(s.pool_size, 1)
    pooled_runner.start_pool()
    pooled = []
    try:
        for _ in range(args.runs):
            if not pooled_runner.wait_warm():
                raise SystemExit("the pool did not fill within its start timeout")
            pooled.append(timed(pooled_runner))
        print(summary("pooled", pooled))
        if args.burst:
            pooled_runner.wait_warm()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=s.concurrency) as pool:
                burst = list(pool.map(lambda _: timed(pooled_runner), range(args.burst)))
            elapsed = time.perf_counter() - started
            print(summary("burst", burst) + f"   {args.burst / elapsed * 60:.0f} validations/min at concurrency {s.concurrency}")
    finally:
        pooled_runner.close()
    p50_ratio = percentile(cold, 50) / percentile(pooled, 50)
    p95_ratio = percentile(cold, 95) / percentile(pooled, 95)
    print(f"ratio cold/pooled: p50 {p50_ratio:.1f}x, p95 {p95_ratio:.1f}x; target pooled p50 < 0.5 s: "
          f"{'met' if percentile(pooled, 50) < 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
