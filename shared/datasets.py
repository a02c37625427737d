"""Data sets: the embedded ones shipped in scikit-learn, and synthetic data for smoke tests.

Everything is loaded on the trusted side; the evaluation container receives the training
split and the validation inputs only, never the validation labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

from shared.errors import UnknownDatasetError


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Literal["image", "tabular"]
    x: np.ndarray  # (N, C, H, W) for images, (N, F) for tabular; float32
    y: np.ndarray  # (N,) int64 class indices
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def facts(self) -> dict:
        return {"name": self.name, "kind": self.kind, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "num_samples": int(self.x.shape[0]),
                "class_names": list(self.class_names)}


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def _digits() -> Dataset:
    bunch = skd.load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)  # pixel values 0..16 -> 0..1
    return Dataset("digits", "image", x, bunch.target.astype(np.int64), tuple(str(n) for n in bunch.target_names))


def _sklearn_tabular(name: str, loader: Callable) -> Callable[[], Dataset]:
    def load() -> Dataset:
        bunch = loader()
        return Dataset(name, "tabular", bunch.data.astype(np.float32), bunch.target.astype(np.int64),
                       tuple(str(n) for n in bunch.target_names))
    return load


def _synthetic() -> Dataset:
    """Smoke tests only: a seeded 3-class problem with 20 features, 10 of them informative."""
    x, y = skd.make_classification(n_samples=1200, n_features=20, n_informative=10, n_classes=3, random_state=0)
    return Dataset("synthetic", "tabular", x.astype(np.float32), y.astype(np.int64), ("0", "1", "2"))


LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": _digits,
    "breast_cancer": _sklearn_tabular("breast_cancer", skd.load_breast_cancer),
    "wine": _sklearn_tabular("wine", skd.load_wine),
    "iris": _sklearn_tabular("iris", skd.load_iris),
    "synthetic": _synthetic,
}
_cache: dict[str, Dataset] = {}


def known_datasets() -> list[str]:
    return sorted(LOADERS)


def dataset_key(name: str) -> str:
    """The registered name for `name` (case and spaces ignored); UnknownDatasetError otherwise."""
    key = name.strip().lower()
    if key not in LOADERS:
        raise UnknownDatasetError(name, known_datasets())
    return key


def load_dataset(name: str) -> Dataset:
    key = dataset_key(name)
    if key not in _cache:
        _cache[key] = LOADERS[key]()
    return _cache[key]


def split(ds: Dataset, seed: int, val_fraction: float = 0.2, subset_size: int | None = None) -> Split:
    """Stratified subset and train/validation split drawn from `seed`, then normalised with the
    training split's statistics (per channel for images, per feature for tables)."""
    x, y = ds.x, ds.y
    if subset_size and subset_size < len(y):
        x, _, y, _ = train_test_split(x, y, train_size=subset_size, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    axes = (0, 2, 3) if ds.kind == "image" else (0,)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-6
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return Split(norm(x_train), y_train.astype(np.int64), norm(x_val), y_val.astype(np.int64))
