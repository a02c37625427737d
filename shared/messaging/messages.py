"""Every cross-service message, as msgspec Structs decoded strictly at the edge.

Schema evolution: only add fields with defaults; never change a field's type.
`model_config` travels as a plain JSON object (the seed format of the assembler) because
it is data a planner or an LLM writes, validated by the assembler, not by the schema.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Literal

import msgspec

# stopped: the planning LLM chose to end the run before its budget was spent, or the command that
# drove an embedded stack was interrupted (or killed: the next embedded stack on its home says so)
# budget_spent: a limit of the goal's own (CPU or GPU seconds, LLM tokens) was reached
RunStatus = Literal["running", "goal_achieved", "no_progress", "max_iterations", "budget_spent", "stopped", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"goal_achieved", "no_progress", "max_iterations", "budget_spent",
                                               "stopped", "failed"})
GoalStatistic = Literal["mean", "ci_lower"]
# The scalar metrics of a seed (shared.evaluation.metrics computes them), each one number per seed
# that aggregates over seeds; any of them may be a goal's metric.
SCALAR_METRICS: tuple[str, ...] = (
    "val_accuracy", "val_balanced_accuracy",
    "val_f1_macro", "val_f1_weighted",
    "val_precision_macro", "val_precision_weighted",
    "val_recall_macro", "val_recall_weighted",
    "val_loss", "val_roc_auc", "val_pr_auc",
)


# ---- the data and the training recipe ----
IMBALANCE_RATIO = 1.5  # largest/smallest class count above which accuracy misleads (and class weights may help)


class TextFacts(msgspec.Struct, frozen=True, kw_only=True):
    """A text data set as its models see it: token ids from a tokenizer, capped and padded to
    `max_length` (id `pad_id` is padding; a model's mask is `ids != pad_id`). Lengths are counted in
    tokens on the pool train and validation are drawn from (no labels), before capping."""

    tokenizer: str  # where the tokenizer comes from, e.g. "wordpiece trained on each seed's training split"
    vocab_size: int  # ids are in [0, vocab_size)
    max_length: int  # every sample's ids, capped and padded to this many
    pad_id: int = 0
    pair: bool = False  # two segments ("[CLS] a [SEP] b [SEP]"): sentence-pair tasks
    text_columns: list[str] = []  # the column (two for pairs) the text comes from
    mean_length: float = 0.0
    median_length: float = 0.0
    p95_length: float = 0.0
    longest: int = 0
    truncated_share: float = 0.0  # samples longer than max_length, cut to it


class ColumnFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One column of a table and what its encoding makes of it (no values that could be labels)."""

    name: str
    kind: str  # "numeric" | "category" | "dropped"
    width: int = 1  # input features it becomes (one-hot slots and a missing indicator count); 0 when dropped
    distinct: int = 0  # distinct values in the pool (numeric: 0, not counted)
    missing: int = 0  # blank cells in the pool, imputed with the training split's statistics
    note: str = ""  # why a column is dropped (free text, an identifier, all blank), or how it is read


class DatasetFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the planner, the search and the LLMs may know of a data set: never its labels."""

    name: str
    kind: Literal["image", "tabular", "text"]
    # without the batch dimension: (C, H, W) for images, (F,) for tables (F after encoding), (L,) for
    # text (token ids, L = text.max_length)
    input_shape: list[int]
    num_classes: int
    num_samples: int  # the pool train and validation are drawn from (the test split is apart), before any subset
    class_names: list[str] = []
    # the held-out test split, never seen by the search: "official" (the data set's own test files)
    # or "held_out" (drawn once per run from the data, stratified); "" on records before it existed
    test_source: str = ""
    num_test: int = 0
    test_note: str = ""  # why a set with official test files holds out a split instead ("" when it does not)
    test_digest: str = ""  # which test split (Dataset.test_digest): every job carries it, each evaluator checks it
    # samples per class in the pool num_samples counts (class_names' order), so the search and the LLMs
    # can weigh an imbalanced set's classes. Counts are no sample's label: they say how many, never
    # which; the split is stratified, so every seed's training split has these proportions anyway.
    # [] on records before it existed: read as balanced.
    class_counts: list[int] = []
    # the inputs' dtype as models receive them: "float32" (images, tables) or "int64" (token ids)
    input_dtype: Literal["float32", "int64"] = "float32"
    text: TextFacts | None = None  # for kind "text"
    columns: list[ColumnFacts] = []  # for a table read from a file: each column and its encoding
    notes: list[str] = []  # what loading decided that a researcher should know (columns dropped, ...)
    # the data settings an encoded set is encoded with (a text set's tokenizer, vocab_size and max_length):
    # every job carries them, and an evaluator whose own differ refuses the job; "" for sets that need none
    encoding_settings: str = ""

    @property
    def vocab_size(self) -> int:
        """Token ids are in [0, vocab_size) for text; 0 for other kinds."""
        return self.text.vocab_size if self.text else 0

    def columns_summary(self) -> str:
        """A table's columns in one line, for the report and the planning LLM ("" for other data)."""
        if not self.columns:
            return ""
        parts = []
        for kind, label in (("numeric", "numeric"), ("category", "categories"), ("dropped", "dropped")):
            named = [c.name + (" (blanks)" if c.missing and kind != "dropped" else "")
                     for c in self.columns if c.kind == kind]
            if named:
                shown = ", ".join(named[:8]) + (f", ... ({len(named) - 8} more)" if len(named) > 8 else "")
                parts.append(f"{len(named)} {label}: {shown}")
        line = f"{len(self.columns)} columns -> {self.input_shape[0]} features; " + "; ".join(parts)
        return "; ".join([line, *self.notes])

    def text_summary(self) -> str:
        """A text set's tokens in one line, for the report ("" for other data)."""
        t = self.text
        if t is None:
            return ""
        return (f"{'sentence pairs' if t.pair else 'texts'} ({', '.join(t.text_columns)}) -> {t.max_length} token ids "
                f"from {t.tokenizer}, vocabulary {t.vocab_size:,}; lengths mean {t.mean_length:g}, p95 {t.p95_length:g}, "
                f"longest {t.longest}, {t.truncated_share:.1%} cut")

    def imbalance_ratio(self) -> float:
        """Largest over smallest class count (of the classes present); 1.0 when the counts are unknown."""
        present = [c for c in self.class_counts if c > 0]
        return max(present) / min(present) if present else 1.0

    @property
    def imbalanced(self) -> bool:
        return self.imbalance_ratio() > IMBALANCE_RATIO

    def num_train(self, val_fraction: float, subset_size: int | None = None) -> int:
        """Training samples of one seed: the part of the (subset of the) set left after validation."""
        drawn = min(self.num_samples, subset_size) if subset_size else self.num_samples
        return int(drawn * (1 - val_fraction))

    def smallest_subset(self, val_fraction: float) -> int:
        """The fewest samples a stratified train/validation split of this set can take: each class
        needs a sample on both sides (the validation side is ceil(n * val_fraction), as
        scikit-learn rounds it)."""
        n = 2 * self.num_classes
        while math.ceil(n * val_fraction) < self.num_classes or n - math.ceil(n * val_fraction) < self.num_classes:
            n += 1
        return n


Optimizer = Literal["adam", "adamw", "sgd"]


class TrainingRecipe(msgspec.Struct, frozen=True, kw_only=True):
    """How a candidate is trained. These defaults are the only ones: the CLIs' flags, the LLM's
    checks, the evaluation jobs, the search and the in-process engine all read them from here."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    weight_decay: float = 0.0
    augment: bool = False  # random crop and flip of image batches during training
    # inputs scaled to (x - mean) / std with the training split's statistics (per feature for tables,
    # per channel for images), by the trusted data pipeline; False trains on the raw values
    standardize: bool = True
    # the training loss weighs each class by n_samples / (n_classes * its count) in the training split
    # (scikit-learn's "balanced"): a rare class counts as much as a common one
    class_weights: bool = False

    @classmethod
    def from_model_config(cls, config: dict[str, Any]) -> "TrainingRecipe":
        """The recipe a (checked) model_config carries beside its layers; what it leaves out takes
        the defaults."""
        fields = {k: config[k] for k in cls.__struct_fields__ if k in config}
        return msgspec.convert(fields, cls, strict=False)


DEFAULT_RECIPE = TrainingRecipe()


class Goal(msgspec.Struct, frozen=True, kw_only=True):
    """A researcher's goal: submitted on GOAL_SUBMIT_SUBJECT (answered) or published on
    GOALS_SUBJECT. Every field's range is in GOAL_LIMITS; `goal_problems` checks them all."""

    run_id: str
    goal: str
    dataset: str = "digits"
    target_accuracy: float = 0.95  # in (0, 1]; a goal worth a search on the default digits data
    max_iterations: int = 5
    # Five seeds: the 95% t-interval is 1.24 standard deviations either side of the mean, where two
    # seeds' is 9.0 (t = 12.7 / sqrt(2)): wide enough to stop a run on an interval like [0.81, 1.00].
    num_seeds: int = 5
    patience: int = 3  # iterations without a better best before `no_progress`
    goal_statistic: GoalStatistic = "mean"
    subset_size: int | None = None  # samples drawn from the data set; None = all
    max_epochs: int = 20
    submitted_at: float = 0.0
    # fail the run instead of falling back when a configured LLM cannot be used (the check at the
    # start, a proposal, a decision, code): for measuring a model, not only getting a result
    require_llm: bool = False
    parallel: int | None = None  # candidates in flight at once; None: the stack's planner.parallel
    # the run's compute budget in seed-epochs (one seed trained for one epoch); None: max_iterations
    # full evaluations at the longest training, max_iterations x num_seeds x max_epochs (`budget_epochs`)
    epoch_budget: int | None = None
    # ---- the metric the goal is judged on (SCALAR_METRICS' names; loss is lower-is-better) and its
    # target; None: target_accuracy, the older field, which is then the target of this metric ----
    goal_metric: str = "val_accuracy"
    target: float | None = None
    # ---- the goal's own budgets, measured (the containers' cgroups, the LLM servers' token counts);
    # a run that reaches one ends budget_spent. None: no limit ----
    max_cpu_s: float | None = None
    max_gpu_s: float | None = None
    max_llm_tokens: int | None = None

    @property
    def target_value(self) -> float:
        """The target of goal_metric."""
        return self.target_accuracy if self.target is None else self.target

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.goal_metric)


def lower_is_better(metric: str) -> bool:
    """A loss improves downwards; every other metric (accuracy, F1, AUC, ...) upwards."""
    return metric.endswith("loss")


RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# (lowest, highest) of each integer field of a goal, both included
GOAL_LIMITS: dict[str, tuple[int, int]] = {
    "max_iterations": (1, 1000), "num_seeds": (1, 100), "patience": (1, 1000), "max_epochs": (1, 1000),
    "subset_size": (10, 100_000_000), "parallel": (1, 64), "epoch_budget": (1, 100_000_000),
    "max_llm_tokens": (1, 10_000_000_000),
}
OPTIONAL_LIMITS = frozenset({"subset_size", "parallel", "epoch_budget", "max_llm_tokens"})  # None: no limit
MAX_SECONDS = 10_000_000.0  # a compute budget's cap (about 116 days)
MAX_GOAL_CHARS = 4000


def goal_problems(goal: Goal) -> list[str]:
    """Every problem of a goal, each naming the field and its allowed range; [] when it is sound.
    (Whether its data set exists is the data's business: see shared.data.datasets.dataset_key.)"""
    problems = []
    if not RUN_ID.match(goal.run_id):
        problems.append(f"run_id must be 1-64 letters, digits, '-' or '_', not {goal.run_id!r}")
    if not goal.goal.strip() or len(goal.goal) > MAX_GOAL_CHARS:
        problems.append(f"goal must be a description of 1 to {MAX_GOAL_CHARS} characters")
    if not goal.dataset.strip():
        problems.append("dataset must name a data set")
    if goal.goal_metric not in SCALAR_METRICS:
        problems.append(f"goal_metric must be one of {', '.join(SCALAR_METRICS)}, not {goal.goal_metric!r}")
    field, target = ("target_accuracy", goal.target_accuracy) if goal.target is None else ("target", goal.target)
    if goal.lower_is_better and goal.target is None:
        problems.append(f"target is needed for {goal.goal_metric} (lower is better: the value to get below, e.g. 0.3); "
                        "target_accuracy is a fraction to reach")
    elif goal.lower_is_better:
        if not (math.isfinite(target) and target > 0.0):
            problems.append(f"{field} must be a number above 0 for {goal.goal_metric} (lower is better), not {target!r}")
    elif not (math.isfinite(target) and 0.0 < target <= 1.0):
        hint = " (a fraction: 0.95, not 95)" if target > 1 else ""
        problems.append(f"{field} must be in (0, 1]{hint} for {goal.goal_metric}, not {target!r}")
    for name in ("max_cpu_s", "max_gpu_s"):
        seconds = getattr(goal, name)
        if seconds is not None and not (math.isfinite(seconds) and 0.0 < seconds <= MAX_SECONDS):
            problems.append(f"{name} must be a number of seconds above 0 and at most {MAX_SECONDS:.0f}, not {seconds!r}")
    for name, (low, high) in GOAL_LIMITS.items():
        value = getattr(goal, name)
        if value is None and name in OPTIONAL_LIMITS:
            continue
        if not low <= value <= high:
            problems.append(f"{name} must be an integer from {low} to {high}, not {value!r}")
    if goal.goal_statistic == "ci_lower" and goal.num_seeds < 2:
        problems.append("goal_statistic 'ci_lower' needs num_seeds >= 2: one seed has no confidence interval")
    return problems


# An accuracy is a ratio of counts, and a mean over seeds of ratios lands a rounding error away from
# the fraction it stands for: (103/120 + 113/120) / 2 is 0.8999999999999999, which is 0.90.
TARGET_TOLERANCE = 1e-9


def meets_target(value: float | None, target: float, lower: bool = False) -> bool:
    """Whether a goal statistic reaches its target (at or above it; at or below it for a `lower`
    is better metric); a value a rounding error short of it does."""
    if value is None or not math.isfinite(value):
        return False
    return value <= target + TARGET_TOLERANCE if lower else value >= target - TARGET_TOLERANCE


def versus_target(value: float, target: float, lower: bool = False) -> str:
    """"0.8997 below target 0.9000" with enough digits that the two never print alike while one
    misses the other (0.899996 is shown as such, not as 0.9000)."""
    reached = meets_target(value, target, lower)
    for digits in range(4, 10):
        shown, wanted = f"{value:.{digits}f}", f"{target:.{digits}f}"
        if reached or shown != wanted:
            break
    relation = ("<=" if reached else "above") if lower else (">=" if reached else "below")
    return f"{shown} {relation} target {wanted}"


class GoalAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The planner's answer to a submitted goal: accepted (queued, with its run id) or rejected
    with every problem at once."""

    run_id: str
    accepted: bool
    problems: list[str] = []

    @property
    def error(self) -> str:
        return "; ".join(self.problems)


# ---- LLM calls (made by the planner and the assembler, recorded by the planner) ----
class LLMCall(msgspec.Struct, frozen=True, kw_only=True):
    """One chat completion, whatever its outcome. `messages` and `reply` travel inline from the
    service that made the call; the registry keeps them as an artifact named by `exchange`."""

    role: str  # planning | tools
    purpose: str  # propose, decide, code, summary
    model: str
    # ok, malformed (a cut-off reply too), refused, empty, timeout, unreachable, http_<status>, budget,
    # over_time (the step's seconds for LLM calls were spent), format_refused (the server refused the
    # response_format: the next call asked in the next mode), truncated (cut off at the cap, not yet judged)
    outcome: str
    error: str | None = None
    latency_s: float = 0.0
    tokens_in: int | None = None  # as the server reports them
    tokens_out: int | None = None
    started_at: float = 0.0
    messages: list[dict[str, Any]] = []
    reply: str | None = None
    exchange: str | None = None
    response_format: str | None = None  # json_schema, json_object or text: how the reply was asked for

    @property
    def tokens(self) -> int:
        """Tokens in and out, what a role's budget counts (0 where the server reported none)."""
        return (self.tokens_in or 0) + (self.tokens_out or 0)


# ---- assembler ----
class CodeFeedback(msgspec.Struct, frozen=True, kw_only=True):
    """An earlier attempt of the tools LLM and why the sandbox rejected it."""

    source: str
    error: str


class AssembleRequest(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    iteration: int
    model_config: dict[str, Any]
    feedback: list[CodeFeedback] = []  # the tools LLM's rejected attempts at this iteration, oldest first
    attempts_left: int = 1  # code generations the tools LLM may still make for this iteration; < 1: deterministic
    tokens_used: int = 0  # by the tools role in this run so far (its budget is the assembler's setting)


class AssembleReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    class_name: str = ""
    source: str = ""
    error: str | None = None
    assembler: str = "deterministic"  # deterministic | llm
    note: str | None = None  # why the tools LLM's code was not used, when it was asked
    llm_calls: list[LLMCall] = []


class ModelFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the sandbox measured of a validated model. The code runs in the measuring process, so
    every figure here is the model process's own claim (hostile code can state any number)."""

    class_name: str
    assembler: str = ""
    reported_by: str = "model_process"  # whose word the figures below are (summary.json says so)
    input_shape: list[int] = []  # without the batch dimension
    output_shape: list[int] | None = None  # without the batch dimension
    parameters: int | None = None
    trainable_parameters: int | None = None
    flops_per_sample: int | None = None
    layers: list[dict[str, Any]] = []  # as the model process tabulated them


class Narrative(msgspec.Struct, frozen=True, kw_only=True):
    """The tools LLM's reading of validated code."""

    architecture: str
    strengths: list[str]
    weaknesses: list[str]


class SummaryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The tools LLM's reading of validated code, beside the facts the sandbox measured."""

    run_id: str
    iteration: int
    class_name: str
    source: str
    facts: ModelFacts
    tokens_used: int = 0


class SummaryReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    narrative: Narrative | None = None
    error: str | None = None
    llm_calls: list[LLMCall] = []


# ---- sandbox ----
PROBE_BATCH = 2  # samples in the sandbox's probe forward pass (its FLOPs are for this many)


class ValidateRequest(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str = ""
    iteration: int = 0
    source: str
    class_name: str
    input_shape: list[int]  # including the batch dimension: (B, C, H, W), (B, F) or (B, L)
    expected_output_shape: list[int] | None = None  # including the batch dimension
    # the probe's inputs: "float32" (standard normal) or "int64" (token ids in [1, vocab_size) with
    # trailing padding 0, as DatasetFacts.input_dtype and vocab_size say)
    input_dtype: Literal["float32", "int64"] = "float32"
    vocab_size: int = 0


class ValidationResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the sandbox measured. A rejected model is a result with ok=False and a reason."""

    ok: bool
    error: str | None = None
    reason: str | None = None  # syntax, class_not_found, not_a_module, flagged, exception, bad_output,
    # output_shape, timeout, oom, pids, output_too_large, exited, harness_failed, bad_report
    output_shape: list[int] | None = None
    param_count: int | None = None
    trainable_params: int | None = None
    layers: list[dict[str, Any]] = []
    exception_type: str | None = None
    output_tail: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    oom_killed: bool = False
    flags: list[str] = []  # the pre-check's findings (dangerous constructs, each with its line)
    flops: int | None = None  # floating-point operations of one forward pass of the probe batch
    # who states output_shape, param_count, trainable_params, layers and flops: "model_process",
    # the generated code's own process (it can forge them); None on a rejection
    reported_by: str | None = None
    runtime: str | None = None  # the container's OCI runtime: "runsc" (gVisor) or "runc"; None: none ran


# ---- evaluation ----
class EvalJob(msgspec.Struct, frozen=True, kw_only=True):
    """One seed of one iteration's quick evaluation; job_id is the dedupe key."""

    job_id: str
    run_id: str
    iteration: int
    seed: int
    dataset: str
    class_name: str
    source: str
    # ---- the training recipe, flat on the wire as it always was: a job queued by an older planner,
    # or read by an evaluator not yet upgraded, keeps its settings (build one with `with_recipe`) ----
    epochs: int = DEFAULT_RECIPE.epochs
    batch_size: int = DEFAULT_RECIPE.batch_size
    lr: float = DEFAULT_RECIPE.lr
    optimizer: str = DEFAULT_RECIPE.optimizer
    weight_decay: float = DEFAULT_RECIPE.weight_decay
    subset_size: int | None = None
    augment: bool = DEFAULT_RECIPE.augment
    standardize: bool = DEFAULT_RECIPE.standardize
    rung: int | None = None  # the successive-halving rung it trains for; None: the full budget
    keep_weights: bool = True  # a lower rung's weights are never used: not kept
    class_weights: bool = DEFAULT_RECIPE.class_weights
    # "val": predict the validation inputs (the search's score); "test": the run has ended, and its
    # best candidate predicts the held-out test inputs (scored on the trusted side, never searched on)
    split: Literal["val", "test"] = "val"
    # the planner's test split (DatasetFacts.test_digest): an evaluator whose own differs (other files,
    # another data.test_fraction) refuses the job as a fault of its machine; "": not checked
    test_digest: str = ""
    # the inputs the candidate was built for (the run's DatasetFacts.input_shape and vocab_size): an
    # encoded data set is encoded to exactly these, or the job refused as a fault of the evaluator's
    # machine when its own encoding cannot give them; [] and 0: not checked (a job of an older planner)
    input_shape: list[int] = []
    vocab_size: int = 0
    encoding_settings: str = ""  # DatasetFacts.encoding_settings: checked against the evaluator's own; "": not checked

    @classmethod
    def with_recipe(cls, recipe: TrainingRecipe, **fields: Any) -> "EvalJob":
        return cls(**fields, **msgspec.structs.asdict(recipe))

    @property
    def recipe(self) -> TrainingRecipe:
        return msgspec.convert({k: getattr(self, k) for k in TrainingRecipe.__struct_fields__}, TrainingRecipe)


class EpochStats(msgspec.Struct, frozen=True, kw_only=True):
    epoch: int
    # None: not finite (a diverging model, or a forged curve); NaN would travel as null and fail
    # a strict decoder, losing the whole seed
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None = None  # computed by the evaluator from the epoch's predictions
    val_accuracy: float | None = None
    grad_norm: float | None = None  # mean gradient norm over the epoch's steps, when tracked


class Preprocessing(msgspec.Struct, frozen=True, kw_only=True):
    """A seed's input normalisation, x -> (x - mean) / std with its training split's statistics;
    a recipe without standardisation keeps mean 0 and std 1, so every reader applies it alike."""

    shape: list[int]  # of mean and std, broadcasting over a batch: (C, 1, 1) for images, (F,) for tables
    mean: list[float]  # flattened
    std: list[float]  # flattened; holds the 1e-6 that keeps a constant feature finite
    # the encoding fitted on the seed's training split and applied before the normalisation (a
    # table's imputation values and categories, a text set's tokenizer): JSON, as the encoder records
    # it (shared.data.encoders); None for data that needs none (images, all-numeric tables)
    encoding: dict[str, Any] | None = None


class SeedCost(msgspec.Struct, frozen=True, kw_only=True):
    """What one seed's training container cost, measured from outside the code: its cgroup's
    counters as the engine reads them (shared.sandboxing.cost), never the code's own word."""

    wall_s: float  # the job's run in its container: hand-over to report (a pooled container's start is not the job's)
    cpu_s: float | None = None  # user + system CPU time of every process in the container
    peak_memory_bytes: int | None = None  # the cgroup's memory high-water mark
    gpu_s: float | None = None  # seconds the container's processes held the GPU busy (None: no GPU)
    peak_gpu_memory_bytes: int | None = None
    measured_by: str = ""  # where the figures come from, e.g. "cgroup v2", "nvml"
    # bytes its harness held when ready, torch imported, before the job (page cache included):
    # part of peak_memory_bytes, which cannot be reset from outside; cpu_s counts from then
    baseline_memory_bytes: int | None = None


class SeedResult(msgspec.Struct, frozen=True, kw_only=True):
    """Per-seed result; every metric computed by the evaluator, outside the container."""

    job_id: str
    run_id: str
    iteration: int
    seed: int
    ok: bool
    rung: int | None = None  # as its job's
    started_at: float = 0.0  # when the evaluator took the job (its clock); duration_s runs from here
    error: str | None = None
    # ---- why a seed failed (ok=False), in fields, as a rejected validation says why ----
    reason: str | None = None  # timeout, oom, pids, exited, exception, harness_failed, bad_report, bad_predictions, dead_letter, ...
    exception_type: str | None = None
    timed_out: bool = False
    oom_killed: bool = False
    output_tail: str = ""  # the last lines the code printed (capped)
    # ---- what it measured (ok=True) ----
    metrics: dict[str, float | None] = {}  # scalars (None where not computable, e.g. AUC with a class absent)
    details: dict[str, Any] = {}  # per-class metrics, confusion matrices, top confusions, class balance
    learning_curve: list[EpochStats] = []
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    duration_s: float = 0.0
    evaluator: str = ""
    runtime: str | None = None  # the training container's OCI runtime: "runsc" (gVisor) or "runc"
    image: str | None = None  # the sandbox image its container ran (the evaluator's sandbox.image); None: not recorded
    device: str = "cpu"
    # ---- what using the trained model takes (ok=True) ----
    preprocessing: Preprocessing | None = None
    weights: str | None = None  # artifact name of its safetensors weights, checked (shared.evaluation.weights)
    weights_error: str | None = None  # why none were kept: too big, malformed, an image without the feature
    # ---- where the job's time went, seconds (shared.evaluation.job_timings names every key):
    # the trusted side's own clocks, and the container's claims under "harness." ----
    timings: dict[str, float] = {}
    cost: SeedCost | None = None  # None: not measured (a failure before the container ran, an older evaluator)
    split: Literal["val", "test"] = "val"  # as its job's: "test" metrics are the held-out test split's


class RunEnded(msgspec.Struct, frozen=True, kw_only=True):
    """On RUN_ENDED_SUBJECT (core NATS, best effort): the run's queued jobs are no longer wanted."""

    run_id: str
    status: str
    testing: bool = False  # its best candidate's test jobs are still wanted (the run ends once they are in)


STOP_WAIT_S = 10.0  # how long the planner waits for a run asked to stop to end before it answers anyway


class StopRequest(msgspec.Struct, frozen=True, kw_only=True):
    """On STOP_SUBJECT, a request: stop this run now (`researcher stop`). `by` says who asked, as the
    asker gives it (the credential's role is all the server vouches for)."""

    run_id: str
    by: str = ""


class StopAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The planner driving the run: it is stopped (or had ended already, with `status`)."""

    run_id: str
    status: str
    message: str = ""
    testing: bool = False  # the stop is taken: the run ends stopped once its best candidate is tested


# ---- steering a run by hand: one request for every action (the CLI's and the dashboard's) ----
SteerAction = Literal["stop", "pause", "resume", "queue"]


class SteerRequest(msgspec.Struct, frozen=True, kw_only=True):
    """On STEER_SUBJECT, a request to the planner driving the run (shared.messaging.steering.steer).
    `by` says who asked, as the asker gives it ("user@host with researcher pause", "NAME via
    the dashboard from ADDRESS"): the credential's role is all the server vouches for. `config`: the model_config
    of a "queue" (the seed format the assembler builds), None for the other actions."""

    run_id: str
    action: SteerAction
    by: str = ""
    config: dict[str, Any] | None = None


class SteerAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The planner driving the run: whether it took the action (`ok`; False with why in `message`:
    a paused run paused again, a config that cannot be built), and the run as it is now."""

    run_id: str
    action: SteerAction
    ok: bool
    status: str  # the run's status (RunStatus)
    message: str
    paused: bool = False
    queued: int = 0  # configs queued by hand that wait for their turn
    testing: bool = False  # a stop taken while (or by) testing the best candidate: it ends once tested


# ---- progress events ----
class Event(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    kind: str  # run_started, proposed, assembled, validated, evaluating, seed_done, evaluated, decided, run_finished,
    # error, steered (by hand: data {action, by}), ...
    message: str
    iteration: int | None = None
    data: dict[str, Any] = {}
    ts: float = msgspec.field(default_factory=time.time)


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a request that could not be decoded."""

    ok: bool = False
    error: str


class MaxDeliveriesAdvisory(msgspec.Struct, frozen=True, kw_only=True):
    """JetStream's io.nats.jetstream.advisory.v1.max_deliver (the fields used here)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
