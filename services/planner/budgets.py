"""The goal's own budgets (CPU seconds, GPU seconds, LLM tokens): what a run has spent, measured
(the training containers' cgroups, the LLM servers' token counts), and whether a limit is reached.

A seed's cost is in its candidate's evaluation once the candidate is aggregated; before that the
driver keeps the costs of the results that came (`Unaggregated`), so a run is stopped on what its
containers used, not on what was aggregated. A planner that restarts loses only that tally of the
candidates still in flight, which their evaluations bring back when they are aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messaging.messages import Goal, SeedCost, SeedResult
from shared.registry.costs import run_cost
from shared.registry.records import IterationRecord, RunRecord


@dataclass(frozen=True)
class Spent:
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    llm_tokens: int = 0
    seeds_measured: int = 0  # seeds whose cost was measured (an older evaluator's were not)

    def __add__(self, other: "Spent") -> "Spent":
        return Spent(self.cpu_s + other.cpu_s, self.gpu_s + other.gpu_s, self.llm_tokens + other.llm_tokens,
                     self.seeds_measured + other.seeds_measured)


def of_cost(cost: SeedCost | None) -> Spent:
    """A seed's spend; one whose counters could not be read counts its wall time as CPU seconds, so
    a budget never stops counting a container (one CPU for its time: the least it can have used)."""
    if cost is None:
        return Spent()
    if cost.cpu_s is None:
        return Spent(cpu_s=cost.wall_s, gpu_s=cost.gpu_s or 0.0)
    return Spent(cpu_s=cost.cpu_s, gpu_s=cost.gpu_s or 0.0, seeds_measured=1)


def llm_tokens(run: RunRecord, history: list[IterationRecord]) -> int:
    """Tokens in and out of every LLM call of the run: the check at its start and each candidate's."""
    return sum(c.tokens for c in run.llm_check or []) + sum(c.tokens for h in history for c in h.llm_calls)


class Unaggregated:
    """The seed results that came for candidates not aggregated yet (their costs), by job id."""

    def __init__(self) -> None:
        self._results: dict[str, tuple[int, int | None, SeedCost | None]] = {}

    def add(self, result: SeedResult) -> None:
        if result.split == "val":
            self._results[result.job_id] = (result.iteration, result.rung, result.cost)

    def _waiting(self, candidates: dict[int, IterationRecord]) -> list[tuple[int, SeedCost | None]]:
        """(candidate, cost) of the results whose candidate still waits for them at that rung; the
        others (in an evaluation now, or never asked for) are forgotten."""
        out = []
        for job_id, (n, rung, cost) in list(self._results.items()):
            it = candidates.get(n)
            if it is not None and it.state in ("validated", "evaluating") and it.rung == rung:
                out.append((n, cost))
            else:
                del self._results[job_id]
        return out

    def spent(self, candidates: dict[int, IterationRecord]) -> Spent:
        total = Spent()
        for _, cost in self._waiting(candidates):
            total = total + of_cost(cost)
        return total

    def complete(self, candidates: dict[int, IterationRecord]) -> list[int]:
        """Candidates whose every seed has its result here: about to be aggregated and judged."""
        counts: dict[int, int] = {}
        for n, _ in self._waiting(candidates):
            counts[n] = counts.get(n, 0) + 1
        return [n for n, count in counts.items() if count >= len(candidates[n].seeds)]


def spent(run: RunRecord, history: list[IterationRecord], pending: Spent = Spent()) -> Spent:
    """What the run has used so far: its aggregated seeds' costs (every rung: costs.run_cost),
    `pending` (Unaggregated.spent), and its LLM tokens."""
    cost = run_cost(history)
    return pending + Spent(cpu_s=cost.cpu_s + cost.unmeasured_wall_s, gpu_s=cost.gpu_s or 0.0, llm_tokens=llm_tokens(run, history),
                           seeds_measured=cost.seeds)


def reached(goal: Goal, used: Spent) -> str | None:
    """Which of the goal's limits `used` has reached, in a sentence; None while none is."""
    if goal.max_cpu_s is not None and used.cpu_s >= goal.max_cpu_s:
        return (f"the CPU budget is spent: {used.cpu_s:.1f} of {goal.max_cpu_s:g} CPU seconds used by "
                f"{used.seeds_measured} seed container(s), as their cgroups count them")
    if goal.max_gpu_s is not None and used.gpu_s >= goal.max_gpu_s:
        return f"the GPU budget is spent: {used.gpu_s:.1f} of {goal.max_gpu_s:g} GPU seconds used"
    if goal.max_llm_tokens is not None and used.llm_tokens >= goal.max_llm_tokens:
        return f"the LLM token budget is spent: {used.llm_tokens:,} of {goal.max_llm_tokens:,} tokens used"
    return None
