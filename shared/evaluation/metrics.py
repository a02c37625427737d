"""Classification metrics from the evaluator's own labels and a model's class probabilities.

Everything comes from scikit-learn with `labels=range(C)` and `zero_division=0`, so a validation
split that lacks a class (small subsets, rare classes) yields zeros and notes instead of crashes.
The result is plain JSON (floats, ints, lists, None): it travels in messages and the registry.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from shared.messaging.messages import IMBALANCE_RATIO, SCALAR_METRICS  # the scalar keys, one number per seed, aggregated over seeds

PROB_FLOOR = 1e-7  # probabilities are clipped to [PROB_FLOOR, 1] so log loss stays finite


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], *,
                    per_class: bool = True, confusion: bool = True, auc: bool = True,
                    top_k_confusions: int = 5) -> dict:
    """All metrics of one seed. `y_true` is (N,) ints in [0, C); `probs` is (N, C) probabilities.

    Raises ValueError on inputs that are the caller's fault (shapes, non-finite probabilities):
    the evaluator screens the container's predictions before calling this.
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = _normalise(np.asarray(probs, dtype=np.float64), y, class_names)
    n_classes = p.shape[1]
    labels = list(range(n_classes))
    pred = p.argmax(axis=1)

    out: dict = {"val_accuracy": float(skm.accuracy_score(y, pred))}
    with warnings.catch_warnings():
        # absent classes are expected here; balanced accuracy simply skips them
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        out["val_balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
    for average in ("macro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=average, zero_division=0)
        out[f"val_f1_{average}"] = float(f1)
        out[f"val_precision_{average}"] = float(prec)
        out[f"val_recall_{average}"] = float(rec)
    out["val_loss"] = float(skm.log_loss(y, p, labels=labels))
    out.update(_auc(y, p, class_names) if auc else
               {"val_roc_auc": None, "val_pr_auc": None, "auc_kind": None, "auc_note": "AUC not requested"})

    cm = skm.confusion_matrix(y, pred, labels=labels)  # (C, C), rows = true class
    if per_class:
        out["per_class"] = _per_class(y, pred, cm, class_names)
    if confusion:
        out["confusion_matrix"] = cm.tolist()
        out["confusion_matrix_normalized"] = _row_normalise(cm).tolist()
    # kept even without the matrices: for 100 classes the matrix is bulky, the top cells are not
    out["top_confusions"] = _top_confusions(cm, class_names, top_k_confusions)
    out["class_balance"] = _class_balance(cm.sum(axis=1), class_names)
    return out


def score(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], **options) -> tuple[dict, dict]:
    """`compute_metrics` split for storage: -> (the SCALAR_METRICS, which aggregate over seeds;
    the details: per-class metrics, confusion matrices, top confusions, class balance, AUC kind)."""
    everything = compute_metrics(y_true, probs, class_names, **options)
    scalars = {name: everything.get(name) for name in SCALAR_METRICS}
    return scalars, {k: v for k, v in everything.items() if k not in scalars}


def aggregate_confusion(matrices: list) -> list[list[int]]:
    """Element-wise sum of the seeds' confusion matrices (each C x C ints)."""
    if not matrices:
        return []
    arrays = [np.asarray(m, dtype=np.int64) for m in matrices]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"confusion matrices of different shapes: {sorted({a.shape for a in arrays})}")
    return np.sum(arrays, axis=0).tolist()


def _normalise(p: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Validated, clipped probabilities whose rows sum to 1 (models' softmax outputs drift a little)."""
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[0] == 0:
        raise ValueError(f"probs of shape {p.shape} for {y.size} labels; expected (N, C) with N = len(y_true) > 0")
    if p.shape[1] < 2 or p.shape[1] != len(class_names):
        raise ValueError(f"probs have {p.shape[1]} columns for {len(class_names)} class names; need the same number, at least 2")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinity; screen the model's predictions before scoring")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1]}); got [{y.min()}, {y.max()}]")
    p = np.clip(p, PROB_FLOOR, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def _auc(y: np.ndarray, p: np.ndarray, class_names: Sequence[str]) -> dict:
    """ROC-AUC and PR-AUC (average precision): binary on the positive class for two classes,
    macro one-vs-rest beyond. None with a reason when a class has no sample to rank against."""
    n_classes = p.shape[1]
    kind = "binary" if n_classes == 2 else "ovr"
    absent = [str(class_names[k]) for k in sorted(set(range(n_classes)) - set(np.unique(y).tolist()))]
    if absent:
        return {"val_roc_auc": None, "val_pr_auc": None, "auc_kind": kind,
                "auc_note": f"not computable: {', '.join(absent)} absent from the validation labels, "
                            "and AUC needs every class present"}
    if kind == "binary":
        roc = skm.roc_auc_score(y, p[:, 1])
        pr = skm.average_precision_score(y, p[:, 1])
    else:
        roc = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(n_classes)))
        pr = skm.average_precision_score(label_binarize(y, classes=list(range(n_classes))), p, average="macro")
    return {"val_roc_auc": float(roc), "val_pr_auc": float(pr), "auc_kind": kind, "auc_note": None}


def _per_class(y: np.ndarray, pred: np.ndarray, cm: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Precision, recall, F1, support and specificity (TN / (TN + FP)) of each class."""
    labels = list(range(len(class_names)))
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    total = int(cm.sum())
    rows = []
    for k, name in enumerate(class_names):
        tp = int(cm[k, k])
        fp = int(cm[:, k].sum()) - tp
        fn = int(cm[k, :].sum()) - tp
        tn = total - tp - fp - fn
        rows.append({"class": str(name), "index": k, "precision": float(prec[k]), "recall": float(rec[k]),
                     "f1": float(f1[k]), "specificity": tn / (tn + fp) if tn + fp else 0.0,
                     "support": int(support[k])})
    return rows


def _row_normalise(cm: np.ndarray) -> np.ndarray:
    """Rows sum to 1; a class with no samples keeps a row of zeros rather than NaN."""
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def _top_confusions(cm: np.ndarray, class_names: Sequence[str], k: int) -> list[dict]:
    """The k most frequent mistakes (off-diagonal cells), by count, then by true and predicted index."""
    totals = cm.sum(axis=1)
    cells = [(int(cm[t, q]), t, q) for t in range(cm.shape[0]) for q in range(cm.shape[1])
             if t != q and cm[t, q] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": str(class_names[t]), "predicted": str(class_names[q]), "count": count,
             "rate": count / int(totals[t])} for count, t, q in cells[:max(k, 0)]]


def _class_balance(counts: np.ndarray, class_names: Sequence[str]) -> dict:
    """Support per class and whether accuracy is a fair summary of the split."""
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    imbalanced = ratio > IMBALANCE_RATIO
    if imbalanced:
        note = (f"classes are imbalanced (largest/smallest = {ratio:.1f}); "
                "prefer macro F1 and balanced accuracy over accuracy")
    else:
        note = "classes are balanced"
    absent = [str(class_names[k]) for k in np.flatnonzero(counts == 0)]
    if absent:
        note += f"; absent from the validation labels: {', '.join(absent)}"
    return {"counts": [int(c) for c in counts], "imbalance_ratio": ratio, "imbalanced": bool(imbalanced), "note": note}
