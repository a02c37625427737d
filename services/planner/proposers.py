"""The one seam through which the planner chooses what to try next.

A proposer looks at a run and its history and either proposes a model_config, declines with a
reason (its answer could not be used: the run's events say why), or abstains (it has nothing to
say at this point). The planner asks its proposers in order and takes the first proposal; the
built-in search comes last and always proposes, so a run never waits on an LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from services.planner.llm_plan import ask_plan, plan_context
from services.planner.records import tokens_used
from services.planner.search import SearchBounds, propose
from shared.llm.client import LLMClient
from shared.messaging.messages import LLMCall, TrainingRecipe
from shared.registry.records import IterationRecord, Proposer as ProposerName, RunRecord
from shared.runtime.config import Config


@dataclass(frozen=True)
class RunView:
    """What a proposer may see: the run, its iterations so far (oldest first), and its limits."""

    run: RunRecord
    history: list[IterationRecord]
    max_epochs: int  # the goal's and the configuration's cap, whichever is lower
    num_train: int  # training samples per seed

    @property
    def next_iteration(self) -> int:
        return self.run.current_iteration + 1


@dataclass(frozen=True)
class Proposal:
    model_config: dict
    proposer: ProposerName
    reasoning: str = ""
    search_params: dict | None = None  # the built-in search's trial, kept so it can rebuild its study
    calls: list[LLMCall] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the run's events: the class, its layers by kind, and the recipe."""
        config = self.model_config
        kinds = [layer.get("type", "?") for layer in config.get("layers", []) if isinstance(layer, dict)]
        recipe = TrainingRecipe.from_model_config(config)
        return (f"{config.get('class_name', 'model')} ({kinds.count('Conv2d')} conv, {kinds.count('Linear')} linear, "
                f"{recipe.optimizer} lr={recipe.lr:.2g}, {recipe.epochs} epochs)")


@dataclass(frozen=True)
class Declined:
    """The proposer tried and its answer cannot be used; the next one proposes instead."""

    why: str
    calls: list[LLMCall] = field(default_factory=list)


class Proposer(Protocol):
    name: ProposerName

    async def propose(self, view: RunView) -> Proposal | Declined | None: ...


class PlanningLLM:
    """The planning LLM proposes a run's first configuration; later ones it chose (and the
    planner checked) when it decided the previous iteration."""

    name: ProposerName = "llm"

    def __init__(self, client: LLMClient, config: Config) -> None:
        self.client, self.history_limit = client, config.llm.history_limit

    async def propose(self, view: RunView) -> Proposal | Declined | None:
        last = view.history[-1].decision if view.history else None
        if last is not None and last.next_config:
            return Proposal(model_config=last.next_config, proposer=self.name, reasoning=last.reasoning)
        if view.history and not view.run.goal.require_llm:
            return None  # it was asked when the last iteration was decided and chose no config
        # first, or (where the run requires the LLM) after a decision that chose no config: asked now
        facts = view.run.dataset_facts
        assert facts is not None  # a run without facts has failed before any proposal
        context = plan_context(view.run.goal, facts, view.num_train, view.history, view.run.best_iteration,
                               view.max_epochs, self.history_limit)
        answer = await ask_plan(self.client, context, facts, view.max_epochs, iteration=None,
                                tokens_used=tokens_used(view.history, "planning"))
        if answer.value is None:
            return Declined(why=f"the planning LLM's proposal could not be used ({answer.error})", calls=answer.calls)
        return Proposal(model_config=answer.value.model_config or {}, proposer=self.name,
                        reasoning=answer.value.reasoning, calls=answer.calls)


class BuiltinSearch:
    """Optuna TPE over small CNNs and MLPs, rebuilt from the run's history at every call (search.py)."""

    name: ProposerName = "builtin"

    def __init__(self, config: Config) -> None:
        self.min_epochs = config.planner.min_epochs

    async def propose(self, view: RunView) -> Proposal:
        seed = int(hashlib.sha256(view.run.run_id.encode()).hexdigest()[:8], 16)
        trials = [(h.search_params, h.evaluation.summary().mean if h.evaluation else None)
                  for h in view.history if h.search_params]
        bounds = SearchBounds(min_epochs=min(self.min_epochs, view.max_epochs), max_epochs=view.max_epochs,
                              num_train=view.num_train)
        facts = view.run.dataset_facts
        assert facts is not None
        found = await asyncio.to_thread(propose, facts, trials, seed=seed, bounds=bounds)
        return Proposal(model_config=found.model_config, proposer=self.name, search_params=found.params)


def proposers(config: Config, planning: LLMClient | None) -> list[Proposer]:
    """In the order they are asked: the planning LLM where one is configured, then the search."""
    return [*([PlanningLLM(planning, config)] if planning else []), BuiltinSearch(config)]


async def choose(chain: list[Proposer], view: RunView) -> tuple[Proposal, list[Declined]]:
    """The first proposal along the chain, and the declines met on the way (their LLM calls are
    the iteration's too)."""
    declined: list[Declined] = []
    for proposer in chain:
        answer = await proposer.propose(view)
        if isinstance(answer, Proposal):
            return answer, declined
        if isinstance(answer, Declined):
            declined.append(answer)
    raise RuntimeError("no proposer proposed: the built-in search must come last")  # a wiring fault
