"""The simulation core of `make bench-search`: one search (a run of the planner) on one problem
under one policy, with real training and a simulated clock.

The policy is the planner's own: the run driver's schedule (services/planner/driver.py:
`fidelity.plan` over `trial_of` of in-memory IterationRecords, promotions, proposals, verdicts by
`decide`) is replayed here step for step, and proposals come from the built-in search
(`BuiltinSearch.propose` on a `RunView`, or `search.propose(..., sampler="random")`). Only the
NATS round trips and the registry are left out: records live in a dict.

Training is real, in this process: each seed job builds its model from the search's model_config
with the deterministic assembler (shared/modelspec/assemble.py, the project's own code generated
from a config, never an LLM's, so running it outside the sandbox is acceptable for a benchmark),
splits the data with the trusted pipeline (`split`, honouring the recipe's `standardize`), trains
with the engine (`train_model`) and scores with the evaluator's own functions (`epoch_curve`,
`seed_result`, `summarise`), learning dynamics included (the local moves read them).

The clock: jobs run one after another on this machine, each timed; the wall time of the search
is then what R evaluator replicas sharing one FIFO work queue would take with those durations
(list scheduling in dispatch order), plus a fixed per-job overhead if asked (container start,
queueing). The planner's own time (proposals) is not on that clock.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import dataclass, field

import msgspec
import torch

from services.planner import fidelity
from services.planner.decide import best_of, decide
from services.planner.driver import trial_of
from services.planner.proposers import BuiltinSearch, Proposal, RunView, progress_score
from services.planner.search import SearchBounds, Sampler, propose
from shared.data.datasets import Dataset, Split, split
from shared.evaluation.aggregate import summarise
from shared.evaluation.quick_eval import QuickEvalConfig, epoch_curve, seed_result
from shared.evaluation.trainloop import TrainSettings, train_model
from shared.messaging.messages import Goal, SeedResult, TrainingRecipe
from shared.modelspec.assemble import ConfigError, assemble
from shared.registry.records import Decision, Evaluation, IterationRecord, RungResult, RungSpec, RunRecord
from shared.runtime.config import Config, DataConfig, PlannerConfig

replace = msgspec.structs.replace
PATIENCE = 1000  # the goal's patience: the budget, not `no_progress`, ends a search here


@dataclass(frozen=True)
class Policy:
    name: str
    parallel: int  # candidates in flight
    lower_rungs: int  # successive halving's cheap rungs (0: every candidate at full budget)
    reduction_factor: int
    local_share: float  # share of proposals that are local moves from the incumbent
    sampler: Sampler = "tpe"


def policies(planner: PlannerConfig = PlannerConfig()) -> list[Policy]:
    """The new search (the planner's defaults), the old sequential TPE, and random search."""
    eta = planner.reduction_factor
    return [Policy("new", planner.parallel, planner.lower_rungs, eta, planner.local_share),
            Policy("old", 1, 0, eta, 0.0),
            Policy("random", 1, 0, eta, 0.0, sampler="random")]


@dataclass(frozen=True)
class Problem:
    """A goal: its data (the whole set; `subset_size` is drawn per seed, as the pipeline does)."""

    name: str
    dataset: Dataset
    target: float  # on the mean validation accuracy over the goal's seeds
    num_seeds: int = 2
    max_epochs: int = 20
    subset_size: int | None = None
    val_fraction: float = DataConfig().val_fraction


@dataclass
class Trainer:
    """Seed jobs in this process, each result kept by (config, epochs, seed): training is
    deterministic on the CPU, so a configuration two searches both try trains once."""

    settings: QuickEvalConfig = field(default_factory=QuickEvalConfig)
    jobs: int = 0  # trained, not cached
    _splits: dict[tuple, Split] = field(default_factory=dict)
    _results: dict[tuple, tuple[SeedResult, float]] = field(default_factory=dict)

    def data(self, problem: Problem, seed: int, standardize: bool) -> Split:
        key = (problem.name, seed, standardize)
        if key not in self._splits:
            self._splits[key] = split(problem.dataset, seed, problem.val_fraction, problem.subset_size,
                                      standardize=standardize)
        return self._splits[key]

    def seed(self, problem: Problem, source: str, class_name: str, recipe: TrainingRecipe,
             seed: int) -> tuple[SeedResult, float]:
        """-> (the seed's result, seconds the job took here)."""
        key = (problem.name, source, msgspec.json.encode(recipe), seed)
        if key not in self._results:
            started = time.perf_counter()
            data = self.data(problem, seed, recipe.standardize)
            namespace: dict = {}
            exec(compile(source, f"<{class_name}>", "exec"), namespace)  # the assembler's own code (module docstring)
            torch.manual_seed(seed)  # the model's initialisation is part of the seed, as in the harness
            model = namespace[class_name]()
            settings = TrainSettings(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                                     optimizer=recipe.optimizer, weight_decay=recipe.weight_decay, seed=seed,
                                     augment=recipe.augment, class_weights=recipe.class_weights)
            out = train_model(model, data.x_train, data.y_train, data.x_val, settings, torch.device("cpu"))
            base = dict(job_id=f"bench.{seed}", run_id="bench", iteration=0, seed=seed)
            if out.failure:
                result = SeedResult(**base, ok=False, error=out.failure["error"], reason=out.failure["reason"])
            else:
                curve = epoch_curve(out.curve, out.val_probs_per_epoch, data.y_val, problem.dataset.num_classes)
                result = replace(seed_result(seed, data.y_val, out.val_probs, problem.dataset.class_names, curve,
                                             self.settings), **base, train_time_s=out.train_time_s)
            self._results[key] = (result, time.perf_counter() - started)
            self.jobs += 1
        return self._results[key]


class Cluster:
    """R evaluator replicas taking seed jobs from one FIFO queue: a job dispatched at `now` starts
    when the first replica is free (jobs arrive in time order, so this is the queue's order)."""

    def __init__(self, replicas: int, overhead_s: float = 0.0) -> None:
        self.free = [0.0] * replicas  # when each replica is next free, simulated seconds
        self.overhead_s = overhead_s

    def run(self, now: float, duration_s: float) -> float:
        """-> when the job finishes."""
        i = min(range(len(self.free)), key=self.free.__getitem__)
        self.free[i] = max(now, self.free[i]) + duration_s + self.overhead_s
        return self.free[i]


@dataclass
class Outcome:
    policy: str
    problem: str
    search_seed: int
    reached: bool = False
    status: str = ""
    spent: int = 0  # seed-epochs dispatched by the end
    to_target: int | None = None  # seed-epochs dispatched when the target was met
    best: float | None = None  # best mean validation accuracy at the full budget
    candidates: int = 0
    full_evaluations: int = 0
    sim_wall_s: float = 0.0  # simulated seconds to the end, R replicas
    sim_to_target_s: float | None = None
    real_s: float = 0.0  # seconds this search took here (training serial, cache hits free)


class RandomSearch:
    """Random search over the built-in space: BuiltinSearch's inputs, the random sampler, no local moves."""

    name = "builtin"

    def __init__(self, config: Config) -> None:
        self.min_epochs = config.planner.min_epochs

    async def propose(self, view: RunView) -> Proposal:
        facts = view.run.dataset_facts
        assert facts is not None
        seed = int(hashlib.sha256(view.run.run_id.encode()).hexdigest()[:8], 16)  # as BuiltinSearch seeds itself
        bounds = SearchBounds(min_epochs=min(self.min_epochs, view.max_epochs), max_epochs=view.max_epochs,
                              num_train=view.num_train)
        measured = [(h.search_params, progress_score(h)) for h in view.history if h.search_params and not h.in_flight]
        found = propose(facts, measured, seed=seed, bounds=bounds, sampler="random")
        return Proposal(model_config=found.model_config, proposer=self.name, search_params=found.params,
                        reasoning=found.reasoning)


class Search:
    """One run of the planner's driver, replayed in memory (driver.RunDriver's _schedule,
    _promote, _propose and _verdict, without the I/O)."""

    def __init__(self, policy: Policy, problem: Problem, search_seed: int, budget: int, trainer: Trainer,
                 cluster: Cluster) -> None:
        self.policy, self.problem, self.trainer, self.cluster = policy, problem, trainer, cluster
        self.settings = PlannerConfig(parallel=policy.parallel, lower_rungs=policy.lower_rungs,
                                      reduction_factor=policy.reduction_factor, local_share=policy.local_share)
        config = Config(planner=self.settings)
        self.proposer = RandomSearch(config) if policy.sampler == "random" else BuiltinSearch(config)
        # the same run id for every policy: the searches of one seed start from the same sampler seed
        goal = Goal(run_id=f"bench-{problem.name}-{search_seed}", goal=problem.name, dataset=problem.name,
                    target_accuracy=problem.target, max_iterations=1000, num_seeds=problem.num_seeds,
                    patience=PATIENCE, subset_size=problem.subset_size, max_epochs=problem.max_epochs,
                    epoch_budget=budget, parallel=policy.parallel)
        self.run = RunRecord(run_id=goal.run_id, goal=goal, dataset_facts=problem.dataset.facts())
        self.max_epochs = min(self.settings.max_epochs, goal.max_epochs)
        self.num_train = self.run.dataset_facts.num_train(problem.val_fraction, problem.subset_size)
        self.records: dict[int, IterationRecord] = {}
        self.done: list[tuple[float, int, Evaluation | None]] = []  # heap: (simulated finish, iteration, result)
        self.now = 0.0
        self.outcome = Outcome(policy.name, problem.name, search_seed)

    def history(self) -> list[IterationRecord]:
        return [self.records[n] for n in sorted(self.records)]

    def _ladder(self, epochs: int) -> list[fidelity.Rung]:
        return fidelity.ladder(epochs, self.run.goal.num_seeds, self.settings.lower_rungs, self.settings.reduction_factor)

    async def go(self) -> Outcome:
        started = time.perf_counter()
        while await self._schedule():
            self.now = self.done[0][0]
            while self.done and self.done[0][0] == self.now:  # every result of this instant, then a pass
                _, n, evaluation = heapq.heappop(self.done)
                it = self.records[n]
                if evaluation is None:  # rejected by the assembler
                    self.records[n] = replace(it, state="rejected")
                else:
                    self.records[n] = replace(it, state="evaluated", evaluation=evaluation, finished_at=self.now)
                if not self._verdict(self.records[n]):
                    break
        out = self.outcome
        out.real_s = time.perf_counter() - started
        out.sim_wall_s = self.now
        out.spent = fidelity.spent([trial_of(h, self.run.goal) for h in self.history()])
        out.candidates = len(self.records)
        out.full_evaluations = sum(1 for h in self.records.values() if h.score("mean") is not None)
        out.best = best_of(self.run.goal, self.history())[1]
        return out

    # ---- driver._schedule ----
    async def _schedule(self) -> bool:
        """Promote and propose as the driver does; -> False when the run ended (budget spent)."""
        if self.outcome.status:
            return False
        biggest = self._ladder(self.max_epochs)
        trials = [trial_of(h, self.run.goal) for h in self.history()]
        plan = fidelity.plan(trials, parallel=self.policy.parallel, budget=self.run.goal.epoch_budget or 0,
                             new_cost=biggest[0].cost, reserve=biggest[-1].cost if len(biggest) > 1 else 0,
                             eta=self.settings.reduction_factor, target=self.run.goal.target_accuracy)
        for p in plan.promote:
            self._promote(self.records[p.trial.number], p.trial, p.to)
        for _ in range(plan.propose):
            await self._propose()
        if not self.done:
            self.outcome.status = "budget_spent"
            return False
        return True

    def _promote(self, it: IterationRecord, trial: fidelity.Trial, nxt: fidelity.Rung) -> None:
        assert it.evaluation is not None
        passed = RungResult(index=it.rung, epochs=trial.rung.epochs, seeds=it.seeds, evaluation=it.evaluation)
        self.records[it.iteration] = it = replace(it, state="evaluating", rung=nxt.index, seeds=list(nxt.seeds),
                                                  evaluation=None, passed=[*it.passed, passed], finished_at=None)
        self._dispatch(it, nxt)

    async def _propose(self) -> None:
        n = len(self.records) + 1
        view = RunView(run=self.run, history=self.history(), number=n, max_epochs=self.max_epochs,
                       num_train=self.num_train)
        proposal = await self.proposer.propose(view)
        rungs = self._ladder(int(proposal.model_config.get("epochs") or 1))
        first = rungs[0]
        it = IterationRecord(run_id=self.run.run_id, iteration=n, state="evaluating", model_config=proposal.model_config,
                             search_params=proposal.search_params, seeds=list(first.seeds), rung=first.index,
                             ladder=[RungSpec(index=r.index, epochs=r.epochs, seeds=list(r.seeds)) for r in rungs],
                             reasoning=proposal.reasoning, started_at=self.now)
        self.records[n] = it
        self._dispatch(it, first)

    def _dispatch(self, it: IterationRecord, rung: fidelity.Rung) -> None:
        """Train every seed of the rung now; the result arrives on the simulated clock."""
        try:
            built = assemble(it.model_config)
        except ConfigError:
            heapq.heappush(self.done, (self.now, it.iteration, None))
            return
        recipe = replace(TrainingRecipe.from_model_config(it.model_config), epochs=rung.epochs)
        results, finish = {}, self.now
        for seed in rung.seeds:
            result, seconds = self.trainer.seed(self.problem, built.source, built.class_name, recipe, seed)
            results[seed] = result
            finish = max(finish, self.cluster.run(self.now, seconds))
        heapq.heappush(self.done, (finish, it.iteration, summarise(results, list(rung.seeds))))

    # ---- driver._verdict ----
    def _verdict(self, it: IterationRecord) -> bool:
        """Park a cheap rung's result, or decide on a full one; -> False when the run ended."""
        if it.rung is not None:
            decision = None if it.state == "evaluated" else Decision(action="iterate", reasoning="rejected")
            self.records[it.iteration] = replace(it, state="parked" if decision is None else "decided", decision=decision)
            return True
        verdicts = sorted((h for h in self.history() if h.state == "decided" and h.rung is None and h.iteration != it.iteration),
                          key=lambda h: (h.finished_at or 0.0, h.iteration))
        decision, _, _ = decide(self.run.goal, [*verdicts, it])
        self.records[it.iteration] = replace(it, state="decided", decision=decision, finished_at=it.finished_at or self.now)
        if decision.status == "goal_achieved":
            out = self.outcome
            out.status, out.reached, out.sim_to_target_s = decision.status, True, self.now
            # what the run had dispatched when the verdict came, candidates still in flight included
            out.to_target = fidelity.spent([trial_of(h, self.run.goal) for h in self.history()])
            return False
        return True


async def simulate(policy: Policy, problem: Problem, search_seed: int, budget: int, trainer: Trainer,
                   replicas: int = 2, overhead_s: float = 0.0) -> Outcome:
    """One search to its end: the target met, or too little budget left for anything more."""
    return await Search(policy, problem, search_seed, budget, trainer, Cluster(replicas, overhead_s)).go()
