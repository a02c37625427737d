"""The evaluation engine as a library: `quick_evaluate_once(model, config)` on a researcher's own
(trusted) model, in-process, multi-seed, with the full metric suite.

The same pieces serve generated models: `shared.evaluation.trainloop` trains (here in-process, there inside
the locked-down container), and `build_seed_report` turns predictions into metrics, learning
dynamics and curves on the trusted side in both cases.
"""

from __future__ import annotations

import math

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import msgspec
import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from shared.data.datasets import load_dataset, split
from shared.evaluation.aggregate import summarise as aggregate_seeds
from shared.runtime.config import DataConfig
from shared.evaluation.metrics import SCALAR_METRICS, score
from shared.evaluation.trainloop import TrainSettings, pick_device, train_model
from shared.messaging.messages import DEFAULT_RECIPE, EpochStats, SeedResult, meets_target
from shared.registry.records import Evaluation



@dataclass
class QuickEvalConfig:
    dataset_name: str = "digits"
    subset_size: int | None = None  # a stratified subset drawn from each seed; None = all
    batch_size: int = DEFAULT_RECIPE.batch_size
    epochs: int = DEFAULT_RECIPE.epochs
    num_seeds: int = 3
    random_seed: int = 0  # seeds are random_seed, random_seed + 1, ...
    target_accuracy: float | None = None
    goal_statistic: str = "mean"  # mean | ci_lower: what goal_achieved is judged on
    metrics_to_track: tuple[str, ...] = ("val_accuracy", "val_f1_macro", "val_f1_weighted", "val_precision_macro",
                                         "val_recall_macro", "val_roc_auc", "val_pr_auc", "val_loss")
    compute_confusion_matrix: bool = True
    compute_per_class_metrics: bool = True
    compute_auc_scores: bool = True
    track_learning_curves: bool = True
    track_gradient_norms: bool = False
    compute_confidence_intervals: bool = True
    confidence_level: float = 0.95
    detailed_report: bool = True
    save_confusion_matrix_plot: bool = False  # PNG into output_dir
    export_learning_curves: bool = False  # JSON and PNG into output_dir
    output_dir: str | None = None
    lr: float = DEFAULT_RECIPE.lr
    optimizer: str = DEFAULT_RECIPE.optimizer
    weight_decay: float = DEFAULT_RECIPE.weight_decay
    val_fraction: float = DataConfig().val_fraction  # data.val_fraction's default
    device: str = "auto"
    compile: bool = False
    augment: bool = DEFAULT_RECIPE.augment  # random crop and flip of image batches during training
    standardize: bool = DEFAULT_RECIPE.standardize  # inputs scaled by the training split's mean and std
    class_weights: bool = DEFAULT_RECIPE.class_weights  # the loss weighs classes by n / (n_classes * count)
    data_dir: str | None = None  # None: data.dir's default; a CSV path relative to it, or absolute anywhere
    # the data settings that shape an encoded set (a table's data.max_categories, a text set's tokenizer,
    # vocab_size and max_length); None: their defaults
    data_settings: DataConfig | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics_to_track if m not in SCALAR_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(SCALAR_METRICS)}")
        if self.goal_statistic not in ("mean", "ci_lower"):
            raise ValueError(f"goal_statistic must be 'mean' or 'ci_lower', not {self.goal_statistic!r}")
        if self.num_seeds < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("num_seeds, epochs and batch_size must be at least 1")
        if not 0 < self.confidence_level < 1:
            raise ValueError("confidence_level must lie strictly between 0 and 1")


def _finite(value: object) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None  # type: ignore[arg-type]


def epoch_curve(points: Sequence[dict], per_epoch_probs: Sequence[np.ndarray] | np.ndarray | None,
                y_val: np.ndarray, num_classes: int) -> list[dict[str, float]]:
    """The training curve with validation loss and accuracy per epoch, computed here from the
    epoch's predictions (a container that trained the model never has the validation labels)."""
    if per_epoch_probs is not None and len(per_epoch_probs) != len(points):
        raise ValueError(f"predictions for {len(per_epoch_probs)} epochs, a curve of {len(points)}")
    labels = list(range(num_classes))
    curve = []
    for i, point in enumerate(points):
        row = {"epoch": int(point["epoch"]), "train_loss": _finite(point.get("train_loss")),
               "train_accuracy": _finite(point.get("train_accuracy"))}  # None: not finite (diverged)
        if _finite(point.get("grad_norm")) is not None:
            row["grad_norm"] = float(point["grad_norm"])
        if per_epoch_probs is not None:
            probs = np.clip(np.asarray(per_epoch_probs[i], dtype=np.float64), 1e-7, 1.0)
            if probs.shape != (len(y_val), num_classes):
                raise ValueError(f"epoch {row['epoch']}: predictions of shape {probs.shape} for {len(y_val)} samples")
            if not np.isfinite(probs).all():  # NaN survives the clip: no validation figures this epoch
                curve.append(row)
                continue
            row["val_loss"] = float(skm.log_loss(y_val, probs / probs.sum(1, keepdims=True), labels=labels))
            row["val_accuracy"] = float(skm.accuracy_score(y_val, probs.argmax(1)))
        curve.append(row)
    return curve


def seed_result(seed: int, y_val: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                curve: list[dict], config: QuickEvalConfig) -> SeedResult:
    """Every metric of one seed from its predictions, with its learning curve."""
    metrics, details = score(y_val, probs, class_names, per_class=config.compute_per_class_metrics,
                             confusion=config.compute_confusion_matrix, auc=config.compute_auc_scores)
    return SeedResult(job_id=f"local.seed{seed}", run_id="local", iteration=0, seed=seed, ok=True, metrics=metrics,
                      details=details, learning_curve=[EpochStats(**row) for row in curve]
                      if config.track_learning_curves else [])


def _reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A fresh initialisation per seed: the seed covers the weights, not only the data order."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def summarise(seed_results: list[SeedResult], config: QuickEvalConfig) -> dict[str, Any]:
    """The shared aggregation over seeds, and the goal judged on the statistic asked for."""
    evaluation = aggregate_seeds({r.seed: r for r in seed_results}, [r.seed for r in seed_results],
                                 metrics=config.metrics_to_track, confidence=config.confidence_level,
                                 intervals=config.compute_confidence_intervals)
    value = evaluation.score(config.goal_statistic)  # type: ignore[arg-type]
    return {**msgspec.to_builtins(evaluation), "goal_statistic": config.goal_statistic, "goal_value": value,
            "goal_achieved": config.target_accuracy is not None and meets_target(value, config.target_accuracy)}


def quick_evaluate_once(model: nn.Module, config: QuickEvalConfig | None = None) -> dict[str, Any]:
    """Train and evaluate a trusted `model` over `config.num_seeds` seeds in this process."""
    config = config or QuickEvalConfig()
    # a trusted caller's own files, in its own process: a CSV path need not lie in the data directory
    dataset = load_dataset(config.dataset_name, data_dir=config.data_dir, any_csv_path=True, config=config.data_settings)
    device = pick_device(config.device)
    seed_results = []
    started = time.perf_counter()
    for i in range(config.num_seeds):
        seed = config.random_seed + i
        data = split(dataset, seed, config.val_fraction, config.subset_size, standardize=config.standardize)
        settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                 optimizer=config.optimizer, weight_decay=config.weight_decay, seed=seed,
                                 track_val_each_epoch=config.track_learning_curves,
                                 track_gradient_norms=config.track_gradient_norms, compile=config.compile,
                                 augment=config.augment, class_weights=config.class_weights)
        out = train_model(_reinitialise(model, seed), data.x_train, data.y_train, data.x_val, settings, device)
        if out.failure:
            seed_results.append(SeedResult(job_id=f"local.seed{seed}", run_id="local", iteration=0, seed=seed, ok=False,
                                           error=out.failure["error"], reason=out.failure.get("reason")))
            continue
        curve = epoch_curve(out.curve, out.val_probs_per_epoch or None, data.y_val, dataset.num_classes)
        result = seed_result(seed, data.y_val, out.val_probs, dataset.class_names, curve, config)
        seed_results.append(msgspec.structs.replace(result, train_time_s=out.train_time_s,
                                                    samples_per_s=out.samples_per_s, device=out.device))
    summary = summarise(seed_results, config)
    if not config.detailed_report:
        summary["seed_results"] = [{k: v for k, v in r.items() if k != "dynamics"} for r in summary["seed_results"]]
    if not config.track_learning_curves:
        summary.pop("learning_curves")
    outcome = {
        "config": {**asdict(config), "data_settings": msgspec.to_builtins(config.data_settings)},
        "model_name": type(model).__name__,
        "dataset": msgspec.to_builtins(dataset.facts()),
        **summary,
        "total_time_s": time.perf_counter() - started,
    }
    if config.output_dir and (config.save_confusion_matrix_plot or config.export_learning_curves):
        outcome["artifacts"] = write_artifacts(outcome, Path(config.output_dir), config)
    return outcome


def write_artifacts(outcome: dict, directory: Path, config: QuickEvalConfig) -> list[str]:
    """Plots (PNG) and curves (JSON) beside each other; -> the paths written."""
    from shared.evaluation.plots import evaluation_plots  # matplotlib only when asked

    directory.mkdir(parents=True, exist_ok=True)
    evaluation = msgspec.convert(outcome, Evaluation)
    plots = evaluation_plots(evaluation, outcome["dataset"]["class_names"], outcome["model_name"])
    if not config.save_confusion_matrix_plot:
        plots.pop("confusion_matrix.png", None)
    if not config.export_learning_curves:
        plots.pop("learning_curves.png", None)
    written: list[str] = []
    for filename, render in plots.items():
        (directory / filename).write_bytes(render())
        written.append(str(directory / filename))
    if config.export_learning_curves and evaluation.learning_curves:
        (directory / "learning_curves.json").write_text(json.dumps(outcome["learning_curves"], indent=2))
        written.append(str(directory / "learning_curves.json"))
    return written
