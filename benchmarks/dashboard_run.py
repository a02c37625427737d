"""A run of many candidates written into a real registry, for the dashboard's benchmark and tests.

The records are the registry's own types, filled the way the planner fills them: each measured
candidate's evaluation is `summarise` over seed results whose metrics and details come from
`shared.evaluation.metrics.score` on generated predictions, with learning curves; some candidates
are rejected by the sandbox, some lose every seed, some are in flight, some carry LLM exchanges
(stored as artifacts, as the planner stores them). `hostile=True` puts markup and script in the
goal text, an LLM reply, an error and the code, which a page must show as text.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import msgspec
import numpy as np

from shared.evaluation.aggregate import summarise
from shared.evaluation.metrics import score
from shared.messaging.messages import DatasetFacts, EpochStats, Goal, LLMCall, SeedResult, ValidationResult
from shared.registry.records import Decision, IterationRecord, RunRecord
from researcher.stack import free_port, spawn, stop
from shared.registry.store import Registry

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>'
CLASSES = [str(i) for i in range(10)]
SEEDS = [0, 1, 2]
T0 = 1_760_000_000.0


def _seed(run_id: str, n: int, seed: int, skill: float, rng: np.random.Generator, epochs: int) -> SeedResult:
    y = rng.integers(0, 10, 300)
    logits = rng.normal(size=(300, 10))
    logits[np.arange(300), y] += 4 * skill + rng.normal(0, 0.1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics, details = score(y, probs, CLASSES)
    curve = [EpochStats(epoch=e, train_loss=2.3 / e, train_accuracy=min(1.0, skill * e / epochs + 0.05),
                        val_loss=2.3 / e + 0.1, val_accuracy=min(1.0, skill * e / epochs)) for e in range(1, epochs + 1)]
    return SeedResult(job_id=f"{run_id}.{n}.{seed}", run_id=run_id, iteration=n, seed=seed, ok=True,
                      metrics=metrics, details=details, learning_curve=curve, train_time_s=3.0 + seed,
                      duration_s=4.0 + seed, evaluator="bench", runtime="runc")


def _config(n: int, rng: random.Random) -> dict:
    width = rng.choice([16, 32, 64, 128])
    return {"class_name": f"Candidate{n}", "input_shape": [1, 8, 8], "num_classes": 10,
            "layers": [{"type": "Conv2d", "out_channels": width, "kernel_size": 3, "padding": 1}, {"type": "ReLU"},
                       {"type": "Flatten"}, {"type": "Linear", "out_features": 10}],
            "optimizer": "adam", "lr": round(rng.uniform(1e-4, 1e-2), 5), "epochs": 5, "batch_size": 64}


def _code(config: dict, hostile: bool) -> str:
    width = config["layers"][0]["out_channels"]
    note = f"    # {HOSTILE}\n" if hostile else ""
    return (f"import torch.nn as nn\n\n\nclass {config['class_name']}(nn.Module):\n{note}    def __init__(self):\n"
            f"        super().__init__()\n        self.conv = nn.Conv2d(1, {width}, 3, padding=1)\n"
            f"        self.head = nn.Linear({width} * 64, 10)\n\n    def forward(self, x):\n"
            "        return self.head(self.conv(x).relu().flatten(1))\n")


async def write_run(registry: Registry, run_id: str, candidates: int = 200, *, hostile: bool = False,
                    status: str = "goal_achieved", seed: int = 0) -> RunRecord:
    """A run of `candidates` candidates in `registry` (opened to write): -> its record."""
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    goal = Goal(run_id=run_id, goal=(f"beat 90% on digits {HOSTILE}" if hostile else "a small CNN for digits"),
                dataset="digits", target_accuracy=0.9, num_seeds=len(SEEDS))
    best, best_score, now = None, None, T0
    for n in range(1, candidates + 1):
        config = _config(n, rng)
        started, now = now, now + rng.uniform(5, 30)
        code = await registry.put_artifact(f"{run_id}/it{n:04d}/code.py", _code(config, hostile).encode())
        record = IterationRecord(run_id=run_id, iteration=n, model_config=config, class_name=config["class_name"],
                                 code_artifact=code, seeds=SEEDS, assembler="deterministic",
                                 started_at=started, finished_at=now, reasoning=f"trial {n} of the search")
        kind = "rejected" if n % 17 == 5 else "failed" if n % 23 == 7 else "flight" if n > candidates - 2 and status == "running" else "ok"
        if kind == "rejected":
            error = f"RuntimeError: mat1 and mat2 shapes cannot be multiplied {HOSTILE if hostile else ''}"
            record.state, record.validation = "rejected", ValidationResult(ok=False, reason="exception", error=error)
        else:
            record.validation = ValidationResult(ok=True, output_shape=[2, 10], param_count=1000 * n,
                                                 trainable_params=1000 * n, flops=2 * 10_000, reported_by="model_process",
                                                 layers=[{"name": "conv", "type": "Conv2d", "params": 1000 * n}])
        if kind == "failed":
            failed = {s: SeedResult(job_id=f"{run_id}.{n}.{s}", run_id=run_id, iteration=n, seed=s, ok=False,
                                    reason="oom", error="the container ran out of memory (2g)") for s in SEEDS}
            record.state, record.evaluation = "decided", summarise(failed, SEEDS)
        elif kind == "flight":
            record.state, record.finished_at = "evaluating", None
        elif kind == "ok":
            skill = min(0.99, 0.5 + 0.45 * rng.random() + n / (4 * candidates))
            record.state = "decided"
            record.evaluation = summarise({s: _seed(run_id, n, s, skill, nprng, 5) for s in SEEDS}, SEEDS)
            mean = record.evaluation.summary().mean
            if best_score is None or (mean is not None and mean > best_score):
                best, best_score = n, mean
        if n % 10 == 1:
            record.proposer = "llm"
            call = LLMCall(role="planning", purpose="propose", model="scripted", outcome="ok", latency_s=1.5,
                           tokens_in=900, tokens_out=120, started_at=started)
            exchange = {**msgspec.to_builtins(call), "messages": [{"role": "user", "content": f"propose a config for {goal.goal}"}],
                        "reply": json.dumps({"reasoning": HOSTILE if hostile else "wider", "model_config": config})}
            name = await registry.put_artifact(f"{run_id}/it{n:04d}/llm/{started:.6f}-planning-propose.json",
                                               json.dumps(exchange).encode())
            record.llm_calls = [msgspec.structs.replace(call, exchange=name)]
        if record.state == "decided" and record.decision is None:
            record.decision = Decision(action="iterate", reasoning="below the target; trying another")
        await registry.put_iteration(record)
    facts = DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1437,
                         class_names=CLASSES)
    run = RunRecord(run_id=run_id, goal=goal, status=status, current_iteration=candidates, best_iteration=best,
                    best_score=best_score, dataset_facts=facts, budget_epochs=candidates * 15, created_at=T0,
                    finished_at=None if status == "running" else now,
                    reason=None if status == "running" else f"the search ended: {status}")
    await registry.create_run(run)
    return run


@contextmanager
def serve_dashboard(nats_url: str, credentials, log_path: Path, ready_s: float = 60.0) -> Iterator[str]:
    """The dashboard service as its own process on a free port, connected as its role: -> its base URL."""
    port = free_port()
    env = {**os.environ, "NATS_URL": nats_url, "NATS_CREDENTIALS": str(credentials.role("dashboard").path),
           "RESEARCHER_DASHBOARD__PORT": str(port)}
    with open(log_path, "wb") as log:
        proc = spawn([sys.executable, "-m", "services.dashboard.main"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_s
        while b'"dashboard_ready"' not in log_path.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited at start:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard was not ready in {ready_s:.0f} s; its log: {log_path}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, 15.0)
