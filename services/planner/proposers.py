"""The one seam through which the planner chooses what to try next.

A proposer looks at a run and its candidates and either proposes a model_config, declines with a
reason (its answer could not be used: the run's events say why), or abstains with a decision of
its own (the planning LLM chose to stop, or claimed what the numbers do not show). The planner
asks the planning LLM on its turns (`llm_turn`: the share of proposals the configuration gives it)
and the built-in search otherwise, and always when the LLM has nothing usable, so a run never
waits on an LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from services.planner.llm_plan import ask_plan, merge_decision
from services.planner.records import tokens_used
from services.planner.search import N_STARTUP_TRIALS, Hint, SearchBounds, local_move, propose
from shared.llm.client import LLMClient
from shared.messaging.messages import Goal, LLMCall, TrainingRecipe
from shared.registry.leaderboard import layer_counts
from shared.registry.records import (DEFAULT_METRIC, Decision, IterationRecord, Proposer as ProposerName, RunRecord,
                                     oriented)
from shared.runtime.config import Config


@dataclass(frozen=True)
class RunView:
    """What a proposer may see: the run, all its candidates (oldest first, those in flight
    included), the candidate number to propose, and the run's limits."""

    run: RunRecord
    history: list[IterationRecord]
    number: int
    max_epochs: int  # the goal's and the configuration's cap, whichever is lower
    num_train: int  # training samples per seed
    context: str = ""  # the planning LLM's view of the run (llm_plan.plan_context)

    @property
    def finished(self) -> list[IterationRecord]:
        """Candidates the run has a verdict on: parked at a cheap rung, or closed (decided); one just
        measured or rejected gets its verdict in the run's next pass."""
        return [h for h in self.history if h.state in ("parked", "decided")]


@dataclass(frozen=True)
class Proposal:
    model_config: dict
    proposer: ProposerName
    reasoning: str = ""
    search_params: dict | None = None  # the built-in search's trial, kept so it can rebuild its study
    calls: list[LLMCall] = field(default_factory=list)
    decided_after: int | None = None  # the candidate whose outcome the planning LLM decided on
    decision: Decision | None = None  # that decision (recorded on that candidate)

    def describe(self) -> str:
        """One line for the run's events: the class, its layers by kind, and the recipe."""
        config = self.model_config
        recipe = TrainingRecipe.from_model_config(config)
        return (f"{config.get('class_name', 'model')} ({layer_counts(config)}, "
                f"{recipe.optimizer} lr={recipe.lr:.2g}, {recipe.epochs} epochs)")


@dataclass(frozen=True)
class Declined:
    """The proposer tried and its answer cannot be used; the built-in search proposes instead."""

    why: str
    calls: list[LLMCall] = field(default_factory=list)


@dataclass(frozen=True)
class Abstained:
    """The planning LLM decided instead of proposing: to stop the run, or (a claim of success the
    numbers do not support) nothing the run can act on; the built-in search proposes then."""

    decision: Decision
    decided_after: int
    calls: list[LLMCall] = field(default_factory=list)


class Proposer(Protocol):
    name: ProposerName

    async def propose(self, view: RunView) -> Proposal | Declined | Abstained: ...


def llm_turn(number: int, share: float) -> bool:
    """Whether candidate `number` is the planning LLM's to propose: the first, and then every
    candidate where the share's running count reaches a new whole number (0.25: 4, 8, 12, ...)."""
    return number == 1 or math.floor(number * share) > math.floor((number - 1) * share)


class PlanningLLM:
    """The planning LLM: a run's first configuration, then on its turns a decision on the latest
    finished candidate, with the next configuration (or a stop)."""

    name: ProposerName = "llm"

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    async def propose(self, view: RunView) -> Proposal | Declined | Abstained:
        facts = view.run.dataset_facts
        assert facts is not None  # a run without facts has failed before any proposal
        finished = view.finished
        last = max(finished, key=lambda h: (h.finished_at or 0.0, h.iteration)) if finished else None
        answer = await ask_plan(self.client, view.context, facts, view.max_epochs,
                                iteration=last.iteration if last else None,
                                tokens_used=tokens_used(view.history, "planning"))
        if answer.value is None:
            what = "decision" if last else "proposal"
            return Declined(why=f"the planning LLM's {what} could not be used ({answer.error})", calls=answer.calls)
        if last is None:
            return Proposal(model_config=answer.value.model_config or {}, proposer=self.name,
                            reasoning=answer.value.reasoning, calls=answer.calls)
        # the numbers' own verdict on that candidate, which a claim of success is measured against
        measured = last.decision if last.decision is not None and last.decision.action == "iterate" else Decision(
            action="iterate", reasoning=f"candidate {last.iteration} has not met the target at the full budget")
        decision = merge_decision(measured, answer.value)
        if decision.next_config:
            return Proposal(model_config=decision.next_config, proposer=self.name, reasoning=answer.value.reasoning,
                            calls=answer.calls, decided_after=last.iteration, decision=decision)
        return Abstained(decision=decision, decided_after=last.iteration, calls=answer.calls)


def progress_score(h: IterationRecord, metric: str = DEFAULT_METRIC) -> float | None:
    """A candidate's mean of `metric` (the goal's) at the highest rung it finished (what the search
    learns from, at every fidelity); None when it has none."""
    evaluations = [p.evaluation for p in h.passed] + ([h.evaluation] if h.state in ("evaluated", "parked", "decided")
                                                      else [])
    for evaluation in reversed(evaluations):
        if evaluation is not None:
            return evaluation.summary(metric).mean
    return None


def search_score(h: IterationRecord, goal: Goal) -> float | None:
    """`progress_score` on the goal's metric turned so that higher is better: what the search maximises."""
    return oriented(progress_score(h, goal.goal_metric), goal.lower_is_better)


def incumbent(history: list[IterationRecord], goal: Goal) -> IterationRecord | None:
    """The run's best candidate: the best at the full budget, else the furthest and best of the cheap rungs."""
    full = [h for h in history if h.goal_score(goal) is not None]
    if full:
        return max(full, key=lambda h: (oriented(h.goal_score(goal), goal.lower_is_better), -h.iteration))
    scored = [h for h in history if search_score(h, goal) is not None]
    return max(scored, key=lambda h: (len(h.passed), search_score(h, goal), -h.iteration), default=None)


def hint(h: IterationRecord) -> Hint | None:
    """What the candidate's learning curves at the full budget say, by most of its seeds (a cheap
    rung's few epochs are still improving by nature: they say nothing about its full training)."""
    full = h.evaluation if h.rung is None else None
    rows = [s.dynamics for s in (full.seed_results if full else []) if s.dynamics]
    if not rows:
        return None
    if sum(d.overfitting.detected and d.overfitting.severity in ("moderate", "severe") for d in rows) * 2 > len(rows):
        return "overfitting"
    if sum(d.convergence.status == "still_improving" for d in rows) * 2 > len(rows):
        return "still_improving"
    return None


class BuiltinSearch:
    """TPE over small CNNs and MLPs with the candidates in flight as running trials (search.py),
    and, on a share of its turns, a local move from the run's best candidate."""

    name: ProposerName = "builtin"

    def __init__(self, config: Config) -> None:
        self.min_epochs, self.local_share = config.planner.min_epochs, config.planner.local_share

    async def propose(self, view: RunView) -> Proposal:
        seed = int(hashlib.sha256(view.run.run_id.encode()).hexdigest()[:8], 16)
        facts = view.run.dataset_facts
        assert facts is not None
        bounds = SearchBounds(min_epochs=min(self.min_epochs, view.max_epochs), max_epochs=view.max_epochs,
                              num_train=view.num_train)
        searched = [h for h in view.history if h.search_params]
        goal = view.run.goal
        measured = [(h.search_params, search_score(h, goal)) for h in searched
                    if not h.in_flight or search_score(h, goal) is not None]  # a rejected one is told as failed
        pending = [h.search_params for h in searched if h.in_flight and search_score(h, goal) is None]
        best = incumbent(view.history, goal)
        local = random.Random(seed * 7919 + view.number).random() < self.local_share
        if best is not None and best.search_params and local and len(measured) >= N_STARTUP_TRIALS:
            score = best.goal_score(goal)
            cheap = best.passed[-1].index if best.evaluation is None and best.passed else best.rung
            label = (f"candidate {best.iteration}, the best so far ({goal.goal_metric} "
                     + (f"{score:.4f} at the full budget" if score is not None else
                        f"{progress_score(best, goal.goal_metric):.4f} at its cheap rung {cheap}") + ")")
            found = local_move(facts, best.search_params, hint=hint(best), seed=seed + view.number, bounds=bounds,
                               label=label)
            if all(found.params != h.search_params for h in searched):  # a move already made: TPE instead
                return Proposal(model_config=found.model_config, proposer=self.name, search_params=found.params,
                                reasoning=found.reasoning)
        found = await asyncio.to_thread(propose, facts, measured, seed=seed, bounds=bounds, pending=pending)
        return Proposal(model_config=found.model_config, proposer=self.name, search_params=found.params,
                        reasoning=found.reasoning)
