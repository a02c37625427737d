"""Reading a learning curve: overfitting, convergence, gradient health, and what to do about them.

The planner (and the people reading a report) get short, specific sentences with the numbers
that back them, not just labels. Every threshold is a named constant below.
"""

from __future__ import annotations

import math
import statistics

# ---- overfitting: severity is the worse of the two signals ----
# final train accuracy minus final validation accuracy (absolute, accuracy in [0, 1])
GAP_MILD, GAP_MODERATE, GAP_SEVERE = 0.05, 0.10, 0.20
# rise of the final validation loss over its minimum, relative to that minimum
RISE_MILD, RISE_MODERATE, RISE_SEVERE = 0.10, 0.25, 0.50

# ---- convergence ----
IMPROVING_WINDOW = 3  # epochs: the trend is judged from the first to the last of the last 3
IMPROVING_MIN = 0.02  # relative fall of the loss over that window above which training goes on paying
UNSTABLE_UP_FRACTION = 1 / 3  # share of epoch-to-epoch steps in which the loss rose: oscillation
SHORT_CURVE = 3  # epochs: below this there is no trend to judge, only a direction

# ---- gradient norms (per-epoch means of the global L2 norm) ----
GRAD_EXPLODING_NORM = 1e3  # beyond this any network's updates are dominated by a few steps
GRAD_SPIKE_RATIO = 10.0  # a norm this many times the curve's median is a spike
GRAD_VANISHING_NORM = 1e-5  # a median below this means the weights barely move

SEVERITIES = ("none", "mild", "moderate", "severe")


def analyse_learning(curve: list[dict]) -> dict:
    """Diagnose one seed's curve: entries carry `epoch`, `train_loss`, `train_accuracy` and
    optionally `val_loss`, `val_accuracy`, `grad_norm` (None counts as absent)."""
    if not curve:
        raise ValueError("empty learning curve: nothing to analyse")
    entries = sorted(curve, key=lambda e: e["epoch"])
    insights: list[str] = []
    if len(entries) < SHORT_CURVE:
        insights.append(f"only {len(entries)} epoch(s) recorded: too short to judge trends reliably")
    overfitting = _overfitting(entries, insights)
    convergence = _convergence(entries, overfitting, insights)
    gradients = _gradients(entries, insights)
    if not insights:
        gap = overfitting["gap"]
        gap_text = f" (train/val accuracy gap {gap:.3f})" if gap is not None else ""
        insights.append(f"training converged without signs of overfitting or instability{gap_text}")
    return {"overfitting": overfitting, "convergence": convergence, "gradient_norms": gradients, "insights": insights}


def _values(entries: list[dict], key: str) -> list[float | None]:
    return [None if e.get(key) is None else float(e[key]) for e in entries]


def _severity(value: float | None, mild: float, moderate: float, severe: float) -> str:
    if value is None or not math.isfinite(value):
        return "none"
    for name, threshold in (("severe", severe), ("moderate", moderate), ("mild", mild)):
        if value > threshold:
            return name
    return "none"


def _overfitting(entries: list[dict], insights: list[str]) -> dict:
    """Severity from the final accuracy gap and from the rise of the validation loss after its best."""
    gap = rise = best_epoch = None
    train_acc, val_acc = entries[-1].get("train_accuracy"), entries[-1].get("val_accuracy")
    if train_acc is not None and val_acc is not None:
        gap = float(train_acc) - float(val_acc)
    val_loss = [(e["epoch"], v) for e, v in zip(entries, _values(entries, "val_loss")) if v is not None and math.isfinite(v)]
    if val_loss:
        best_epoch, best = min(val_loss, key=lambda ev: ev[1])
        rise = (val_loss[-1][1] - best) / max(abs(best), 1e-12)
    if gap is None and rise is None:
        insights.append("no validation data in the curve: overfitting cannot be judged")
    by_gap = _severity(gap, GAP_MILD, GAP_MODERATE, GAP_SEVERE)
    by_rise = _severity(rise, RISE_MILD, RISE_MODERATE, RISE_SEVERE)
    severity = max(by_gap, by_rise, key=SEVERITIES.index)
    if by_rise != "none":
        insights.append(f"validation loss rose {rise:.0%} from its minimum at epoch {best_epoch}: "
                        f"overfitting ({severity}); stop earlier or regularise")
    if by_gap != "none":
        insights.append(f"train accuracy exceeds validation accuracy by {gap:.3f} at the last epoch: "
                        f"overfitting ({severity}); add regularisation, augmentation or more data")
    return {"detected": severity != "none", "severity": severity, "gap": gap, "val_loss_rise": rise,
            "best_epoch": best_epoch}


def _convergence(entries: list[dict], overfitting: dict, insights: list[str]) -> dict:
    """converged, still_improving or unstable, judged on validation loss when every epoch has one."""
    val = _values(entries, "val_loss")
    metric = "val_loss" if all(v is not None for v in val) else "train_loss"
    losses = val if metric == "val_loss" else _values(entries, "train_loss")
    label = "validation loss" if metric == "val_loss" else "training loss"
    epochs = [e["epoch"] for e in entries]

    bad = [ep for ep, v in zip(epochs, losses) if v is None or not math.isfinite(v)]
    if bad:
        insights.append(f"{label} became non-finite at epoch {bad[0]}: lower the learning rate or clip gradients")
        return {"status": "unstable", "metric": metric, "reason": f"{label} non-finite from epoch {bad[0]}"}

    # a sustained rise after the best epoch is overfitting, reported there, not oscillation
    past_best = metric == "val_loss" and (overfitting["val_loss_rise"] or 0.0) > RISE_MILD
    judged = losses[:epochs.index(overfitting["best_epoch"]) + 1] if past_best else losses
    steps = [b - a for a, b in zip(judged, judged[1:])]
    ups = sum(s > 0 for s in steps)
    if len(entries) >= SHORT_CURVE and steps and ups / len(steps) > UNSTABLE_UP_FRACTION:
        insights.append(f"{label} oscillates (rose in {ups} of {len(steps)} epoch-to-epoch steps): lower the learning rate")
        return {"status": "unstable", "metric": metric, "reason": f"{label} rose in {ups} of {len(steps)} steps"}

    if len(losses) == 1:
        return {"status": "converged", "metric": metric, "reason": "a single epoch: no trend to judge"}
    window = losses[-IMPROVING_WINDOW:]
    change = (window[-1] - window[0]) / max(abs(window[0]), 1e-12)
    span = f"over the last {len(window)} epochs"
    if -change > IMPROVING_MIN:
        insights.append(f"{label} still falling at the last epoch ({change:+.0%} {span}): more epochs would likely help")
        return {"status": "still_improving", "metric": metric, "reason": f"{label} changed {change:+.1%} {span}"}
    if past_best:
        reason = f"{label} passed its minimum at epoch {overfitting['best_epoch']} (see overfitting)"
    else:
        reason = f"{label} changed {change:+.1%} {span}"
    return {"status": "converged", "metric": metric, "reason": reason}


def _gradients(entries: list[dict], insights: list[str]) -> dict | None:
    """Summary of per-epoch gradient norms, or None when the harness did not track them."""
    norms = [v for v in _values(entries, "grad_norm") if v is not None]
    if not norms:
        return None
    finite = [v for v in norms if math.isfinite(v)]
    median = statistics.median(finite) if finite else math.inf
    peak = max(norms)
    exploding = (len(finite) < len(norms) or peak > GRAD_EXPLODING_NORM
                 or (len(finite) >= SHORT_CURVE and peak > GRAD_SPIKE_RATIO * median))
    vanishing = bool(finite) and median < GRAD_VANISHING_NORM
    if exploding:
        insights.append(f"gradient norms explode (max {peak:.3g}, median {median:.3g}): "
                        "clip gradients or lower the learning rate")
    if vanishing:
        insights.append(f"gradient norms vanish (median {median:.2g}): check activations and initialisation, "
                        "add normalisation or residual connections")
    return {"mean": statistics.fmean(norms) if finite and len(finite) == len(norms) else None,
            "max": peak if math.isfinite(peak) else None, "last": norms[-1] if math.isfinite(norms[-1]) else None,
            "exploding": exploding, "vanishing": vanishing}
