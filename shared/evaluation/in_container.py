"""One seed of a quick evaluation of generated code: train in the container, score outside.

The container gets (x_train, y_train, x_val) and returns class probabilities for x_val; the
labels of the validation split never leave this process, so generated code cannot forge its score.
A test job (`EvalJob.split == "test"`: a run's best candidate, once, at its end) trains the same
way on the same training split and sends the held-out test inputs as x_val instead; they are
scored here against the test labels (metrics named test_*, no per-epoch curve against them).
Its report is decoded strictly (shared.sandboxing.protocol); the predictions' base64 must have
exactly the length the job implies before a byte of it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
from typing import Any, NamedTuple

import numpy as np

from shared.sandboxing.protocol import Hparams, TrainJob, TrainOutcome, b64_len
from shared.sandboxing.validate import common_fields, failure_of
from shared.data.datasets import load_dataset, split, with_test_split
from shared.errors import DatasetError, DatasetUnavailableError
from shared.messaging.messages import EpochStats, EvalJob, SeedResult
from shared.evaluation.metrics import score
from shared.evaluation.quick_eval import epoch_curve
from shared.evaluation.weights import kept_weights, preprocessing, with_metadata
from shared.runtime.config import DataConfig
from shared.runtime.laps import Laps


class BadPredictions(ValueError):
    """Predictions that are not what the job asked for; the message says how."""


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, infinities) replaced by None, through dicts and
    lists: JSON has no NaN, and a strict decoder would reject the null msgspec writes for it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, np.floating):
        return finite(float(value))
    return value


class Trained(NamedTuple):
    result: SeedResult
    weights: bytes | None = None  # the checked safetensors file, for the registry


def evaluate_job(job: EvalJob, runner, *, timeout_s: float, memory: str, data_config: DataConfig | None = None,
                 evaluator: str = "") -> SeedResult:
    """-> the seed's result, a failed one when the code failed (train_seed, keeping no weights)."""
    return train_seed(job, runner, timeout_s=timeout_s, memory=memory, data_config=data_config,
                      evaluator=evaluator).result


def train_seed(job: EvalJob, runner, *, timeout_s: float, memory: str, data_config: DataConfig | None = None,
               evaluator: str = "", max_weights_bytes: int = 0) -> Trained:
    """-> the seed's result, a failed one when the code failed, with its trained weights when
    `max_weights_bytes` > 0 asks for them (a seed without them says why in `weights_error`).
    Raises DatasetUnavailableError when `evaluator` (a replica's name, for the message) cannot load
    the data set: a fault of this machine, not of the code (and SandboxUnavailableError from the
    runner likewise)."""
    laps = Laps()
    started = laps.started
    data_config = data_config or DataConfig()
    base = dict(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed, evaluator=evaluator,
                split=job.split)
    try:
        ds = with_test_split(load_dataset(job.dataset, data_dir=data_config.dir, config=data_config,
                                          max_categories=data_config.max_categories), data_config.test_fraction,
                             data_config.test_seed)
    except DatasetError as exc:
        raise DatasetUnavailableError(evaluator, job.dataset, str(exc)) from exc
    if job.test_digest and ds.test_digest() != job.test_digest:
        raise DatasetUnavailableError(evaluator, job.dataset, (
            f"its test split ({ds.test_source or 'none'}, {0 if ds.y_test is None else len(ds.y_test)} samples, "
            f"digest {ds.test_digest() or '-'}) is not the planner's (digest {job.test_digest}), so a test sample "
            "could be a training one here; give every machine the same files (the official test files too) and "
            "the same data.test_fraction and data.test_seed"))
    mine = getattr(ds.encoder, "settings", "")
    if job.encoding_settings and mine != job.encoding_settings:
        raise DatasetUnavailableError(evaluator, job.dataset, (
            f"its data settings here ({mine or 'none'}) are not the planner's ({job.encoding_settings}): the "
            "candidate's inputs would be made by another tokenizer; give every machine the same data settings"))
    try:
        ds = ds.planned(job.input_shape, job.vocab_size)
    except ValueError as exc:
        raise DatasetUnavailableError(evaluator, job.dataset, (
            f"{exc}: the candidate was built for the planner's; give every machine the same files and the same "
            "data settings (data.max_categories, data.tokenizer, data.vocab_size, data.max_length)")) from exc
    recipe = job.recipe
    try:
        data = split(ds, job.seed, data_config.val_fraction, job.subset_size, standardize=recipe.standardize)
    except ValueError as exc:  # a subset too small for a stratified split: the job's fault, not the code's
        return Trained(SeedResult(ok=False, reason="bad_subset", error=f"cannot split {job.dataset} with subset_size "
                                  f"{job.subset_size}: {exc}", duration_s=round(time.monotonic() - started, 3), **base))
    testing = job.split == "test"
    if testing:  # the test inputs in place of the validation ones, normalised as the training split is
        x_val, y_val = data.prepare(ds.x_test), ds.y_test
        max_weights_bytes = 0  # its weights are the full evaluation's, kept already
    else:
        x_val, y_val = data.x_val, data.y_val
    container_job = TrainJob(
        source=job.source, class_name=job.class_name, seed=job.seed, augment=recipe.augment,
        class_weights=recipe.class_weights,
        hparams=Hparams(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
                        weight_decay=recipe.weight_decay),
        n_val=len(y_val), num_classes=ds.num_classes, max_weights_bytes=max_weights_bytes)
    blob = _npz(x_train=data.x_train, y_train=data.y_train, x_val=x_val)
    laps.lap("data_s")
    outcome = runner.run(container_job, blob, timeout_s, job_id=job.job_id)
    laps.skip()
    elapsed = lambda: round(time.monotonic() - started, 3)  # noqa: E731
    common = {**common_fields(outcome), **base, "timings": _timings(laps, outcome), "cost": outcome.cost}
    failure = failure_of(outcome, timeout_s, memory, getattr(getattr(runner, "limits", None), "pids", None))
    if failure is not None:
        return Trained(SeedResult(ok=False, error=f"training failed: {failure.error}", reason=failure.reason,
                                  exception_type=failure.exception_type, **{**common, "duration_s": elapsed()}))
    result = outcome.report.result  # type: ignore[union-attr]  # failure_of checked it
    try:
        probs = predictions(result, container_job)
        curve = [] if testing else learning_curve(result, container_job, y_val)
    except BadPredictions as exc:
        return Trained(SeedResult(ok=False, reason="bad_predictions", **{**common, "duration_s": elapsed()},
                                  error=f"the harness returned unusable predictions: {exc}"))
    metrics, details = score(y_val, probs, ds.class_names)  # every metric here, from our own labels
    if testing:
        metrics = {f"test_{name.removeprefix('val_')}": value for name, value in metrics.items()}
    weights, weights_error = kept_weights(result, container_job)
    artifact = getattr(data.fitted, "artifact", None)  # a text seed's tokenizer travels with its weights
    if weights is not None and artifact is not None:
        weights = with_metadata(weights, artifact())
    laps.lap("score_s")
    return Trained(SeedResult(ok=True, metrics=finite(metrics), details=finite(details), learning_curve=curve,
                              train_time_s=result.train_time_s, samples_per_s=result.samples_per_s,
                              device=result.device, preprocessing=preprocessing(data.mean, data.std, data.encoding),
                              weights_error=weights_error, **{**common, "duration_s": elapsed(),
                                                              "timings": _timings(laps, outcome)}), weights)


def _timings(laps: Laps, outcome) -> dict[str, float]:
    """This process's laps and the runner's (seconds), then the container's own claims under
    "harness." (shared.evaluation.job_timings names them all)."""
    report = outcome.report
    claims = {**(report.timings if report else {}), **(report.result.timings if report and report.result else {})}
    return {**{k: round(v, 4) for k, v in {**laps.seconds, **outcome.timings}.items()},
            **{f"harness.{k}": round(v, 4) for k, v in claims.items()}}


def _decode(b64: str | None, shape: list[int] | None, want: tuple[int, ...], dtype: type, what: str) -> np.ndarray:
    """base64 -> an array of exactly `want`, its length checked before it is decoded."""
    if b64 is None or shape is None:
        raise BadPredictions(f"no {what}")
    if tuple(shape) != want:
        raise BadPredictions(f"{what} of shape {tuple(shape)}, the job needs {want}")
    expected = b64_len(int(np.prod(want)) * np.dtype(dtype).itemsize)
    if len(b64) != expected:
        raise BadPredictions(f"{what}: {len(b64):,} characters of base64 where {want} {np.dtype(dtype).name} needs {expected:,}")
    try:
        return np.frombuffer(base64.b64decode(b64, validate=True), dtype=dtype).reshape(want)
    except (binascii.Error, ValueError) as exc:
        raise BadPredictions(f"{what}: {exc}") from None


def predictions(result: TrainOutcome, job: TrainJob) -> np.ndarray:
    """The final class probabilities, (n_val, num_classes) float32, all finite."""
    probs = _decode(result.probs_b64, result.probs_shape, (job.n_val, job.num_classes), np.float32, "predictions")
    if not np.isfinite(probs).all():
        raise BadPredictions("predictions hold non-finite values")
    return probs


def learning_curve(result: TrainOutcome, job: TrainJob, y_val: np.ndarray) -> list[EpochStats]:
    """The container's training curve, with validation loss and accuracy per epoch computed here."""
    if len(result.curve) > job.hparams.epochs:
        raise BadPredictions(f"a learning curve of {len(result.curve)} points for {job.hparams.epochs} epochs")
    per_epoch = None
    if result.epoch_probs_b64 is not None:
        per_epoch = _decode(result.epoch_probs_b64, result.epoch_probs_shape,
                            (len(result.curve), job.n_val, job.num_classes), np.float16, "per-epoch predictions")
    points = [{"epoch": p.epoch, "train_loss": p.train_loss, "train_accuracy": p.train_accuracy, "grad_norm": p.grad_norm}
              for p in result.curve]
    try:
        rows = epoch_curve(points, per_epoch, y_val, job.num_classes)
    except ValueError as exc:
        raise BadPredictions(f"learning curve: {exc}") from None
    return [EpochStats(**finite(row)) for row in rows]
