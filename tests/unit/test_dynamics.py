"""Learning-curve diagnosis on hand-made curves: one per severity, convergence status and gradient failure."""

import json
import math

import pytest

from shared.evaluation.dynamics import (GAP_MILD, GAP_MODERATE, GAP_SEVERE, RISE_MILD, RISE_MODERATE, RISE_SEVERE,
                             analyse_learning)


def make(train_loss, train_acc=None, val_loss=None, val_acc=None, grad=None) -> list[dict]:
    """A curve from per-epoch lists; a scalar accuracy is repeated over every epoch."""
    n = len(train_loss)
    column = lambda v: v if isinstance(v, list) else [v] * n  # noqa: E731
    curve = []
    for i in range(n):
        entry = {"epoch": i + 1, "train_loss": train_loss[i], "train_accuracy": column(train_acc if train_acc is not None else 0.9)[i]}
        for key, values in (("val_loss", val_loss), ("val_accuracy", val_acc), ("grad_norm", grad)):
            if values is not None:
                entry[key] = column(values)[i]
        curve.append(entry)
    return curve


FALLING = [2.0, 1.2, 0.8, 0.7, 0.69, 0.688]  # converged training loss


# ---- overfitting ----

@pytest.mark.parametrize("gap, severity", [
    (GAP_MILD - 0.001, "none"), (GAP_MILD + 0.001, "mild"),
    (GAP_MODERATE - 0.001, "mild"), (GAP_MODERATE + 0.001, "moderate"),
    (GAP_SEVERE - 0.001, "moderate"), (GAP_SEVERE + 0.001, "severe"),
])
def test_severity_from_the_accuracy_gap(gap, severity):
    result = analyse_learning(make(FALLING, train_acc=0.95, val_loss=FALLING, val_acc=0.95 - gap))
    assert result["overfitting"]["severity"] == severity
    assert result["overfitting"]["detected"] is (severity != "none")
    assert result["overfitting"]["gap"] == pytest.approx(gap)


@pytest.mark.parametrize("rise, severity", [
    (RISE_MILD - 0.01, "none"), (RISE_MILD + 0.01, "mild"),
    (RISE_MODERATE - 0.01, "mild"), (RISE_MODERATE + 0.01, "moderate"),
    (RISE_SEVERE - 0.01, "moderate"), (RISE_SEVERE + 0.01, "severe"),
])
def test_severity_from_the_rise_of_validation_loss(rise, severity):
    val = [2.0, 1.0, 0.5, 0.5 * (1 + rise / 2), 0.5 * (1 + rise)]
    result = analyse_learning(make(FALLING[:5], val_loss=val, val_acc=0.9))
    overfitting = result["overfitting"]
    assert overfitting["severity"] == severity
    assert overfitting["val_loss_rise"] == pytest.approx(rise)
    assert overfitting["best_epoch"] == 3


def test_the_worse_signal_sets_the_severity_and_insights_give_numbers():
    val = [2.0, 1.0, 0.5, 0.6, 0.8]  # rise 60%: severe; gap 0.07: mild
    result = analyse_learning(make(FALLING[:5], train_acc=0.97, val_loss=val, val_acc=0.90))
    assert result["overfitting"]["severity"] == "severe"
    text = " ".join(result["insights"])
    assert "validation loss rose 60% from its minimum at epoch 3" in text
    assert "0.070" in text and "regularis" in text


def test_without_validation_overfitting_is_not_judged():
    result = analyse_learning(make(FALLING))
    assert result["overfitting"] == {"detected": False, "severity": "none", "gap": None,
                                     "val_loss_rise": None, "best_epoch": None}
    assert any("no validation data" in s for s in result["insights"])


# ---- convergence ----

def test_still_improving_when_the_loss_falls_over_the_last_epochs():
    result = analyse_learning(make([2.0, 1.5, 1.2, 1.0, 0.9]))
    assert result["convergence"]["status"] == "still_improving"
    assert result["convergence"]["metric"] == "train_loss"
    assert any("training loss still falling" in s and "-25%" in s and "more epochs" in s for s in result["insights"])


@pytest.mark.parametrize("last, status", [(0.985, "converged"), (0.975, "still_improving")])
def test_the_improvement_threshold(last, status):
    assert analyse_learning(make([3.0, 2.0, 1.0, 0.99, last]))["convergence"]["status"] == status


def test_converged_when_the_loss_has_flattened():
    result = analyse_learning(make(FALLING, val_loss=FALLING, val_acc=0.88))
    assert result["convergence"]["status"] == "converged"
    assert result["convergence"]["metric"] == "val_loss"
    assert "converged without signs" in result["insights"][0]


def test_oscillating_validation_loss_is_unstable():
    val = [1.0, 0.8, 0.9, 0.7, 0.85, 0.65, 0.8]
    result = analyse_learning(make([1.0, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4], val_loss=val, val_acc=0.85))
    assert result["convergence"]["status"] == "unstable"
    assert any("validation loss oscillates" in s and "lower the learning rate" in s for s in result["insights"])


def test_a_non_finite_loss_is_unstable():
    result = analyse_learning(make([1.0, 0.8, math.nan]))
    assert result["convergence"]["status"] == "unstable"
    assert any("non-finite at epoch 3" in s for s in result["insights"])


def test_a_steady_rise_after_the_best_epoch_is_overfitting_not_instability():
    val = [1.0, 0.8, 0.6, 0.5, 0.55, 0.6, 0.7, 0.8]
    result = analyse_learning(make([1.0, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.18], val_loss=val, val_acc=0.85))
    assert result["convergence"]["status"] == "converged"
    assert "minimum at epoch 4" in result["convergence"]["reason"]
    assert result["overfitting"]["severity"] == "severe"


def test_train_loss_is_used_when_validation_loss_is_missing_for_some_epochs():
    curve = make([2.0, 1.5, 1.2, 1.0, 0.9])
    curve[-1]["val_loss"] = 0.95
    assert analyse_learning(curve)["convergence"]["metric"] == "train_loss"


@pytest.mark.parametrize("losses, status", [([1.0], "converged"), ([1.0, 0.5], "still_improving"), ([1.0, 1.1], "converged")])
def test_short_curves_are_judged_on_what_there_is(losses, status):
    result = analyse_learning(make(losses))
    assert result["convergence"]["status"] == status
    assert any(f"only {len(losses)} epoch(s) recorded" in s for s in result["insights"])


def test_an_empty_curve_is_refused():
    with pytest.raises(ValueError, match="empty"):
        analyse_learning([])


# ---- gradient norms ----

def test_a_gradient_spike_is_exploding():
    grads = analyse_learning(make(FALLING, grad=[1.0, 1.2, 0.9, 50.0, 1.1, 1.0]))
    norms = grads["gradient_norms"]
    assert norms["exploding"] is True and norms["vanishing"] is False
    assert norms["max"] == 50.0 and norms["last"] == 1.0
    assert norms["mean"] == pytest.approx(55.2 / 6)
    assert any("gradient norms explode (max 50" in s and "clip gradients" in s for s in grads["insights"])


def test_huge_or_infinite_gradients_are_exploding_and_stay_json():
    assert analyse_learning(make(FALLING[:2], grad=[5e3, 6e3]))["gradient_norms"]["exploding"] is True
    result = analyse_learning(make(FALLING[:3], grad=[1.0, math.inf, 2.0]))
    assert result["gradient_norms"]["exploding"] is True
    assert result["gradient_norms"]["mean"] is None and result["gradient_norms"]["max"] is None
    json.dumps(result, allow_nan=False)


def test_tiny_gradients_are_vanishing():
    result = analyse_learning(make(FALLING, grad=1e-7))
    assert result["gradient_norms"]["vanishing"] is True
    assert any("gradient norms vanish" in s for s in result["insights"])


def test_healthy_or_absent_gradients():
    healthy = analyse_learning(make(FALLING, grad=[2.0, 1.5, 1.2, 1.0, 0.9, 0.9]))["gradient_norms"]
    assert healthy["exploding"] is False and healthy["vanishing"] is False
    assert analyse_learning(make(FALLING))["gradient_norms"] is None
