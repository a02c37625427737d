"""The container protocol's two directions, as Structs: the job the trusted side sends (a tagged
union on "mode", so the JSON on the wire is the dicts the harness has always read) and the
report the supervisor sends back, decoded strictly, with every field bounded.

The nested `result` and `process` of a report are written by the worker from what the model's
process (the generated code's own process) sent it, so nothing in them is trusted: strings and
lists are capped, numbers must be finite, counts non-negative int64. Non-finite numbers (NaN,
Infinity, 1e999) are read as null, so a field that must be a number rejects them and an optional
one (a diverging loss) keeps "unknown". The bytes read from a container are bounded by what the
job implies (`max_report_bytes`), so a report is never larger than its job can explain.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

# ---- bounds ----
MAX_ERROR_CHARS = 16384  # an error or traceback message (the harness keeps 4000 of it)
MAX_NAME_CHARS = 1024  # a layer's dotted name
MAX_SHORT_CHARS = 256  # a reason, an exception type, a layer's type, a device
MAX_TAIL_CHARS = 1 << 20  # the output tail (the runner keeps max_output_bytes of it)
MAX_LAYERS = 200  # the harness lists at most this many leaf modules
MAX_DIMS = 16  # of an output shape
MAX_EPOCHS = 100_000  # points of a learning curve (also never more than the job's epochs)
REPORT_OVERHEAD_BYTES = 4 << 20  # the report's fixed part, layers and errors included, JSON-escaped
ESCAPE_FACTOR = 6  # one byte of output tail can become "\ufffd" (6 bytes) in the report's JSON

Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # a non-negative int64
Dim = Annotated[int, Meta(ge=0, lt=2**31)]
Finite = Annotated[float, Meta(ge=-1e308, le=1e308)]  # NaN and infinities fail the bounds
NonNegative = Annotated[float, Meta(ge=0.0, le=1e308)]
Error = Annotated[str, Meta(max_length=MAX_ERROR_CHARS)]
Short = Annotated[str, Meta(max_length=MAX_SHORT_CHARS)]
MAX_TIMINGS = 16  # named durations in a report's timings
Timings = Annotated[dict[Annotated[str, Meta(max_length=64)], NonNegative], Meta(max_length=MAX_TIMINGS)]


# ---- jobs (trusted side -> container) ----
class Hparams(msgspec.Struct, frozen=True, kw_only=True):
    """A TrainingRecipe's training settings as the harness reads them (every one given: the recipe
    holds the defaults)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float


class ValidateJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="mode", tag="validate"):
    source: str
    class_name: str
    input_shape: list[int]  # including the batch dimension
    threads: int = 1  # torch threads; the runner sets it from its CPU limit
    # the probe batch's dtype: "int64" asks for token ids in [1, vocab_size) with trailing padding;
    # an image built before these keys ignores them and probes with floats
    input_dtype: str = "float32"
    vocab_size: int = 0


class TrainJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="mode", tag="train"):
    source: str
    class_name: str
    seed: int
    hparams: Hparams
    augment: bool = False
    threads: int = 1
    # the loss weighs classes by their counts in y_train (TrainSettings.class_weights); an image built
    # before this key ignores it and trains unweighted
    class_weights: bool = False
    # ---- what the answer must hold (the harness ignores these keys) ----
    n_val: int = 0  # rows of x_val: predictions are (n_val, num_classes)
    num_classes: int = 0
    # bytes; > 0 asks the harness for the trained weights (safetensors), up to this size. An image
    # built before this key ignores it and returns none; 0 (an older trusted side) asks for none.
    max_weights_bytes: int = 0


ContainerJob = Union[ValidateJob, TrainJob]


def b64_len(nbytes: int) -> int:
    """The length of base64 (with padding) of `nbytes` bytes."""
    return 4 * ((nbytes + 2) // 3)


def max_report_bytes(job: ContainerJob, max_output_bytes: int) -> int:
    """The most container stdout a job can explain: the fixed part, the escaped output tail and,
    for training, the predictions (float32, once) and the per-epoch predictions (float16)."""
    budget = REPORT_OVERHEAD_BYTES + ESCAPE_FACTOR * max_output_bytes
    if isinstance(job, TrainJob):
        cells = max(job.n_val, 0) * max(job.num_classes, 0)
        epochs = max(job.hparams.epochs, 0)
        budget += b64_len(4 * cells) + b64_len(2 * cells * epochs) + 512 * epochs  # the curve's points
        budget += b64_len(max(job.max_weights_bytes, 0))
    return budget


# ---- the report (container -> trusted side) ----
class Layer(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, Meta(max_length=MAX_NAME_CHARS)]
    type: Short
    params: Count


class CurvePoint(msgspec.Struct, frozen=True, kw_only=True):
    epoch: Count
    train_loss: Finite | None = None  # None: non-finite (a diverging model) or not stated
    train_accuracy: Finite | None = None
    grad_norm: Finite | None = None


class _Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the model process says of any job: whether it worked, and if not, why."""

    ok: bool
    reason: Short | None = None
    error: Error | None = None
    exception_type: Short | None = None
    traceback: Error | None = None


class ValidateOutcome(_Outcome, frozen=True, kw_only=True):
    """The model process's answer to a validate job: every figure is the code's own claim."""

    output_shape: Annotated[list[Dim], Meta(max_length=MAX_DIMS)] | None = None
    param_count: Count | None = None
    trainable_params: Count | None = None
    layers: Annotated[list[Layer], Meta(max_length=MAX_LAYERS)] = []
    flops: int | float | None = None  # kept only as a non-negative int64; a counter may fail


class TrainOutcome(_Outcome, frozen=True, kw_only=True):
    """The model process's answer to a train job: predictions for x_val and its training curve."""

    probs_b64: str | None = None  # (n_val, num_classes) float32; length checked before decoding
    probs_shape: Annotated[list[Dim], Meta(max_length=2)] | None = None
    epoch_probs_b64: str | None = None  # (epochs, n_val, num_classes) float16
    epoch_probs_shape: Annotated[list[Dim], Meta(max_length=3)] | None = None
    curve: Annotated[list[CurvePoint], Meta(max_length=MAX_EPOCHS)] = []
    train_time_s: NonNegative = 0.0  # seconds
    samples_per_s: NonNegative = 0.0
    device: Short = "cpu"
    # ---- the trained weights, when the job asked (max_weights_bytes > 0) ----
    weights_b64: str | None = None  # safetensors bytes; length checked before decoding
    weights_error: Error | None = None  # why the harness returned none (too big, not savable)
    # seconds, by the model process's clock (code_s, setup_s, predict_s, encode_s): its claim,
    # shown beside the trusted side's own clock, never instead of it; an older image sends none
    timings: Timings = {}


class Process(msgspec.Struct, frozen=True, kw_only=True):
    """How the model process ended, as the worker saw it."""

    stage: Short = "start"
    report_overflow: bool = False
    exit_code: int | None = None
    signal: Annotated[int, Meta(ge=0, le=255)] | None = None


class _Report(msgspec.Struct, frozen=True, kw_only=True):
    harness_completed: bool = False
    process: Process | None = None
    exit_code: int | None = None  # the worker's
    result_overflow: bool = False
    output_too_large: bool = False
    output_bytes: Count = 0
    output_tail: Annotated[str, Meta(max_length=MAX_TAIL_CHARS)] = ""
    oom_kills: Count | None = None
    pids_cap_hits: Count | None = None
    timings: Timings = {}  # seconds, by the supervisor's clock (receive_s, worker_s); an older image sends none


class ValidateReport(_Report, frozen=True, kw_only=True):
    result: ValidateOutcome | None = None


class TrainReport(_Report, frozen=True, kw_only=True):
    result: TrainOutcome | None = None


Report = Union[ValidateReport, TrainReport]


class BadReport(Exception):
    """A report that is not what the protocol allows; the message says where."""


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def decode_report(line: bytes | bytearray | memoryview, job: ContainerJob) -> Report:
    """One "@@RESULT" line's JSON -> the report for the job's mode, or BadReport saying why."""
    try:
        raw: Any = json.loads(bytes(line), parse_constant=lambda _: None, parse_float=_finite_or_none)
    except (ValueError, RecursionError) as exc:
        raise BadReport(f"not JSON ({str(exc)[:200]})") from None
    kind = TrainReport if isinstance(job, TrainJob) else ValidateReport
    try:
        return msgspec.convert(raw, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise BadReport(str(exc)[:500]) from None
