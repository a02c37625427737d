"""What a run's search did, candidate by candidate: the leaderboard (fidelity reached, score with
its interval, compute used, who proposed it), each proposer's record, and the compute spent.
Built from the records alone, for the report and its reading on a terminal."""

from __future__ import annotations

from typing import Any

from shared.messaging.messages import TrainingRecipe, lower_is_better
from shared.registry.records import DEFAULT_METRIC, Evaluation, IterationRecord, RunRecord, better, oriented


def fidelity(it: IterationRecord) -> str:
    """How far it got: "full budget", "rung 1" (a cheap rung), or where it stopped without a measurement."""
    if it.evaluation is None and not it.passed:
        return it.state
    if it.evaluation is None:  # promoted, its next rung not measured yet
        return f"rung {it.passed[-1].index} (promoted, {it.state})"
    return "full budget" if it.rung is None else f"rung {it.rung}"


def latest(it: IterationRecord) -> Evaluation | None:
    """The evaluation of the highest rung it finished."""
    if it.evaluation is not None:
        return it.evaluation
    return it.passed[-1].evaluation if it.passed else None


# a text model's layers worth naming, in the words a reader uses (shared/modelspec/seqlayers.py's types)
SEQUENCE_WORDS = {"EmbeddingBag": "embedding bag", "SeqConv1d": "conv", "LSTM": "LSTM", "GRU": "GRU",
                  "TransformerEncoder": "transformer"}


def layer_counts(config: dict[str, Any]) -> str:
    """A config's layers as a reader first wants them: "2 conv, 2 linear", a text model's by family
    ("1 LSTM, 1 linear") (the run's events say it too)."""
    kinds = [layer.get("type", "?") for layer in config.get("layers", []) if isinstance(layer, dict)]
    if "vocab_size" in config:
        words = [SEQUENCE_WORDS[k] for k in kinds if k in SEQUENCE_WORDS] + ["linear"] * kinds.count("Linear")
        return ", ".join(f"{words.count(w)} {w}" for w in dict.fromkeys(words)) or "embeddings only"
    return f"{kinds.count('Conv2d')} conv, {kinds.count('Linear')} linear"


def config_summary(it: IterationRecord) -> str:
    config = it.model_config
    try:
        recipe = TrainingRecipe.from_model_config(config)
        training = f"{recipe.optimizer} lr {recipe.lr:.2g}, {recipe.epochs} epochs" + (
            "" if recipe.standardize else ", raw inputs")
    except Exception:  # noqa: BLE001 - a config whose settings do not decode was rejected; say what it is
        training = "settings that do not decode"
    return f"{config.get('class_name', 'model')}: {layer_counts(config)}, {training}"


def leaderboard(run: RunRecord, iterations: list[IterationRecord]) -> list[dict[str, Any]]:
    """Every measured candidate, those at the full budget first (by the goal statistic), then by the
    rung they reached and their mean there."""
    rows = []
    goal = run.goal
    for it in iterations:
        evaluation = latest(it)
        if evaluation is None:
            continue
        summary = evaluation.summary(goal.goal_metric)
        full = it.rung is None and it.evaluation is not None
        reached = -1 if full else (it.rung if it.evaluation is not None else it.passed[-1].index)
        accuracy = evaluation.summary(DEFAULT_METRIC)
        rows.append({"iteration": it.iteration, "config": config_summary(it), "fidelity": fidelity(it),
                     "rung": None if full else reached,
                     "full_budget": full, "score": it.goal_score(goal) if full else summary.mean,
                     "metric": goal.goal_metric,
                     goal.goal_metric: {"mean": summary.mean, "ci_95": summary.ci_95, "n": summary.n},
                     "val_accuracy": {"mean": accuracy.mean, "ci_95": accuracy.ci_95, "n": accuracy.n},
                     "compute_seed_epochs": it.compute(), "proposer": it.proposer, "reasoning": it.reasoning})
    # the full budget first, then the higher cheap rungs; within each, the better score (lower, for a loss)
    ranked = lambda r: oriented(r["score"], goal.lower_is_better)  # noqa: E731
    return sorted(rows, key=lambda r: (not r["full_budget"], -(r["rung"] if r["rung"] is not None else 0),
                                       ranked(r) is None, -(ranked(r) or 0.0), r["iteration"]))


def proposers(iterations: list[IterationRecord], metric: str = DEFAULT_METRIC) -> dict[str, dict[str, Any]]:
    """How each proposer's candidates fared: how many, how many earned the full budget, the best
    mean of `metric` there."""
    out: dict[str, dict[str, Any]] = {}
    for it in iterations:
        row = out.setdefault(it.proposer, {"candidates": 0, "rejected": 0, "promoted": 0, "full_budget": 0,
                                           "best_full_mean": None, "compute_seed_epochs": 0})
        row["candidates"] += 1
        row["rejected"] += it.state == "rejected" or (it.validation is not None and not it.validation.ok)
        row["promoted"] += bool(it.passed)
        row["compute_seed_epochs"] += it.compute()
        if it.rung is None and it.evaluation is not None:
            row["full_budget"] += 1
            mean = it.evaluation.summary(metric).mean
            if better(mean, row["best_full_mean"], lower_is_better(metric)):
                row["best_full_mean"] = mean
    return out


def compute(run: RunRecord, iterations: list[IterationRecord], budget: int | None) -> dict[str, Any]:
    return {"spent_seed_epochs": sum(it.compute() for it in iterations), "budget_seed_epochs": budget,
            "candidates": len(iterations), "reached_full_budget": sum(1 for it in iterations
                                                                      if it.rung is None and it.evaluation is not None)}


def format_leaderboard(rows: list[dict[str, Any]], limit: int = 10) -> list[str]:
    lines = [f"leaderboard (top {min(limit, len(rows))} of {len(rows)} measured candidates):"]
    for r in rows[:limit]:
        acc = r[r.get("metric", "val_accuracy")]
        ci = f" [{acc['ci_95'][0]:.4f}, {acc['ci_95'][1]:.4f}]" if acc["ci_95"] else ""
        mean = "n/a" if acc["mean"] is None else f"{acc['mean']:.4f}"
        lines.append(f"  #{r['iteration']:<4} {r['fidelity']:<12} {r.get('metric', 'val_accuracy')} {mean}{ci} over {acc['n']} seed(s), "
                     f"{r['compute_seed_epochs']} seed-epochs, by {r['proposer']}: {r['config']}")
    return lines


def format_proposers(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, r in rows.items():
        best = "n/a" if r["best_full_mean"] is None else f"{r['best_full_mean']:.4f}"
        lines.append(f"  {name}: {r['candidates']} candidates ({r['rejected']} rejected), {r['promoted']} promoted, "
                     f"{r['full_budget']} at the full budget (best mean {best}), {r['compute_seed_epochs']} seed-epochs")
    return lines
