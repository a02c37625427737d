"""The built-in planner's search space: Optuna TPE over small CNNs and MLPs (and, for text, the
families of search_text.py), and local moves from a run's best candidate.

Pure logic, no I/O, and stateless: the planner may crash and resume with its history in the
registry, so every call to ``propose`` rebuilds the study from that history (``add_trial`` per
past trial) and asks for one new trial. Candidates still in flight join the study as running
trials, and TPE's constant liar counts them as poor results, so K proposals made before any of
them is measured spread out instead of landing on one point.

Why a fixed parameter set: ``create_trial`` needs the distributions of every past trial, and
a define-by-run space (ask block 3's settings only when there are 3 blocks) would give each
trial its own set. Instead every parameter is asked every time, including those the chosen
architecture ignores (``hidden_3`` of a 1-layer MLP), so one distributions dict fits all
trials of a run. The ignored values are harmless to TPE: they just carry no signal.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import TrialState

from services.planner.search_text import check_text, text_defaults, text_model_config, text_space
from shared.messaging.messages import DEFAULT_RECIPE, DatasetFacts, Optimizer

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_STARTUP_TRIALS = 5  # random trials (including the default) before TPE models the history
MAX_CONV_BLOCKS = 3
MAX_POOLED_SIDE = 4  # the CNN head sees at most 4x4 positions (AdaptiveAvgPool2d above that)
FAILED_SCORE = 0.0  # what a failed trial tells the sampler, so it learns to avoid the region
MAX_TRIALS = 200  # measured trials the sampler is rebuilt from, at most (_window)


@dataclass(frozen=True)
class SearchBounds:
    min_epochs: int = 5
    max_epochs: int = 20
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    num_train: int | None = None  # training samples per seed (batches larger are cut); None: the whole set


@dataclass(frozen=True)
class Proposal:
    params: dict[str, Any]  # JSON-serialisable; store it in the history as is
    model_config: dict[str, Any]  # seed format, ready for the assembler
    history_used: int = 0  # past trials given to the sampler (ones outside the space are skipped)
    reasoning: str = ""  # where it came from, truthfully: the run's events and report say it


# ---- the space ----

def _check(facts: DatasetFacts, bounds: SearchBounds) -> None:
    if facts.kind == "image" and len(facts.input_shape) != 3:
        raise ValueError(f"image data needs input_shape (C, H, W), got {facts.input_shape}; "
                         "use kind='tabular' for flat features")
    if facts.kind == "tabular" and len(facts.input_shape) != 1:
        raise ValueError(f"tabular data needs input_shape (F,), got {facts.input_shape}; "
                         "use kind='image' for (C, H, W)")
    if facts.kind == "text":
        check_text(facts)
    if facts.kind not in ("image", "tabular", "text"):
        raise ValueError(f"unknown data kind {facts.kind!r}; known: image, tabular, text")
    if facts.num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {facts.num_classes}")
    if not 1 <= bounds.min_epochs <= bounds.max_epochs:
        raise ValueError(f"need 1 <= min_epochs <= max_epochs, got {bounds.min_epochs}, "
                         f"{bounds.max_epochs}")
    if not bounds.batch_sizes or min(bounds.batch_sizes) < 1:
        raise ValueError(f"batch_sizes must be positive ints, got {bounds.batch_sizes}")


def _batch_sizes(facts: DatasetFacts, bounds: SearchBounds) -> list[int]:
    # A batch larger than the training set is the whole set; keep at least the smallest.
    num_train = facts.num_samples if bounds.num_train is None else bounds.num_train
    fit = sorted(b for b in set(bounds.batch_sizes) if b <= num_train)
    return fit or [min(bounds.batch_sizes)]


def search_space(facts: DatasetFacts, bounds: SearchBounds = SearchBounds()
                 ) -> dict[str, BaseDistribution]:
    """The fixed distributions of a run, in a stable order (see the module docstring)."""
    _check(facts, bounds)
    space: dict[str, BaseDistribution] = {}
    if facts.kind == "image":
        space |= {
            "n_blocks": IntDistribution(1, MAX_CONV_BLOCKS),
            "base_channels": CategoricalDistribution([8, 16, 32, 64]),  # doubles per block
            "kernel_size": CategoricalDistribution([3, 5]),
            "dense_units": CategoricalDistribution([0, 64, 128, 256]),  # 0: no hidden layer
        }
    elif facts.kind == "text":
        space |= text_space()
    else:
        space |= {
            "n_layers": IntDistribution(1, 3),
            **{f"hidden_{i}": CategoricalDistribution([32, 64, 128, 256]) for i in (1, 2, 3)},
            # the trusted data pipeline's per-feature standardisation (training split statistics)
            "standardize": CategoricalDistribution([True, False]),
        }
    if facts.kind != "text":  # no BatchNorm over token positions
        space["batch_norm"] = CategoricalDistribution([False, True])
    space |= {
        "activation": CategoricalDistribution(["ReLU", "GELU", "SiLU"]),
        "dropout": FloatDistribution(0.0, 0.5),
        "optimizer": CategoricalDistribution(list(get_args(Optimizer))),
        "lr": FloatDistribution(1e-4, 3e-2, log=True),
        "use_weight_decay": CategoricalDistribution([False, True]),  # False: weight_decay 0
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "epochs": IntDistribution(bounds.min_epochs, bounds.max_epochs),
        "batch_size": CategoricalDistribution(_batch_sizes(facts, bounds)),
    }
    if facts.imbalanced:  # a run's facts never change, so every trial of it has this parameter or none does
        space["class_weights"] = CategoricalDistribution([False, True])  # the loss's "balanced" class weights
    return space


def default_params(facts: DatasetFacts, bounds: SearchBounds = SearchBounds()) -> dict[str, Any]:
    """A known-good first trial: easy data (digits, breast cancer) reach high accuracy with it."""
    sizes = _batch_sizes(facts, bounds)
    recipe = DEFAULT_RECIPE
    shared = {
        "dropout": 0.1, "optimizer": recipe.optimizer, "lr": recipe.lr, "use_weight_decay": False,
        "weight_decay": 1e-4, "activation": "ReLU",
        "epochs": min(max(recipe.epochs, bounds.min_epochs), bounds.max_epochs),
        "batch_size": recipe.batch_size if recipe.batch_size in sizes else sizes[0],
    }
    if facts.imbalanced:  # unweighted first: weights trade accuracy for the rare classes' recall
        shared["class_weights"] = False
    if facts.kind == "image":
        return {"n_blocks": 2, "base_channels": 32, "kernel_size": 3, "dense_units": 128,
                "batch_norm": True, **shared}
    if facts.kind == "text":
        return {**text_defaults(), **shared}
    # No BatchNorm1d by default: a last training batch of one sample would make it raise.
    return {"n_layers": 2, "hidden_1": 128, "hidden_2": 64, "hidden_3": 64,
            "standardize": True, "batch_norm": False, **shared}


# ---- params -> model_config ----

def _cnn_layers(facts: DatasetFacts, p: dict[str, Any]) -> list[dict[str, Any]]:
    _, h, w = facts.input_shape
    k, act = p["kernel_size"], p["activation"]
    layers: list[dict[str, Any]] = []
    channels = p["base_channels"]
    for _ in range(p["n_blocks"]):
        # same-padding keeps (H, W); in_channels is left to the assembler to infer.
        layers.append({"type": "Conv2d", "out_channels": channels, "kernel_size": k,
                       "padding": k // 2})
        if p["batch_norm"]:
            layers.append({"type": "BatchNorm2d"})
        layers.append({"type": act})
        if min(h, w) >= 2:  # halve only while a side stays >= 1: 8x8 allows 3 halvings
            layers.append({"type": "MaxPool2d", "kernel_size": 2})
            h, w = h // 2, w // 2
        channels *= 2
    if max(h, w) > MAX_POOLED_SIDE:  # keep the dense head small on large images
        h, w = min(h, MAX_POOLED_SIDE), min(w, MAX_POOLED_SIDE)
        layers.append({"type": "AdaptiveAvgPool2d", "output_size": [h, w]})
    layers.append({"type": "Flatten"})
    if p["dense_units"]:
        layers += _dropout(p) + [{"type": "Linear", "out_features": p["dense_units"]},
                                 {"type": act}]
    return layers + _dropout(p) + [{"type": "Linear", "out_features": facts.num_classes}]


def _mlp_layers(facts: DatasetFacts, p: dict[str, Any]) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = []
    for i in range(1, p["n_layers"] + 1):
        layers.append({"type": "Linear", "out_features": p[f"hidden_{i}"]})
        if p["batch_norm"]:
            layers.append({"type": "BatchNorm1d"})
        layers += [{"type": p["activation"]}] + _dropout(p)
    return layers + [{"type": "Linear", "out_features": facts.num_classes}]


def _dropout(p: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "Dropout", "p": round(p["dropout"], 4)}] if p["dropout"] > 0 else []


def to_model_config(facts: DatasetFacts, params: dict[str, Any]) -> dict[str, Any]:
    """The seed-format model_config of one point of the space."""
    model = text_model_config(facts, params) if facts.kind == "text" else None
    image = facts.kind == "image"
    if model is None:
        layers = _cnn_layers(facts, params) if image else _mlp_layers(facts, params)
        model = {"class_name": "SearchCNN" if image else "SearchMLP", "input_shape": list(facts.input_shape),
                 "num_classes": facts.num_classes, "layers": layers}
    return {
        **model,
        "optimizer": params["optimizer"],
        "lr": params["lr"],
        "weight_decay": params["weight_decay"] if params["use_weight_decay"] else 0.0,
        "epochs": params["epochs"],
        "batch_size": params["batch_size"],
        **({"standardize": params["standardize"]} if "standardize" in params else {}),
        **({"class_weights": params["class_weights"]} if "class_weights" in params else {}),
    }


# ---- the study ----

def _sampler_seed(seed: int, n_history: int) -> int:
    # Mixed with the history length: a fresh sampler with the run's seed alone would draw
    # the same "random" startup trial on every call.
    return (seed * 1_000_003 + n_history) % 2**32


Sampler = Literal["tpe", "random"]


def rebuild_study(facts: DatasetFacts, history: Sequence[tuple[dict, float | None]], *,
                  seed: int, bounds: SearchBounds = SearchBounds(), pending: Sequence[dict] = (),
                  sampler: Sampler = "tpe") -> tuple[optuna.Study, int]:
    """A fresh in-memory study holding the history (and `pending` as running trials); returns it
    and how many finished trials it took.

    A past trial whose params do not fit this space (bounds changed on resume, a trial
    proposed by something else) is skipped rather than failing the whole run.
    """
    space = search_space(facts, bounds)
    with warnings.catch_warnings():  # multivariate TPE is "experimental" in optuna < 4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        chosen = (RandomSampler(seed=_sampler_seed(seed, len(history) + len(pending))) if sampler == "random" else
                  TPESampler(seed=_sampler_seed(seed, len(history) + len(pending)), n_startup_trials=N_STARTUP_TRIALS,
                             multivariate=True, constant_liar=True))
    study = optuna.create_study(direction="maximize", sampler=chosen)
    # a failed trial scores as low as the worst measured one, and never above FAILED_SCORE: with an
    # oriented loss (negated, so every score is below 0) a fixed 0 would rank a failure first
    measured = [s for _, s in history if s is not None and math.isfinite(s)]
    failed_value = min([FAILED_SCORE, *measured])
    used = 0
    for params, score in [*history, *((p, math.nan) for p in pending)]:
        running = score is not None and math.isnan(score)
        if set(params) != set(space):
            continue
        try:
            if running:
                trial = optuna.trial.create_trial(params=dict(params), distributions=space, state=TrialState.RUNNING)
            else:
                value = failed_value if score is None or not math.isfinite(score) else float(score)
                trial = optuna.trial.create_trial(params=dict(params), distributions=space, value=value)
            study.add_trial(trial)
        except ValueError:  # a value outside its distribution
            continue
        used += not running
    return study, used


def propose(facts: DatasetFacts, history: Sequence[tuple[dict, float | None]], *, seed: int,
            bounds: SearchBounds = SearchBounds(), pending: Sequence[dict] = (),
            sampler: Sampler = "tpe") -> Proposal:
    """The next configuration to evaluate; the same inputs give the same proposal.

    ``history`` holds ``(params, score)`` of measured trials in order: params as returned in
    ``Proposal.params``, score the trial's mean of the goal's metric at the highest rung it
    finished, turned so that higher is better (a loss negated), None for a failed trial. ``pending`` holds the params of trials still in flight.
    """
    shown, note = _window(history)
    # past the window the sampler's seed still moves with the run (its history's length alone would not)
    study, used = rebuild_study(facts, shown, seed=seed if len(shown) == len(history) else seed + len(history),
                                bounds=bounds, pending=pending, sampler=sampler)
    first = used == 0 and not pending
    if first:
        study.enqueue_trial(default_params(facts, bounds))
    space = search_space(facts, bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        trial = study.ask(space)
    params = {name: trial.params[name] for name in space}  # in the space's order
    if first:
        why = "the search's known-good default, its first trial"
    elif sampler == "random":
        why = "a random sample of the space (random search)"
    elif used + len(pending) < N_STARTUP_TRIALS:
        why = f"a random sample: the search's first {N_STARTUP_TRIALS} trials explore before TPE models them"
    else:
        why = f"TPE's pick from the {used} measured trials{note}" + (
            f", the {len(pending)} in flight counted as poor so it looks elsewhere" if pending else "")
    return Proposal(params=params, model_config=to_model_config(facts, params), history_used=used, reasoning=why)


def _window(history: Sequence[tuple[dict, float | None]]) -> tuple[list[tuple[dict, float | None]], str]:
    """At most MAX_TRIALS of a long history for the sampler: the best half of the older trials and the
    latest ones. Rebuilding the study costs a fraction of a millisecond per trial, so a run of 500
    candidates would pay for every one of them at every proposal; TPE's model of the good region
    rests on the best trials, which are all kept, and the latest show where the search is now."""
    if len(history) <= MAX_TRIALS:
        return list(history), ""
    half = MAX_TRIALS // 2
    older, recent = list(history[:-half]), list(history[-half:])
    best = sorted(older, key=lambda h: -(h[1] if h[1] is not None and math.isfinite(h[1]) else -1.0))[:half]
    return best + recent, f" (the best {len(best)} earlier ones and the latest {len(recent)} of {len(history)})"


# ---- local moves from the incumbent ----
Hint = Literal["still_improving", "overfitting"]


def local_move(facts: DatasetFacts, params: dict[str, Any], *, hint: Hint | None, seed: int,
               bounds: SearchBounds = SearchBounds(), label: str = "the best so far") -> Proposal:
    """A step from the incumbent's params that its learning curves argue for: more epochs while
    its validation curve still improved, more regularisation where it overfit, else a nearby
    learning rate. `label` names the incumbent in the reasoning."""
    space = search_space(facts, bounds)
    moved, why = dict(params), ""
    epochs_cap = space["epochs"].high  # type: ignore[attr-defined]
    if hint == "still_improving" and params["epochs"] < epochs_cap:
        moved["epochs"] = min(epochs_cap, math.ceil(params["epochs"] * 1.5))
        why = f"its validation curve was still improving: {params['epochs']} -> {moved['epochs']} epochs"
    elif hint == "overfitting":
        moved["dropout"] = min(0.5, params["dropout"] + 0.15)
        moved["use_weight_decay"] = True
        moved["weight_decay"] = min(1e-2, max(1e-4, params["weight_decay"] * 3))
        why = (f"it overfit: more regularisation (dropout {params['dropout']:.2f} -> {moved['dropout']:.2f}, "
               f"weight decay {moved['weight_decay']:.0e})")
    else:
        rng = random.Random(seed)
        lr_low, lr_high = space["lr"].low, space["lr"].high  # type: ignore[attr-defined]
        factor = rng.choice((0.5, 2.0))
        moved["lr"] = min(lr_high, max(lr_low, params["lr"] * factor))
        if moved["lr"] == params["lr"]:
            moved["lr"] = min(lr_high, max(lr_low, params["lr"] / factor))
        why = f"a nearby learning rate ({params['lr']:.2g} -> {moved['lr']:.2g})"
    return Proposal(params=moved, model_config=to_model_config(facts, moved),
                    reasoning=f"a local move from {label}: {why}")
