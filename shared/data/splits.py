"""The three-way split of a data set (shared.data.datasets): the test split once per data set,
then each seed's stratified train/validation split of the rest, normalised on its training split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from shared.errors import DatasetError
from shared.runtime.config import DataConfig

if TYPE_CHECKING:
    from shared.data.datasets import Dataset
    from shared.data.encoders import Fitted


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    # the normalisation applied, (1, C, 1, 1) for images, (1, F) for tables: a trained model needs it
    # (mean 0 and std 1 where the recipe left the inputs raw, and for token ids, which are never scaled)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    # the encoding fitted on this split's training rows (shared.data.encoders), None for data that needs none
    fitted: Fitted | None = None

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Other inputs of the same data set (its raw rows: the test split's) made what this split's
        model takes: encoded with this split's fitted encoding, normalised with its statistics."""
        if self.fitted is not None:
            x = self.fitted.transform(x)
        if x.dtype.kind in "iu":  # token ids
            return x.astype(np.int64)
        return ((x - self.mean) / self.std).astype(np.float32)

    @property
    def encoding(self) -> dict[str, Any] | None:
        """What the encoding fitted, as the seed's result records it."""
        return self.fitted.record() if self.fitted is not None else None


# (id of the data set, test_fraction, seed) -> (that data set, kept so its id stays its own; the split one)
_tested: dict[tuple[int, float, int], tuple[Dataset, Dataset]] = {}


def with_test_split(ds: Dataset, test_fraction: float = DataConfig().test_fraction,
                    seed: int = DataConfig().test_seed) -> Dataset:
    """`ds` split in two: (x, y) the pool every seed's train/validation split is drawn from, and
    (x_test, y_test) the test split, which no seed ever trains on. The official test split where
    the loader found one; otherwise a stratified `test_fraction` drawn with `seed` (the same one
    for every seed of every run, so the split never depends on a training seed)."""
    if ds.test_source:
        return ds
    if ds.y_test is not None:
        return replace(ds, test_source="official")
    key = (id(ds), test_fraction, seed)
    if key not in _tested or _tested[key][0] is not ds:
        try:
            pool, test = train_test_split(np.arange(len(ds.y)), test_size=test_fraction, stratify=ds.y,
                                          random_state=seed)
        except ValueError as exc:  # a class with a single sample cannot be on both sides
            counts = np.bincount(ds.y, minlength=ds.num_classes)
            rare = ", ".join(f"{ds.class_names[c]!r} ({counts[c]})" for c in np.argsort(counts)[:3])
            raise DatasetError(f"{ds.name}: cannot hold out a stratified test split of {test_fraction:g} ({exc}); "
                               f"its rarest classes: {rare}; every class needs at least 2 samples, better 10 "
                               "(or set data.test_fraction)") from exc
        left = np.bincount(ds.y[pool], minlength=ds.num_classes)
        if left.min() < 2:  # each seed's stratified train/validation split needs two of every class
            short = ", ".join(f"{ds.class_names[c]!r} ({left[c]} left)" for c in np.flatnonzero(left < 2))
            raise DatasetError(f"{ds.name}: after its test split of {test_fraction:g}, too few samples of {short} "
                               "for a train/validation split; every class needs at least 3 samples, better 10 "
                               "(or set data.test_fraction)")
        pool.sort(), test.sort()  # in the data's own order: the seeds' splits shuffle anyway
        encoder = ds.encoder.for_pool(ds.x[pool]) if hasattr(ds.encoder, "for_pool") else ds.encoder
        _tested[key] = ds, replace(ds, x=ds.x[pool], y=ds.y[pool], x_test=ds.x[test], y_test=ds.y[test],
                                   test_source="held_out", encoder=encoder)
    return _tested[key][1]


def split(ds: Dataset, seed: int, val_fraction: float = DataConfig().val_fraction, subset_size: int | None = None,
          standardize: bool = True) -> Split:
    """Stratified subset and train/validation split drawn from `seed`, then (with `standardize`, a
    recipe's choice) normalised with the training split's statistics, per channel for images and
    per feature for tables. Without it the values stay raw, and the Split says so with mean 0 and
    std 1: a trained model's preprocessing is applied the same way either way."""
    x, y = ds.x, ds.y
    if subset_size and subset_size < len(y):
        x, _, y, _ = train_test_split(x, y, train_size=subset_size, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    fitted = None
    if ds.encoder is not None:  # fitted on this seed's training rows only
        fitted = ds.encoder.fit(x_train, y_train)
        x_train, x_val = fitted.transform(x_train), fitted.transform(x_val)
        if ds.encoder.dtype == "int64":  # token ids: never scaled
            ones = np.ones((1, 1), np.float32)
            return Split(x_train.astype(np.int64), y_train.astype(np.int64), x_val.astype(np.int64),
                         y_val.astype(np.int64), ones * 0, ones, fitted)
    axes = (0, 2, 3) if ds.kind == "image" else (0,)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-6
    if not standardize:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return Split(norm(x_train), y_train.astype(np.int64), norm(x_val), y_val.astype(np.int64), mean, std, fitted)
