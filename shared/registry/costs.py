"""What candidates and runs cost in compute, totalled from their seeds' measured figures
(SeedRow.cost: each training container's cgroup, read from outside; shared.sandboxing.cost).

Every rung counts: a candidate's cost is its current evaluation's seeds plus those of the cheaper
rungs it passed. The planner's budgets call `run_cost` after every seed result, so it reads only
the records it is given and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from shared.messaging.messages import SeedCost
from shared.registry.records import Evaluation, IterationRecord

MB = 2**20


class RunCost(msgspec.Struct, frozen=True, kw_only=True):
    """Sums over seed containers (a candidate's, or a run's); peak memory is the largest one seen."""

    cpu_s: float = 0.0  # CPU seconds, user + system, of every measured container
    gpu_s: float | None = None  # None: no container was measured on a GPU
    wall_s: float = 0.0  # seconds of the containers' jobs, added up (they may have run side by side)
    peak_memory_bytes: int | None = None  # the largest container's high-water mark
    peak_gpu_memory_bytes: int | None = None
    seeds: int = 0  # seed containers measured
    unmeasured: int = 0  # seed rows without figures (failed before their container ran, older evaluators)
    unmeasured_wall_s: float = 0.0  # those rows' wall time, where they have one: what a CPU budget counts for them

    def __add__(self, other: RunCost) -> RunCost:
        return RunCost(cpu_s=round(self.cpu_s + other.cpu_s, 3), gpu_s=_add(self.gpu_s, other.gpu_s),
                       wall_s=round(self.wall_s + other.wall_s, 3),
                       peak_memory_bytes=_max(self.peak_memory_bytes, other.peak_memory_bytes),
                       peak_gpu_memory_bytes=_max(self.peak_gpu_memory_bytes, other.peak_gpu_memory_bytes),
                       seeds=self.seeds + other.seeds, unmeasured=self.unmeasured + other.unmeasured,
                       unmeasured_wall_s=round(self.unmeasured_wall_s + other.unmeasured_wall_s, 3))

    @property
    def compute_s(self) -> float:
        """The axis of "accuracy against compute": GPU seconds where there are any, else CPU seconds."""
        return self.gpu_s if self.gpu_s else self.cpu_s


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else round((a or 0.0) + (b or 0.0), 3)


def _max(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else max(a or 0, b or 0)


def evaluation_cost(evaluation: Evaluation | None) -> RunCost:
    total = RunCost()
    for row in evaluation.seed_results if evaluation else []:
        c = row.cost
        if c is None or c.cpu_s is None:
            total += RunCost(wall_s=c.wall_s if c else 0.0, unmeasured=1, unmeasured_wall_s=c.wall_s if c else 0.0)
            continue
        total += RunCost(cpu_s=c.cpu_s, gpu_s=c.gpu_s, wall_s=c.wall_s, peak_memory_bytes=c.peak_memory_bytes,
                         peak_gpu_memory_bytes=c.peak_gpu_memory_bytes, seeds=1)
    return total


def candidate_cost(it: IterationRecord) -> RunCost:
    """Its seeds' figures over every rung it trained at."""
    total = evaluation_cost(it.evaluation)
    for rung in it.passed:
        total += evaluation_cost(rung.evaluation)
    return total


def run_cost(history: Iterable[IterationRecord]) -> RunCost:
    """A run's measured compute so far, from its candidates' records."""
    total = RunCost()
    for it in history:
        total += candidate_cost(it)
    return total


def format_cost(cost: RunCost) -> str:
    """One line: '12.4 CPU s, 3.0 GPU s, peak 715 MB, 9.1 s in containers over 4 seeds (1 not measured)'."""
    if not cost.seeds:  # an older evaluator's seeds, or none yet
        return f"not measured ({cost.unmeasured} seeds without figures)" if cost.unmeasured else "none yet"
    parts = [f"{cost.cpu_s:.1f} CPU s"]
    if cost.gpu_s is not None:
        parts.append(f"{cost.gpu_s:.1f} GPU s")
    if cost.peak_memory_bytes is not None:
        parts.append(f"peak {cost.peak_memory_bytes / MB:,.0f} MB")
    if cost.peak_gpu_memory_bytes is not None:
        parts.append(f"peak GPU {cost.peak_gpu_memory_bytes / MB:,.0f} MB")
    line = ", ".join(parts) + f", {cost.wall_s:.1f} s in containers over {cost.seeds} seed{'s' * (cost.seeds != 1)}"
    return line + (f" ({cost.unmeasured} not measured)" if cost.unmeasured else "")


def format_seed_cost(seed: int, cost: SeedCost) -> str:
    """'seed 0 1.7 CPU s, peak 297 MB' (a measured seed's)."""
    gpu = f", {cost.gpu_s:.1f} GPU s" if cost.gpu_s is not None else ""
    peak = f", peak {cost.peak_memory_bytes / MB:,.0f} MB" if cost.peak_memory_bytes is not None else ""
    return f"seed {seed} {cost.cpu_s or 0.0:.1f} CPU s{gpu}{peak}"


def cost_report(iterations: list[IterationRecord]) -> dict:
    """The JSON report's "cost": the run's totals and each candidate's (seeds' own rows are in
    their evaluations' seed_results)."""
    return {"total": msgspec.to_builtins(run_cost(iterations)),
            "per_candidate": {str(it.iteration): msgspec.to_builtins(candidate_cost(it)) for it in iterations}}


def compute_points(iterations: list[IterationRecord], metric: str) -> tuple[list[tuple[int, float, float]], str]:
    """(iteration, compute seconds, mean `metric`) of every candidate with both, and the axis they
    share: GPU seconds where any candidate used a GPU, else CPU seconds."""
    costs = {it.iteration: candidate_cost(it) for it in iterations}
    gpu = any(cost.gpu_s for cost in costs.values())
    points = []
    for it in iterations:
        mean = it.evaluation.summary(metric).mean if it.evaluation else None
        cost = costs[it.iteration]
        if mean is not None and cost.seeds:
            points.append((it.iteration, (cost.gpu_s or 0.0) if gpu else cost.cpu_s, mean))
    return points, "GPU seconds" if gpu else "CPU seconds"
