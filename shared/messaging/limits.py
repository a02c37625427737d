"""What is sent is bounded: the largest message of each type, each derived from what bounds its
content, and the caps a stack puts on the goals it takes.

Every limit below is the largest JSON its content can need, from the ceilings in the first
block (a setting that bounds the content may be lowered, never raised past its ceiling: the
configuration checks it), times MARGIN for fields added later. `decode` refuses a larger message
before parsing it, JetStream streams and KV buckets refuse one on publish (`max_msg_size`,
`max_value_size`), and the NATS server's max_payload is MAX_PAYLOAD, the largest of them.

Light imports only: the CLI imports this through the bus (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

from shared.messaging import subjects
from shared.messaging.messages import (
    AssembleReply, AssembleRequest, EpochStats, ErrorReply, EvalJob, Event, Goal, GoalAnswer, MaxDeliveriesAdvisory,
    RunEnded, SeedResult, SteerAnswer, SteerRequest, StopAnswer, StopRequest, SummaryReply, SummaryRequest, ValidateRequest, ValidationResult,
)
from shared.registry.records import MAX_QUEUED, MAX_STEERING, IterationRecord, RunRecord
from shared.sandboxing.protocol import ESCAPE_FACTOR

if TYPE_CHECKING:
    from shared.runtime.config import LimitsConfig

KiB, MiB = 1 << 10, 1 << 20
MARGIN = 1.25  # each limit over the largest content: room for fields added with defaults later

# ---- ceilings of what bounds the content ----
MAX_SOURCE_BYTES = 64 * KiB  # a model's module source, as JSON: the assembler refuses longer code
# (its largest model, 200 layers, is 14 KiB; the tools LLM's code is never longer than its reply)
MAX_CONFIG_BYTES = 64 * KiB  # a model_config as JSON (200 layers, 16-item lists: about 30 KiB)
MAX_CLASSES = 100  # classes of a data set (cifar100's): a seed's confusion matrix is C x C
MAX_CLASS_NAME_CHARS = 64  # a class's name, as a CSV's target column may spell it
MAX_SEEDS = 20  # ceiling of limits.max_seeds
MAX_EPOCHS = 200  # ceiling of limits.max_epochs: points of a seed's learning curve
MAX_CODE_ATTEMPTS = 5  # ceiling of llm.code_attempts: sources fed back to the tools LLM
MAX_LOWER_RUNGS = 5  # ceiling of planner.lower_rungs: cheaper evaluations kept in an iteration
MAX_OUTPUT_TAIL_BYTES = 64 * KiB  # ceiling of sandbox.max_output_bytes: the code's output tail
MAX_ERROR_BYTES = 16 * KiB  # a sandbox's or a seed's error, as JSON (the harness keeps 4000 characters)
MAX_LAYERS = 200  # the layers a validation lists (the harness's and the assembler's cap)
LAYER_BYTES = 1 * KiB  # one listed layer: a dotted name, a type, shapes, counts
PROMPT_BYTES = 16 * KiB  # an LLM prompt's own text, without the config and code it quotes
TEXT_BYTES = 4 * KiB  # the identifiers, numbers and short texts of a message beside its bulk
_WORST_FLOAT = -1.2345678901234567e-300  # the longest a float prints


def _json(value: object) -> int:
    return len(msgspec.json.encode(value))


def _limit(content: float) -> int:
    """`content` bytes with the margin, rounded up to a whole KiB."""
    return math.ceil(content * MARGIN / KiB) * KiB


# ---- the content of the bulky messages, bytes ----
EPOCH_BYTES = _json(EpochStats(epoch=MAX_EPOCHS, train_loss=_WORST_FLOAT, train_accuracy=_WORST_FLOAT,
                               val_loss=_WORST_FLOAT, val_accuracy=_WORST_FLOAT, grad_norm=_WORST_FLOAT)) + 1
NAME_BYTES = MAX_CLASS_NAME_CHARS * ESCAPE_FACTOR + 3  # a class name quoted, in a list
TAIL_BYTES = MAX_OUTPUT_TAIL_BYTES * ESCAPE_FACTOR  # a byte of output can become "\ufffd" in JSON
# per class: a row of per-class metrics, a row of each confusion matrix (counts and fractions),
# its name in the notes and in the class balance
CLASS_BYTES = (NAME_BYTES + 8 * 25) + MAX_CLASSES * (11 + 25) + 4 * NAME_BYTES
DETAILS_BYTES = MAX_CLASSES * CLASS_BYTES + TEXT_BYTES  # a seed's details: per class and confusions
CURVE_BYTES = MAX_EPOCHS * EPOCH_BYTES
SEED_RESULT_BYTES = DETAILS_BYTES + CURVE_BYTES + TAIL_BYTES + MAX_ERROR_BYTES + TEXT_BYTES
FEEDBACK_BYTES = MAX_CODE_ATTEMPTS * (MAX_SOURCE_BYTES + MAX_ERROR_BYTES)  # earlier attempts and why
# one LLM call inline: its prompt (the config quoted twice over: indented, then as a JSON string),
# the earlier attempts, the reply
LLM_CALL_BYTES = PROMPT_BYTES + 2 * MAX_CONFIG_BYTES + FEEDBACK_BYTES + MAX_SOURCE_BYTES + TEXT_BYTES
FACTS_BYTES = MAX_LAYERS * LAYER_BYTES + TEXT_BYTES  # a model's measured facts
VALIDATION_BYTES = FACTS_BYTES + TAIL_BYTES + MAX_ERROR_BYTES
# the learning curves' points in an iteration: its full evaluation's and each cheaper rung's, rung k
# below the full budget with 1/reduction_factor^k of its seeds and epochs (2, the least, kept most)
CURVE_POINTS = sum(math.ceil(MAX_SEEDS / 2**k) * math.ceil(MAX_EPOCHS / 2**k) for k in range(MAX_LOWER_RUNGS + 1))
# an evaluation without its curves: each seed's row, the scalars over seeds, the best seed's details
EVALUATION_BYTES = MAX_SEEDS * (2 * KiB + 16 * 25) + DETAILS_BYTES + TEXT_BYTES
ITERATION_BYTES = (MAX_CONFIG_BYTES + VALIDATION_BYTES + CURVE_POINTS * EPOCH_BYTES
                   + (1 + MAX_LOWER_RUNGS) * EVALUATION_BYTES + MAX_CODE_ATTEMPTS * MAX_ERROR_BYTES + FACTS_BYTES
                   + 64 * KiB)
GOAL_BYTES = 16 * KiB * ESCAPE_FACTOR // 2  # its text (4000 characters), its data set's name, numbers

# ---- the table: the largest message of each type, bytes ----
LIMITS: dict[type, int] = {
    Goal: _limit(GOAL_BYTES),
    GoalAnswer: _limit(4 * GOAL_BYTES),  # every problem of a goal, each quoting a field, a path or a CSV's columns
    ErrorReply: _limit(GOAL_BYTES),  # why a request could not be decoded or worked
    AssembleRequest: _limit(MAX_CONFIG_BYTES + FEEDBACK_BYTES + TEXT_BYTES),
    AssembleReply: _limit(MAX_SOURCE_BYTES + MAX_CODE_ATTEMPTS * LLM_CALL_BYTES + MAX_ERROR_BYTES),
    SummaryRequest: _limit(MAX_SOURCE_BYTES + FACTS_BYTES),
    SummaryReply: _limit(2 * (PROMPT_BYTES + FACTS_BYTES + 2 * MAX_SOURCE_BYTES)),  # a call and its repair
    ValidateRequest: _limit(MAX_SOURCE_BYTES + TEXT_BYTES),
    ValidationResult: _limit(VALIDATION_BYTES),
    EvalJob: _limit(MAX_SOURCE_BYTES + TEXT_BYTES),
    SeedResult: _limit(SEED_RESULT_BYTES),
    Event: _limit(4 * MAX_ERROR_BYTES),  # a line, and a few numbers or an error
    RunEnded: _limit(TEXT_BYTES),
    StopRequest: _limit(TEXT_BYTES),
    StopAnswer: _limit(TEXT_BYTES + MAX_ERROR_BYTES),
    SteerRequest: _limit(MAX_CONFIG_BYTES + TEXT_BYTES),  # a config queued by hand
    SteerAnswer: _limit(TEXT_BYTES + MAX_ERROR_BYTES),  # why a config was refused
    MaxDeliveriesAdvisory: _limit(TEXT_BYTES),  # written by the server
    # its steering: the configs queued by hand, and each action's who, when and a line
    RunRecord: _limit(GOAL_BYTES + MAX_CLASSES * NAME_BYTES + 2 * LLM_CALL_BYTES + 4 * MAX_ERROR_BYTES
                      + MAX_QUEUED * (MAX_CONFIG_BYTES + TEXT_BYTES) + MAX_STEERING * TEXT_BYTES),
    IterationRecord: _limit(ITERATION_BYTES),
}

# every stream and bucket: the largest message it holds (the dead letters are evaluation jobs;
# the iterations bucket holds iteration records and seed results; a lease holds a replica's name)
STREAM_LIMITS: dict[str, int] = {
    subjects.GOALS_STREAM: LIMITS[Goal],
    subjects.EVAL_STREAM: LIMITS[EvalJob],
    subjects.RESULTS_STREAM: LIMITS[SeedResult],
    subjects.DEAD_STREAM: LIMITS[EvalJob],
    subjects.ADVISORIES_STREAM: LIMITS[MaxDeliveriesAdvisory],
}
BUCKET_LIMITS: dict[str, int] = {
    subjects.RUNS_BUCKET: LIMITS[RunRecord],
    subjects.ITERATIONS_BUCKET: max(LIMITS[IterationRecord], LIMITS[SeedResult]),
    subjects.LEASES_BUCKET: TEXT_BYTES,
    subjects.RUNNING_BUCKET: TEXT_BYTES,
}
# the NATS server's max_payload, in whole MiB; the object store's chunks (nats.py writes 128 KiB
# ones) need far less
MAX_PAYLOAD = math.ceil(max(*LIMITS.values(), *BUCKET_LIMITS.values()) / MiB) * MiB


# which stream keeps a subject's messages (the subjects of ensure_streams)
_STREAM_SUBJECTS = {subjects.GOALS_STREAM: subjects.GOALS_SUBJECT, subjects.EVAL_STREAM: subjects.EVAL_SUBJECT,
                    subjects.RESULTS_STREAM: subjects.RESULTS_SUBJECT_PREFIX + ".",
                    subjects.DEAD_STREAM: subjects.DEAD_LETTER_SUBJECT + ".",
                    subjects.ADVISORIES_STREAM: subjects.EVAL_MAX_DELIVERIES_ADVISORY}


def stream_of(subject: str) -> tuple[str, int]:
    """The stream that keeps `subject`'s messages and its limit in bytes; ("?", MAX_PAYLOAD) for none."""
    for stream, prefix in _STREAM_SUBJECTS.items():
        if subject == prefix or (prefix.endswith(".") and subject.startswith(prefix)):
            return stream, STREAM_LIMITS[stream]
    return "?", MAX_PAYLOAD


def limit_of(type_: type) -> int:
    """The largest message of `type_` in bytes; MAX_PAYLOAD for a type the table does not name."""
    return LIMITS.get(type_, MAX_PAYLOAD)


def facts_problem(num_classes: int, class_names: list[str]) -> str | None:
    """Why a data set's classes are more than a seed's result can carry; None when they fit."""
    if num_classes > MAX_CLASSES:
        return (f"it has {num_classes} classes, more than the {MAX_CLASSES} a stack takes (a seed's result carries "
                f"a {num_classes} x {num_classes} confusion matrix); group rare classes, or choose another target")
    long = next((name for name in class_names if len(name) > MAX_CLASS_NAME_CHARS), None)
    if long is not None:
        return (f"class name {long[:40]!r}... is {len(long)} characters, more than the {MAX_CLASS_NAME_CHARS} a stack "
                "takes; shorten the target column's values")
    return None


# ---- goals: what a stack's `limits` settings allow one goal to ask ----
def cap_problems(goal: Goal, caps: LimitsConfig, max_epochs: int) -> list[str]:
    """Every field of `goal` over this stack's caps, each naming the field, the value asked and the
    cap (and the setting that raises it); [] when it fits. `max_epochs`: the stack's
    planner.max_epochs, which bounds a goal's training further (its default budget is counted at it)."""
    setting = "(this stack's limits.{0}, RESEARCHER_LIMITS__{1})"
    problems = []

    def over(asked: str, value: int, cap_name: str) -> None:
        cap = getattr(caps, cap_name)
        if value > cap:
            problems.append(f"{asked.format(value)} is over the cap of {cap} " + setting.format(cap_name, cap_name.upper()))

    over("goal: its text of {} characters", len(goal.goal), "max_goal_chars")
    over("max_iterations {}", goal.max_iterations, "max_iterations")
    over("num_seeds {}", goal.num_seeds, "max_seeds")
    over("max_epochs {}", goal.max_epochs, "max_epochs")
    if goal.parallel is not None:
        over("parallel {}", goal.parallel, "max_parallel")
    if goal.epoch_budget is not None:
        over("epoch_budget {} (seed-epochs)", goal.epoch_budget, "max_epoch_budget")
    else:
        epochs = min(goal.max_epochs, max_epochs)
        budget = goal.max_iterations * goal.num_seeds * epochs
        if budget > caps.max_epoch_budget:
            problems.append(
                f"epoch_budget: none given, so max_iterations x num_seeds x max_epochs = {goal.max_iterations} x "
                f"{goal.num_seeds} x {epochs} = {budget} seed-epochs, over the cap of {caps.max_epoch_budget} "
                + setting.format("max_epoch_budget", "MAX_EPOCH_BUDGET")
                + "; ask for fewer iterations or seeds, or give a smaller epoch_budget")
    return problems
