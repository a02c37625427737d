"""A table's encoding (shared.data.encoders' protocol for `csv:` and `parquet:` tables): what each
column becomes, decided from the pool's inputs when the file is read (shared.data.tables), then
fitted on each seed's training rows only.

- numeric: the value, a blank imputed with the training rows' median; plus a 0/1 missing
  indicator where the pool has blanks in that column.
- category: one-hot over `slots` = min(distinct in the pool, data.max_categories) slots for the
  training rows' most frequent values, one "other" slot (a value the training rows lack, or a rarer
  one), and a "missing" slot where the pool has blanks. A training split that holds fewer values
  leaves slots at zero: the width never depends on the fit, so every seed's model takes one shape.
- dropped: nothing (an identifier, free text, an all-blank column), with the reason in its note.

scikit-learn's OneHotEncoder is not used: its width follows the categories it saw, and a fixed
width per data set is the contract here. The fitted encoding is plain JSON (FittedTable.record),
and FittedTable.from_record applies a recorded one again, so the export's preprocessing.json is
enough to encode new raw rows (researcher/load.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.messaging.messages import ColumnFacts


@dataclass(frozen=True)
class TableColumn:
    """One feature column as the pool's inputs type it (before any fit)."""

    name: str
    index: int  # its position in Dataset.x's rows (the file's columns without the target)
    kind: str  # "numeric" | "category" | "dropped"
    distinct: int = 0  # distinct values in the pool (categories only)
    missing: int = 0  # blank cells in the pool
    slots: int = 0  # a category's slots for its most frequent values (min(distinct, max_categories))
    note: str = ""

    @property
    def width(self) -> int:
        if self.kind == "dropped":
            return 0
        blanks = 1 if self.missing else 0  # the missing indicator, or a category's missing slot
        return 1 + blanks if self.kind == "numeric" else self.slots + 1 + blanks

    def facts(self) -> ColumnFacts:
        return ColumnFacts(name=self.name, kind=self.kind, width=self.width, distinct=self.distinct,
                           missing=self.missing, note=self.note)


def numbers(cells: np.ndarray) -> np.ndarray:
    """A column's cells (floats, or an object column's mix) as float64, NaN for a blank or a non-number."""
    if cells.dtype.kind == "f":
        return cells.astype(np.float64)
    return pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(np.float64)


@dataclass(frozen=True)
class TableEncoder:
    """The encoding of a table read from a file; `fit` takes one seed's training rows."""

    columns: tuple[TableColumn, ...]
    notes: tuple[str, ...] = ()
    dtype: str = "float32"

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (sum(c.width for c in self.columns),)

    def fit(self, x_train: np.ndarray, y_train: np.ndarray | None = None) -> FittedTable:
        entries: list[dict[str, Any]] = []
        for c in self.columns:
            cells = x_train[:, c.index]
            if c.kind == "numeric":
                v = numbers(cells)
                median = float(np.median(v[~np.isnan(v)])) if (~np.isnan(v)).any() else 0.0  # all blank: 0
                entries.append({"name": c.name, "index": c.index, "kind": "numeric", "median": median,
                                "missing_indicator": c.missing > 0})
            elif c.kind == "category":
                counts = pd.Series(cells, dtype=object).dropna().astype(str).value_counts()
                # the most frequent first, ties by value: the same split keeps the same categories
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: c.slots]
                entries.append({"name": c.name, "index": c.index, "kind": "category",
                                "categories": [value for value, _ in ranked], "slots": c.slots,
                                "missing_slot": c.missing > 0})
        return FittedTable({"kind": "table", "inputs": [c.name for c in sorted(self.columns, key=lambda c: c.index)],
                            "width": self.output_shape[0], "columns": entries})

    def facts(self) -> dict[str, Any]:
        return {"columns": [c.facts() for c in self.columns], "notes": list(self.notes)}


class FittedTable:
    """A table encoding fitted on one seed's training rows, or read back from its record."""

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record
        self._lookup = [{v: k for k, v in enumerate(e["categories"])} if e["kind"] == "category" else None
                        for e in record["columns"]]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FittedTable:
        if record.get("kind") != "table":
            raise ValueError(f"not a table's encoding (kind {record.get('kind')!r})")
        return cls(record)

    def record(self) -> dict[str, Any]:
        """Per column: the imputed median and whether a missing indicator follows, or the categories
        kept (slot i is categories[i]; then "other", then "missing" where there is one)."""
        return self._record

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw rows (N, len(inputs)) -> (N, width) float32 features, before standardisation."""
        n = len(x)
        out = np.zeros((n, self._record["width"]), np.float32)
        pos = 0
        for entry, lookup in zip(self._record["columns"], self._lookup):
            cells = x[:, entry["index"]]
            if lookup is None:
                v = numbers(cells)
                blank = np.isnan(v)
                out[:, pos] = np.where(blank, entry["median"], v)
                if entry["missing_indicator"]:
                    out[:, pos + 1] = blank
                pos += 2 if entry["missing_indicator"] else 1
                continue
            series = pd.Series(cells, dtype=object)
            blank = series.isna().to_numpy()
            slot = series.astype(str).map(lookup).to_numpy(np.float64)  # NaN: not kept
            other = entry["slots"]
            slot = np.where(np.isnan(slot), other, slot)
            if entry["missing_slot"]:
                slot = np.where(blank, other + 1, slot)
            out[np.arange(n), pos + slot.astype(np.int64)] = 1.0
            pos += other + 1 + (1 if entry["missing_slot"] else 0)
        return out
