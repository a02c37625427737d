"""Classification metrics, checked against scikit-learn called independently on the same predictions."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from shared.evaluation.metrics import SCALAR_METRICS, aggregate_confusion, compute_metrics


def predictions(n_classes: int, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded labels and softmax probabilities that favour the true class (a better-than-chance model)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def names(n_classes: int) -> list[str]:
    return [f"c{i}" for i in range(n_classes)]


@pytest.mark.parametrize("n_classes", [2, 10])
def test_scalars_agree_with_sklearn(n_classes):
    y, p = predictions(n_classes)
    pred = p.argmax(axis=1)
    m = compute_metrics(y, p, names(n_classes))
    assert m["val_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["val_balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"val_f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg))
        assert m[f"val_precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert m[f"val_recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg))
    assert m["val_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    assert set(SCALAR_METRICS) <= set(m)


def test_two_classes_get_binary_auc_on_the_positive_class():
    y, p = predictions(2)
    m = compute_metrics(y, p, ["neg", "pos"])
    assert m["auc_kind"] == "binary"
    assert m["val_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert m["val_pr_auc"] == pytest.approx(skm.average_precision_score(y, p[:, 1]))
    assert m["auc_note"] is None


def test_ten_classes_get_macro_one_vs_rest_auc():
    y, p = predictions(10)
    m = compute_metrics(y, p, names(10))
    assert m["auc_kind"] == "ovr"
    assert m["val_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    ap = skm.average_precision_score(label_binarize(y, classes=list(range(10))), p, average="macro")
    assert m["val_pr_auc"] == pytest.approx(ap)


def test_rows_not_summing_to_one_are_renormalised():
    y, p = predictions(3)
    assert compute_metrics(y, p * 1.01, names(3))["val_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-6)


# three classes, six samples: predictions chosen so every count can be checked by hand
SMALL_Y = np.array([0, 0, 0, 1, 1, 2])
SMALL_PRED = np.array([0, 0, 1, 1, 2, 1])
SMALL_NAMES = ["cat", "dog", "fox"]


def small() -> dict:
    return compute_metrics(SMALL_Y, np.eye(3)[SMALL_PRED] * 0.9 + 0.1 / 3, SMALL_NAMES)


def test_confusion_matrix_and_normalised_rows():
    m = small()
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 1, 0]]
    norm = np.array(m["confusion_matrix_normalized"])
    np.testing.assert_allclose(norm.sum(axis=1), 1.0)
    np.testing.assert_allclose(norm[0], [2 / 3, 1 / 3, 0])


def test_specificity_by_hand():
    per_class = {row["class"]: row for row in small()["per_class"]}
    # cat: TN = samples neither true nor predicted cat = 3, FP = 0   -> 1.0
    # dog: true dog 2, predicted dog 3 (1 right) -> FP = 2, TN = 6 - 1 - 2 - 1 = 2 -> 0.5
    # fox: predicted fox once wrongly -> FP = 1, TN = 6 - 0 - 1 - 1 = 4 -> 0.8
    assert per_class["cat"]["specificity"] == pytest.approx(1.0)
    assert per_class["dog"]["specificity"] == pytest.approx(0.5)
    assert per_class["fox"]["specificity"] == pytest.approx(0.8)
    assert [r["support"] for r in small()["per_class"]] == [3, 2, 1]
    assert per_class["cat"]["recall"] == pytest.approx(2 / 3) and per_class["cat"]["index"] == 0


def test_top_confusions_most_frequent_first():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    pred = np.array([0] * 6 + [1] * 3 + [2] * 1 + [1] * 10 + [2] * 5 + [0] * 5)
    m = compute_metrics(y, np.eye(3)[pred], SMALL_NAMES, top_k_confusions=2)
    assert m["top_confusions"] == [
        {"true": "fox", "predicted": "cat", "count": 5, "rate": 0.5},
        {"true": "cat", "predicted": "dog", "count": 3, "rate": 0.3},
    ]
    assert all(c["count"] > 0 for c in compute_metrics(y, np.eye(3)[pred], SMALL_NAMES)["top_confusions"])


def test_imbalance_is_noted():
    y = np.array([0] * 64 + [1] * 20 + [2] * 16)
    rng = np.random.default_rng(1)
    m = compute_metrics(y, rng.dirichlet(np.ones(3), size=y.size), SMALL_NAMES)
    balance = m["class_balance"]
    assert balance["counts"] == [64, 20, 16]
    assert balance["imbalance_ratio"] == pytest.approx(4.0)
    assert balance["imbalanced"] is True
    assert "4.0" in balance["note"] and "balanced accuracy" in balance["note"]


def test_balanced_classes_say_so():
    y = np.array([0, 1, 2] * 10)
    balance = compute_metrics(y, np.eye(3)[y], SMALL_NAMES)["class_balance"]
    assert balance["imbalanced"] is False and balance["note"] == "classes are balanced"


def test_absent_class_gives_no_auc_and_a_note():
    y = np.array([0, 1, 0, 1, 0, 1])  # class "fox" never appears in the labels
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    m = compute_metrics(y, p, SMALL_NAMES)
    assert m["val_roc_auc"] is None and m["val_pr_auc"] is None
    assert "fox" in m["auc_note"]
    assert m["per_class"][2]["support"] == 0 and m["per_class"][2]["recall"] == 0.0
    assert m["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]
    assert "fox" in m["class_balance"]["note"]


def test_output_is_plain_json():
    y, p = predictions(10)
    m = compute_metrics(y, p.astype(np.float32), names(10))
    assert json.loads(json.dumps(m)) == m
    assert all(type(m[k]) is float for k in SCALAR_METRICS)


def test_optional_sections_can_be_left_out():
    y, p = predictions(3)
    m = compute_metrics(y, p, names(3), per_class=False, confusion=False, auc=False)
    assert "per_class" not in m and "confusion_matrix" not in m
    assert m["val_roc_auc"] is None and m["auc_kind"] is None
    assert "top_confusions" in m and "class_balance" in m


@pytest.mark.parametrize("y, p, message", [
    (np.array([0, 1]), np.full((3, 2), 0.5), "shape"),
    (np.array([0, 1]), np.full((2, 3), 1 / 3), "class names"),
    (np.array([0, 1]), np.array([[np.nan, 1.0], [0.5, 0.5]]), "NaN"),
    (np.array([0, 2]), np.full((2, 2), 0.5), "labels"),
])
def test_bad_inputs_raise_with_a_reason(y, p, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y, p, ["a", "b"])


def test_aggregate_confusion_sums_over_seeds():
    assert aggregate_confusion([[[1, 2], [3, 4]], [[10, 0], [0, 10]]]) == [[11, 2], [3, 14]]
    assert aggregate_confusion([]) == []
    with pytest.raises(ValueError, match="shapes"):
        aggregate_confusion([[[1]], [[1, 2], [3, 4]]])
