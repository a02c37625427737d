"""What the registry stores: runs, iterations and everything they carry, as typed records.

Schema evolution: only add fields with defaults; never change a field's type. Records written
before these types existed (plain objects under the same keys) decode into them unchanged; the
one shape that did change (a failed run's facts, once {}) is upgraded on read by `upgrade_run`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal

import msgspec

from shared.messaging.messages import (TERMINAL_STATUSES, DatasetFacts, EpochStats, Goal, GoalStatistic, LLMCall, ModelFacts, Narrative,
                                       RunStatus, SeedCost, ValidationResult, lower_is_better)

# parked: a cheap rung finished, and the candidate waits to be promoted (or not); decided: closed
IterationState = Literal["proposed", "assembled", "validated", "evaluating", "evaluated", "parked", "rejected",
                         "decided"]
IN_FLIGHT: frozenset[str] = frozenset({"proposed", "assembled", "validated", "evaluating"})
Proposer = Literal["builtin", "llm", "user"]  # user: a config queued by hand (`researcher queue`)
DEFAULT_METRIC = "val_accuracy"
MAX_QUEUED = 4  # configs queued by hand that may wait at once (each up to limits.MAX_CONFIG_BYTES)
MAX_STEERING = 200  # steering records a run keeps, the latest (its events carry every one)
MAX_BY_CHARS = 200  # who steered, as the asker said it


# ---- the statistics of one metric over seeds ----
class MetricSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Mean, sample std and the t-interval of one metric over the seeds that succeeded."""

    mean: float | None = None
    std: float | None = None
    ci_95: list[float] | None = None  # [low, high]; None with fewer than two values
    values: list[float] = []
    min: float | None = None
    max: float | None = None
    n: int = 0
    confidence_level: float = 0.95

    def statistic(self, name: GoalStatistic, lower: bool = False) -> float | None:
        """The number a goal is judged on: the mean, or the interval's cautious end ("ci_lower": its
        lower bound, or its upper bound for a `lower`-is-better metric such as a loss); None when
        there is none (no seed succeeded, or one seed and the interval was asked for)."""
        if self.n == 0:
            return None
        if name == "ci_lower":
            return (self.ci_95[1] if lower else self.ci_95[0]) if self.ci_95 else None
        return self.mean


EMPTY_SUMMARY = MetricSummary()


# ---- one seed's details, computed on the trusted side (shared.evaluation.metrics) ----
class ClassMetrics(msgspec.Struct, frozen=True, kw_only=True, rename={"class_name": "class"}):
    class_name: str
    index: int
    precision: float
    recall: float
    f1: float
    specificity: float
    support: int


class Confusion(msgspec.Struct, frozen=True, kw_only=True):
    true: str
    predicted: str
    count: int
    rate: float  # of the true class's samples


class ClassBalance(msgspec.Struct, frozen=True, kw_only=True):
    counts: list[int]
    imbalance_ratio: float
    imbalanced: bool
    note: str


class FinalScores(msgspec.Struct, frozen=True, kw_only=True):
    """The best seed's metrics and details (the spec's `final`)."""

    val_accuracy: float | None = None
    val_balanced_accuracy: float | None = None
    val_f1_macro: float | None = None
    val_f1_weighted: float | None = None
    val_precision_macro: float | None = None
    val_precision_weighted: float | None = None
    val_recall_macro: float | None = None
    val_recall_weighted: float | None = None
    val_loss: float | None = None
    val_roc_auc: float | None = None
    val_pr_auc: float | None = None
    # ---- the same on the held-out test split, in a run's final test ----
    test_accuracy: float | None = None
    test_balanced_accuracy: float | None = None
    test_f1_macro: float | None = None
    test_f1_weighted: float | None = None
    test_precision_macro: float | None = None
    test_precision_weighted: float | None = None
    test_recall_macro: float | None = None
    test_recall_weighted: float | None = None
    test_loss: float | None = None
    test_roc_auc: float | None = None
    test_pr_auc: float | None = None
    auc_kind: str | None = None  # binary | ovr
    auc_note: str | None = None  # why AUC is missing, when it is
    per_class: list[ClassMetrics] = []
    confusion_matrix: list[list[int]] | None = None  # (C, C), rows = true class
    confusion_matrix_normalized: list[list[float]] | None = None
    top_confusions: list[Confusion] = []
    class_balance: ClassBalance | None = None


# ---- learning dynamics of one seed (shared.evaluation.dynamics) ----
class Overfitting(msgspec.Struct, frozen=True, kw_only=True):
    detected: bool = False
    severity: str = "none"  # none, mild, moderate, severe
    gap: float | None = None  # train minus validation accuracy at the end
    val_loss_rise: float | None = None
    best_epoch: int | None = None


class Convergence(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # converged, still_improving, unstable
    metric: str | None = None
    reason: str = ""


class GradientNorms(msgspec.Struct, frozen=True, kw_only=True):
    mean: float | None = None
    max: float | None = None
    last: float | None = None
    exploding: bool = False
    vanishing: bool = False


class LearningDynamics(msgspec.Struct, frozen=True, kw_only=True):
    overfitting: Overfitting
    convergence: Convergence
    gradient_norms: GradientNorms | None = None
    insights: list[str] = []


# ---- an aggregated evaluation ----
class SeedFailure(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    error: str | None = None
    reason: str | None = None  # as SeedResult.reason; "missing" when no result arrived in time


class SeedRow(msgspec.Struct, frozen=True, kw_only=True):
    """One seed's line in an evaluation: its scalars, its cost, where it ran, how it learned."""

    seed: int
    ok: bool
    error: str | None = None
    reason: str | None = None
    metrics: dict[str, float | None] = {}
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    duration_s: float = 0.0
    evaluator: str = ""
    device: str = "cpu"
    dynamics: LearningDynamics | None = None
    started_at: float = 0.0  # when an evaluator took its job (its clock); it ended duration_s later
    runtime: str | None = None  # its container's OCI runtime (runsc: gVisor; runc), None before it was recorded
    image: str | None = None  # the sandbox image its container ran; None before it was recorded
    cost: SeedCost | None = None  # what its container used, measured from outside it; None: not measured


class Evaluation(msgspec.Struct, kw_only=True):
    """Every metric over the seeds that succeeded (shared.evaluation.aggregate.summarise)."""

    num_seeds: int
    aggregated: dict[str, MetricSummary] = {}  # metric name -> its statistics over seeds
    failed_seeds: list[SeedFailure] = []
    best_seed: int | None = None  # by the metric the goal is judged on
    final: FinalScores | None = None  # the best seed's metrics and details
    seed_results: list[SeedRow] = []
    learning_curves: dict[str, list[EpochStats]] = {}  # seed (as text) -> its curve
    plots: dict[str, str] = {}  # file name -> artifact name

    def summary(self, metric: str = DEFAULT_METRIC) -> MetricSummary:
        return self.aggregated.get(metric, EMPTY_SUMMARY)

    def score(self, statistic: GoalStatistic, metric: str = DEFAULT_METRIC) -> float | None:
        """The goal statistic of `metric`: what decisions and leaderboards compare."""
        return self.summary(metric).statistic(statistic, lower_is_better(metric))


# ---- the rest of an iteration ----
class CodeAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """Code the sandbox rejected at this iteration, kept for the record and for the next fix."""

    attempt: int
    assembler: str  # deterministic | llm
    code: str | None  # artifact name of the rejected source
    reason: str | None
    error: str


class ModelSummary(msgspec.Struct, frozen=True, kw_only=True):
    """summary.json: the measured facts, and the tools LLM's reading when it gave one."""

    facts: ModelFacts
    narrative: Narrative | None = None
    narrative_error: str | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    action: Literal["iterate", "goal_achieved", "stop"]
    reasoning: str
    status: RunStatus | None = None  # the run status this decision ends with, if it ends the run
    proposer: Proposer = "builtin"  # who made the choice
    next_config: dict[str, Any] | None = None  # the planning LLM's config for the next iteration (checked)
    llm_action: str | None = None  # what the planning LLM answered, when it was asked
    llm_reasoning: str | None = None
    disagreement: str | None = None  # the LLM claimed what the statistics do not support


class RungSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One rung of a candidate's successive-halving ladder (services.planner.fidelity.Rung)."""

    index: int | None  # 0, 1, ... the cheap rungs; None the full budget
    epochs: int
    seeds: list[int]


class RungResult(msgspec.Struct, kw_only=True):
    """A cheap rung a candidate finished before it was promoted: what it scored there."""

    index: int
    epochs: int
    seeds: list[int]
    evaluation: Evaluation | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


class TestEvaluation(msgspec.Struct, kw_only=True):
    """The run's best candidate (chosen on validation) on the held-out test split, over all its
    seeds, once, when the run ends. The run stays running until it is done, then takes `status`."""

    __test__ = False  # not a pytest test class, wherever a test imports it

    iteration: int
    seeds: list[int]
    status: RunStatus  # the status the run ends with once tested
    reason: str  # why it ends, as the run's reason then says
    started_at: float
    evaluation: Evaluation | None = None  # test_* metrics over the seeds, once the results are in
    error: str | None = None  # why there are no test figures (no seed succeeded, none in time, a stop)
    finished_at: float | None = None


# ---- steering by hand (services/planner/steering.py) ----
class SteerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One action taken on a run by hand: stop, pause, resume, queue (SteerAction)."""

    action: str
    by: str  # as the asker gave it: "user@host with researcher pause", "NAME via the dashboard from ADDRESS"
    at: float  # seconds since the epoch
    detail: str = ""  # what it did, in a line (the stop's reason, the queued config's class)


class QueuedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A model_config queued by hand, checked and completed as a proposal is: the run's next
    candidate once its turn comes, ahead of the search and the planning LLM."""

    model_config: dict[str, Any]
    by: str
    at: float  # when it was queued, seconds since the epoch: also its identity in the queue


class RunRecord(msgspec.Struct, kw_only=True):
    run_id: str
    goal: Goal
    status: RunStatus = "running"
    error: str | None = None
    current_iteration: int = 0  # 0 = none started yet
    best_iteration: int | None = None
    best_score: float | None = None  # the goal statistic of the best iteration
    dataset_facts: DatasetFacts | None = None  # None when the data set could not be read
    llm_check: list[LLMCall] | None = None  # the check of each configured LLM at the start; None: not made
    reason: str | None = None  # why the run ended, in a sentence (set by the planner when it ends it)
    budget_epochs: int | None = None  # its compute budget in seed-epochs, as the planner set it at its first step
    test: TestEvaluation | None = None  # its best candidate on the test split; None: not (yet) tested
    # ---- steering by hand: paused, it starts and promotes no candidate and does not end by its own
    # decisions (a stop still ends it); the configs queued by hand, oldest first; every action taken ----
    paused: bool = False
    queued: list[QueuedConfig] = []
    steering: list[SteerRecord] = []
    created_at: float = msgspec.field(default_factory=time.time)
    finished_at: float | None = None


def better(a: float | None, b: float | None, lower: bool = False) -> bool:
    """Whether score `a` beats `b` (None never beats, and is beaten by any number)."""
    if a is None:
        return False
    return b is None or (a < b if lower else a > b)


def oriented(value: float | None, lower: bool) -> float | None:
    """A score turned so that higher is better (a loss negated), for code that ranks by maximum."""
    return None if value is None else (-value if lower else value)


def unless_ended(change: Callable[[RunRecord], RunRecord]) -> Callable[[RunRecord], RunRecord]:
    """`change` for a run that has not ended: an ended one (say, stopped by its interrupted
    command while a step was under way) stays as it ended."""
    return lambda run: run if run.status in TERMINAL_STATUSES else change(run)


class IterationRecord(msgspec.Struct, kw_only=True):
    run_id: str
    iteration: int
    state: IterationState = "proposed"
    proposer: Proposer = "builtin"
    model_config: dict[str, Any] = {}  # the seed format the assembler builds (layers and recipe)
    search_params: dict[str, Any] | None = None  # the built-in search's trial parameters
    class_name: str = ""
    code_artifact: str | None = None  # object name in ARTIFACTS_BUCKET
    validation: ValidationResult | None = None
    seeds: list[int] = []  # of the rung it trains for
    evaluation: Evaluation | None = None  # of the rung it trains for (rung), once measured
    decision: Decision | None = None
    # ---- successive halving: the rung it trains for, its ladder, the cheaper rungs it passed ----
    rung: int | None = None  # None: the full budget (records before rungs trained at full budget)
    ladder: list[RungSpec] = []  # [] on records before rungs: the full budget alone
    passed: list[RungResult] = []  # the cheaper rungs it finished, oldest first
    reasoning: str = ""  # where the proposal came from, as its proposer said
    attempts: int = 0  # failed tries of the current step
    # ---- code generation and the LLMs ----
    assembler: str = ""  # deterministic | llm: who wrote the current code
    code_attempts: list[CodeAttempt] = []
    summary: ModelSummary | None = None
    llm_calls: list[LLMCall] = []  # every LLM call made for this iteration (prompts and replies as artifacts)
    started_at: float = msgspec.field(default_factory=time.time)
    finished_at: float | None = None

    def score(self, statistic: GoalStatistic, metric: str = DEFAULT_METRIC) -> float | None:
        """The goal statistic of `metric` of an iteration evaluated at the full budget; None when it
        was rejected, every seed failed, or it has not (yet) earned the full budget: cheap rungs
        never count."""
        return self.evaluation.score(statistic, metric) if self.evaluation and self.rung is None else None

    def goal_score(self, goal: Goal) -> float | None:
        """`score` as `goal` judges it: its statistic of its metric."""
        return self.score(goal.goal_statistic, goal.goal_metric)

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    @property
    def rungs(self) -> list[RungSpec]:
        return self.ladder or [RungSpec(index=None, epochs=int(self.model_config.get("epochs") or 0), seeds=self.seeds)]

    def compute(self) -> int:
        """Seed-epochs dispatched for it: the rungs it passed, and the one it trains for once queued."""
        current = next((r for r in self.rungs if r.index == self.rung), None)
        trained = self.state in ("evaluating", "evaluated", "parked") or (self.state == "decided" and self.evaluation)
        queued = current.epochs * len(current.seeds) if current and trained else 0
        return sum(p.epochs * len(p.seeds) for p in self.passed) + queued


# ---- records written before the types above ----
def upgrade_run(raw: dict[str, Any]) -> dict[str, Any]:
    """A failed run used to store its data set facts as {}."""
    if not raw.get("dataset_facts"):
        raw["dataset_facts"] = None
    return raw
