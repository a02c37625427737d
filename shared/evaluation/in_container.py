"""One seed of a quick evaluation of generated code: train in the container, score outside.

The container gets (x_train, y_train, x_val) and returns class probabilities for x_val; the
labels of the validation split never leave this process, so generated code cannot forge its score.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np

from shared.sandboxing.validate import outcome_to_result
from shared.data.datasets import load_dataset, split
from shared.errors import DatasetError, DatasetUnavailableError
from shared.messaging.messages import EpochStats, EvalJob, SeedResult
from shared.evaluation.metrics import score
from shared.evaluation.quick_eval import epoch_curve
from shared.runtime.config import DataConfig


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def evaluate_job(job: EvalJob, runner, *, timeout_s: float, memory: str, data_config: DataConfig | None = None,
                 evaluator: str = "") -> SeedResult:
    """-> the seed's result, a failed one when the code failed. Raises DatasetUnavailableError
    when `evaluator` (a replica's name, for the message) cannot load the data set: a fault of
    this machine, not of the code (and SandboxUnavailableError from the runner likewise)."""
    started = time.monotonic()
    data_config = data_config or DataConfig()
    base = dict(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed, evaluator=evaluator)
    try:
        ds = load_dataset(job.dataset, data_dir=data_config.dir)
    except DatasetError as exc:
        raise DatasetUnavailableError(evaluator, job.dataset, str(exc)) from exc
    data = split(ds, job.seed, data_config.val_fraction, job.subset_size)
    container_job = {
        "mode": "train", "source": job.source, "class_name": job.class_name, "seed": job.seed,
        "hparams": {"epochs": job.epochs, "batch_size": job.batch_size, "lr": job.lr,
                    "optimizer": job.optimizer, "weight_decay": job.weight_decay},
        "augment": job.augment,
    }
    blob = _npz(x_train=data.x_train, y_train=data.y_train, x_val=data.x_val)
    outcome = runner.run(container_job, blob, timeout_s, job_id=job.job_id)
    elapsed = lambda: round(time.monotonic() - started, 3)  # noqa: E731
    result = (outcome.report or {}).get("result")
    if not (outcome.report or {}).get("harness_completed") or not isinstance(result, dict) or not result.get("ok"):
        if isinstance(result, dict) and result.get("error"):
            error = result["error"]
        else:
            error = outcome_to_result(outcome, timeout_s, memory).error or "training failed"
        return SeedResult(ok=False, error=f"training failed: {error}", duration_s=elapsed(), **base)
    try:
        shape = tuple(int(d) for d in result["probs_shape"])
        probs = np.frombuffer(base64.b64decode(result["probs_b64"]), dtype=np.float32).reshape(shape)
    except (KeyError, ValueError, TypeError) as exc:
        return SeedResult(ok=False, error=f"the harness returned unreadable predictions: {exc}", duration_s=elapsed(), **base)
    if shape != (len(data.y_val), ds.num_classes) or not np.isfinite(probs).all():
        return SeedResult(ok=False, duration_s=elapsed(), **base,
                          error=f"predictions of shape {shape} (or non-finite) for {len(data.y_val)} samples and {ds.num_classes} classes")
    try:
        curve = learning_curve(result, data.y_val, ds.num_classes)
    except (KeyError, ValueError, TypeError) as exc:
        return SeedResult(ok=False, error=f"the harness returned an unreadable learning curve: {exc}", duration_s=elapsed(), **base)
    metrics, details = score(data.y_val, probs, ds.class_names)  # every metric here, from our own labels
    return SeedResult(ok=True, metrics=metrics, details=details, learning_curve=curve,
                      train_time_s=float(result.get("train_time_s", 0.0)), samples_per_s=float(result.get("samples_per_s", 0.0)),
                      device=str(result.get("device", "cpu")), duration_s=elapsed(), **base)


def learning_curve(result: dict, y_val: np.ndarray, num_classes: int) -> list[EpochStats]:
    """The container's training curve, with validation loss and accuracy per epoch computed here."""
    per_epoch = None
    if result.get("epoch_probs_b64"):
        shape = tuple(int(d) for d in result["epoch_probs_shape"])
        per_epoch = np.frombuffer(base64.b64decode(result["epoch_probs_b64"]), dtype=np.float16).reshape(shape)
    return [EpochStats(**row) for row in epoch_curve(result.get("curve", []), per_epoch, y_val, num_classes)]
