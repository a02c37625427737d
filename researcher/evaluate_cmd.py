"""`researcher evaluate FILE` (generated-code path: locked-down containers, scored outside) and
`quick-evaluator` (the engine as a library, in-process, on a trusted model)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import msgspec

from researcher.goals import DefaultsHelp
from shared.data.files import LOCAL_HINT, with_hint
from shared.errors import ConfigFileError, DatasetError, DatasetUnavailableError, SandboxUnavailableError
from shared.messaging.messages import DEFAULT_RECIPE, EvalJob, GoalStatistic, Optimizer, TrainingRecipe, meets_target
from shared.registry.costs import evaluation_cost, format_cost
from shared.registry.records import Evaluation
from shared.runtime.config import load_config

if TYPE_CHECKING:
    from torch import nn

# torch, numpy, the data sets and the evaluation engine are imported by the functions that
# use them: `researcher` imports this module for its parser, and `researcher --help` must not
# pay for torch.


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", formatter_class=DefaultsHelp, help="train and score one model file the way the evaluator service does",
                       description="Train one model file in the locked-down container, one container per seed, and "
                                   "score its predictions outside. Exit 0: evaluated; 1: every seed failed; 2: usage.")
    p.add_argument("file", type=Path)
    p.add_argument("--class-name", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--num-seeds", type=int, default=3)
    p.add_argument("--subset-size", type=int, default=None)
    recipe_args(p)
    p.add_argument("--target-accuracy", type=float, default=None)
    p.add_argument("--goal-statistic", choices=get_args(GoalStatistic), default="mean")
    p.add_argument("--json", action="store_true")


def recipe_args(p: argparse.ArgumentParser) -> None:
    """The training recipe's flags, their defaults the recipe's own."""
    d = DEFAULT_RECIPE
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=get_args(Optimizer), default=d.optimizer)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--augment", action="store_true", default=d.augment, help="random crop and flip of image batches")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=d.standardize,
                   help="scale the inputs by the training split's mean and std (per feature; per channel for images); "
                        "--no-standardize trains on the raw values (default: %(default)s)")
    p.add_argument("--class-weights", action="store_true", default=d.class_weights,
                   help="weigh the loss by n_samples / (n_classes * count) per class of the training split (imbalanced data)")


def recipe_from(args: argparse.Namespace) -> TrainingRecipe:
    return TrainingRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                          weight_decay=args.weight_decay, augment=args.augment, standardize=args.standardize,
                          class_weights=args.class_weights)


def format_evaluation(evaluation: Evaluation, title: str, goal: tuple[str, float | None, bool | None] | None = None) -> str:
    """A terminal reading of an evaluation; `goal` is (statistic, its value, achieved) when one was set."""
    lines = [title]
    for name, s in evaluation.aggregated.items():
        if s.mean is None:
            continue
        ci = f"  95% CI [{s.ci_95[0]:.4f}, {s.ci_95[1]:.4f}]" if s.ci_95 else ""
        lines.append(f"  {name:<24} {s.mean:.4f} ± {s.std or 0.0:.4f}{ci}  (n={s.n})")
    for failed in evaluation.failed_seeds:
        lines.append(f"  seed {failed.seed} failed ({failed.reason or 'error'}): {failed.error}")
    final = evaluation.final
    if final is not None:
        for c in final.top_confusions[:3]:
            lines.append(f"  confuses {c.true} as {c.predicted}: {c.count} times ({c.rate:.0%})")
        if final.class_balance is not None:
            lines.append(f"  {final.class_balance.note}")
    for row in evaluation.seed_results:
        for insight in (row.dynamics.insights if row.dynamics else [])[:2]:
            lines.append(f"  seed {row.seed}: {insight}")
    cost = evaluation_cost(evaluation)
    if cost.seeds:  # containers measured from outside (quick-evaluator's in-process seeds are not)
        lines.append(f"  cost: {format_cost(cost)}")
    if goal is not None and goal[2] is not None:
        statistic, value, achieved = goal
        lines.append(f"  goal achieved: {achieved} ({statistic} = {value if value is None else round(value, 4)})")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.data.datasets import load_dataset
    from shared.evaluation.aggregate import summarise
    from shared.evaluation.in_container import evaluate_job, finite
    from shared.sandboxing.runners import make_eval_runner

    try:
        config = load_config()
        source = args.file.read_text(encoding="utf-8")
        # the evaluator service's rule, as this command trains the way it does: a CSV file in data.dir
        load_dataset(args.dataset, data_dir=config.data.dir, config=config.data)
    except DatasetError as exc:
        print(f"error: --dataset: {with_hint(exc, LOCAL_HINT)}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError, ConfigFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        runner = make_eval_runner(config, owner=f"cli-evaluate-{time.time_ns()}")
    except SandboxUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    seeds = list(range(args.num_seeds))
    results = {}
    for seed in tqdm(seeds, desc="seeds", unit="seed", file=sys.stderr, leave=False):
        job = EvalJob.with_recipe(recipe_from(args), job_id=f"cli-{seed}", run_id="cli", iteration=0, seed=seed, dataset=args.dataset,
                      class_name=args.class_name, source=source, subset_size=args.subset_size)
        try:
            results[seed] = evaluate_job(job, runner, timeout_s=config.evaluator.train_timeout_s,
                                         memory=config.evaluator.memory, data_config=config.data)
        except DatasetUnavailableError as exc:  # checked above; gone since (a data dir unmounted, say)
            runner.remove_strays()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except SandboxUnavailableError as exc:  # the Docker engine went away mid-run
            print(f"error: {exc}", file=sys.stderr)
            return 3
    runner.remove_strays()
    evaluation = summarise(results, seeds)
    value = evaluation.score(args.goal_statistic)
    achieved = None if args.target_accuracy is None else meets_target(value, args.target_accuracy)
    if args.json:
        print(json.dumps(finite({**msgspec.to_builtins(evaluation), "goal_statistic": args.goal_statistic,
                                 "goal_value": value, "goal_achieved": achieved}), indent=2, allow_nan=False))  # no NaN tokens
    else:
        print(format_evaluation(evaluation, f"{args.class_name} on {args.dataset}, {args.num_seeds} seeds (in containers)",
                                (args.goal_statistic, value, achieved)))
    return 0 if any(r.ok for r in results.values()) else 1


# ---- quick-evaluator: the library on a trusted model ----
def reference_model(input_shape: tuple[int, ...], num_classes: int, vocab_size: int = 0) -> nn.Module:
    """A small, sensible baseline: a two-block CNN for images, a two-layer MLP for tables, and for
    token ids (a vocab_size) a text CNN, max pooled over the tokens."""
    import numpy as np
    from torch import nn

    if vocab_size:
        return _text_reference(input_shape, num_classes, vocab_size)

    if len(input_shape) == 3:
        channels, height, width = input_shape
        pooled = (height // 4) * (width // 4)
        return nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * pooled, 128), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(128, num_classes))
    features = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))


def _text_reference(input_shape: tuple[int, ...], num_classes: int, vocab_size: int) -> nn.Module:
    """Built by the assembler, as a search's candidate is (its sequence layers take the padding
    mask); its source is our own output, so it runs in this process."""
    from shared.modelspec.assemble import assemble

    model = assemble({"class_name": "TextCNN", "input_shape": list(input_shape), "vocab_size": vocab_size,
                      "num_classes": num_classes,
                      "layers": [{"type": "Embedding", "embedding_dim": 64},
                                 {"type": "SeqConv1d", "out_channels": 64, "kernel_size": 3}, {"type": "ReLU"},
                                 {"type": "SeqPool", "mode": "max"}, {"type": "Dropout", "p": 0.1},
                                 {"type": "Linear", "out_features": num_classes}]})
    namespace: dict = {}
    exec(compile(model.source, "<assembled TextCNN>", "exec"), namespace)
    return namespace[model.class_name]()


def load_trusted_model(path: Path, class_name: str) -> nn.Module:
    """Your own model file, imported in this process: only for code you trust (generated code
    belongs in `researcher evaluate`, which runs it in the sandbox)."""
    from torch import nn

    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{path} defines no nn.Module class {class_name!r}")
    return cls()


QUICK_HINT = ("or pass --data-dir DIR where the files are, or --download to fetch a torchvision set (needs "
              "torchvision matching torch) or an hf: set (through the datasets library), with internet access")


def quick_evaluator_main(argv: list[str] | None = None) -> int:
    from shared.data.datasets import load_dataset
    from shared.evaluation.quick_eval import QuickEvalConfig, quick_evaluate_once

    p = argparse.ArgumentParser(prog="quick-evaluator", formatter_class=DefaultsHelp, description="Multi-seed quick evaluation of a trusted model, "
                                "in-process (a built-in baseline unless --model-file is given).")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model-file", type=Path, default=None, help="your own (trusted) model file")
    p.add_argument("--class-name", default=None)
    p.add_argument("--num-seeds", type=int, default=3)
    p.add_argument("--subset-size", type=int, default=None)
    recipe_args(p)
    p.add_argument("--target-accuracy", type=float, default=None)
    p.add_argument("--goal-statistic", choices=get_args(GoalStatistic), default="mean")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None, help="where torchvision data sets live (default: data.dir)")
    p.add_argument("--output-dir", type=Path, default=None, help="write the confusion matrix and learning curves here")
    p.add_argument("--download", action="store_true", help="fetch a missing torchvision data set (needs torchvision and internet)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true", help="every metric, per-class table and training insights")
    args = p.parse_args(argv)
    if args.model_file and not args.class_name:
        p.error("--model-file needs --class-name")
    try:
        settings = load_config().data
        data_dir = args.data_dir or settings.dir
        # trusted: the user's own files in the user's own process, so a CSV path may lie anywhere
        dataset = load_dataset(args.dataset, data_dir=data_dir, download_missing=args.download, any_csv_path=True,
                               config=settings)
        model = (load_trusted_model(args.model_file, args.class_name) if args.model_file
                 else reference_model(dataset.input_shape, dataset.num_classes, dataset.facts().vocab_size))
        config = QuickEvalConfig(dataset_name=args.dataset, num_seeds=args.num_seeds, epochs=args.epochs,
                                 batch_size=args.batch_size, subset_size=args.subset_size, lr=args.lr,
                                 optimizer=args.optimizer, weight_decay=args.weight_decay,
                                 target_accuracy=args.target_accuracy, goal_statistic=args.goal_statistic,
                                 device=args.device, data_dir=data_dir, val_fraction=settings.val_fraction,
                                 data_settings=settings, augment=args.augment,
                                 standardize=args.standardize, class_weights=args.class_weights,
                                 output_dir=str(args.output_dir) if args.output_dir else None,
                                 save_confusion_matrix_plot=bool(args.output_dir), export_learning_curves=bool(args.output_dir))
    except DatasetError as exc:
        print(f"error: --dataset: {with_hint(exc, QUICK_HINT)}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ConfigFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = quick_evaluate_once(model, config)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    evaluation = msgspec.convert(result, Evaluation)
    goal = (config.goal_statistic, result["goal_value"], result["goal_achieved"] if args.target_accuracy is not None else None)
    print(format_evaluation(evaluation, f"{result['model_name']} on {args.dataset}, {args.num_seeds} seeds "
                                        f"(best seed {evaluation.best_seed}, {result['total_time_s']:.1f} s)", goal))
    if args.verbose and evaluation.final is not None:
        print("  per class:       precision  recall     f1  specificity  support")
        for row in evaluation.final.per_class:
            print(f"    {row.class_name:<14} {row.precision:.3f}   {row.recall:.3f}  {row.f1:.3f}    "
                  f"{row.specificity:.3f}    {row.support}")
        for path in result.get("artifacts", []):
            print(f"  wrote {path}")
    return 0
