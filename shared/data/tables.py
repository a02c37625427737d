"""Tables read from a file: `csv:PATH:TARGET` and `parquet:PATH:TARGET` (PATH inside data.dir,
shared.data.files.table_file), typed column by column, the target's values made the classes.

Reading is pandas' (`read_csv`, `read_parquet` through pyarrow): the usual missing-value markers
(a blank cell, "NA", "N/A", "NaN", "null", "?", and " ?" with its leading space as in UCI's
Adult) are blanks, and text cells are trimmed. Each feature column becomes one of
(shared.data.table_encoding):
- numeric: a column of numbers, blanks allowed;
- category: text with few distinct values (at most data.max_categories, or at most half its cells);
- dropped, with a note: all blank; one value throughout; an identifier (a different value in every
  row: PassengerId's 1..N, a name); free text too long or too varied to be a category (Titanic's
  Name and Ticket).
The typing reads the pool's inputs only (distinct values, blanks), never the labels; imputation and
the categories kept are fitted later, on each seed's training rows (shared.data.splits.split).

A table of numbers only keeps its raw rows as float32 (NaN for a blank): the 284,807 x 30 fraud
table stays 34 MB and loads in seconds; a table with text keeps them as an object array.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data.catalog import parse_table_name
from shared.data.encoders import MAX_CLASSES
from shared.data.files import table_unreadable, target_column
from shared.data.table_encoding import TableColumn, TableEncoder
from shared.errors import DatasetError

MISSING = ["?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", ""]  # read as blanks, beside pandas' own
TEXT_LENGTH = 40  # characters: a column whose cells are this long on average is free text, not a category


def load_table(spec: str, path: Path, max_categories: int):
    """The Dataset `spec` names, read from `path` (table_file's); DatasetError saying what to fix."""
    from shared.data.datasets import Dataset

    fmt, _, target = parse_table_name(spec)
    frame = read_frame(path, fmt)
    target_column(path, list(frame.columns), target)
    if frame.empty:
        raise DatasetError(f"{path}: needs a header row and at least one data row")
    labels, notes = frame[target], []
    kept = labels.notna().to_numpy()
    if not kept.any():
        raise DatasetError(f"{path}: every row's target {target!r} is blank; fill it in, or name another column")
    if not kept.all():
        notes.append(f"{int((~kept).sum())} of {len(kept)} rows dropped: their target {target!r} is blank")
    y, classes, said = _classes(path, target, labels[kept])
    notes += said
    features = frame.drop(columns=[target])[kept].reset_index(drop=True)
    if features.shape[1] == 0:
        raise DatasetError(f"{path}: no column besides the target {target!r}; a table needs feature columns")
    columns = tuple(_column(name, i, features[name], max_categories) for i, name in enumerate(features.columns))
    if all(c.kind == "dropped" for c in columns):
        why = "; ".join(f"{c.name}: {c.note}" for c in columns)
        raise DatasetError(f"{path}: no usable feature column ({why}); a table needs numbers or categories")
    numeric = all(pd.api.types.is_numeric_dtype(features[name]) for name in features.columns)
    x = features.to_numpy(np.float32) if numeric else features.to_numpy(object)
    return Dataset(spec, "tabular", x, y, classes, encoder=TableEncoder(columns, tuple(notes)))


def read_frame(path: Path, fmt: str) -> pd.DataFrame:
    """The file as a DataFrame, header trimmed, text cells trimmed, the missing markers blank."""
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:  # -sig: a spreadsheet's byte-order mark; skipinitialspace: UCI's "a, b" cells and " ?"
            with warnings.catch_warnings():  # index_col=False: a longer first row is an error, not an index
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, na_values=MISSING,
                                    index_col=False, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: needs a header row and at least one data row") from None
    except pd.errors.ParserWarning:
        raise DatasetError(f"{path}: a row has more fields than the header; every row needs as many fields as "
                           "the header (a trailing comma counts as one)") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: not a well-formed CSV table ({str(exc).strip()}); every row needs "
                           "as many fields as the header") from exc
    except (OSError, UnicodeDecodeError, ValueError, ImportError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise table_unreadable(path, fmt, exc) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for name in frame.columns:
        if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            frame[name] = normalise_text(frame[name])
    return frame


def normalise_text(cells: pd.Series) -> pd.Series:
    """Text cells trimmed, the missing markers blank; a column that is then all numbers, numbers
    (a Parquet file's text column of "1", "?", "3")."""
    text = cells.astype(object).where(cells.isna(), cells.astype(str).str.strip())
    text = text.where(~text.isin(MISSING), None)
    as_numbers = pd.to_numeric(text, errors="coerce")
    if text.notna().any() and (as_numbers.notna() == text.notna()).all():
        return as_numbers
    return text.astype(object).where(text.notna(), None)


def _classes(path: Path, target: str, labels: pd.Series) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """(N,) class indices, the class names (numbers in numeric order), and what was normalised."""
    notes = []
    if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        values = labels.to_numpy(np.float64)
        whole = values == np.round(values)
        if not whole.all():
            distinct = len(np.unique(values))
            raise DatasetError(f"{path}: the target {target!r} holds {distinct} distinct values, "
                               f"{int((~whole).sum())} not whole numbers (e.g. {values[~whole][0]:g}): a "
                               "regression target; this product classifies: bin it into classes first, or name "
                               "another column")
        text = pd.Series([str(int(v)) for v in values])
    else:
        text = labels.astype(str).str.strip().reset_index(drop=True)
        dotted = text.str.endswith(".") & (text.str.len() > 1)
        if dotted.any():  # Adult's test file: "<=50K." is the class "<=50K"
            examples = ", ".join(sorted(set(text[dotted]))[:3])
            text = text.where(~dotted, text.str[:-1])
            notes.append(f"target {target!r}: a trailing '.' removed from {int(dotted.sum())} values ({examples}), "
                         "so they are the same classes as those without")
    names = sorted(set(text), key=_numeric_first)
    if len(names) < 2:
        raise DatasetError(f"{path}: the target {target!r} has one class only ({names[0]!r}); a classifier needs "
                           "at least two: name another column, or add rows of the other classes")
    if len(names) > MAX_CLASSES:
        raise DatasetError(f"{path}: the target {target!r} has {len(names)} distinct values, more than "
                           f"{MAX_CLASSES} classes: is it an identifier or a measurement? Name the class column")
    index = {name: k for k, name in enumerate(names)}
    return text.map(index).to_numpy(np.int64), tuple(names), notes


def _numeric_first(name: str) -> tuple[int, float, str]:
    """Sort key: numbers by value ("2" before "10"), then text."""
    try:
        return 0, float(name), ""
    except ValueError:
        return 1, 0.0, name


def _column(name: str, index: int, cells: pd.Series, max_categories: int) -> TableColumn:
    """What a feature column becomes, from the pool's cells (no labels)."""
    missing = int(cells.isna().sum())
    present = cells.dropna()
    drop = lambda note: TableColumn(name, index, "dropped", missing=missing, note=note)  # noqa: E731
    if present.empty:
        return drop("all blank")
    distinct = int(present.nunique())
    if distinct == 1 and not missing:
        return drop(f"one value throughout ({present.iloc[0]!r})")
    if pd.api.types.is_numeric_dtype(cells):
        values = present.to_numpy(np.float64)
        consecutive = distinct == len(cells) > max_categories and values.max() - values.min() + 1 == len(cells)
        if consecutive and (values == np.round(values)).all():
            return drop(f"an identifier: a different whole number in every row ({values.min():g}..{values.max():g})")
        note = f"{missing} blanks: the training rows' median, and a missing indicator" if missing else ""
        return TableColumn(name, index, "numeric", missing=missing, note=note)
    text = present.astype(str)
    if distinct == len(cells) > max_categories:
        return drop(f"an identifier or free text: a different value in every row ({distinct})")
    length = float(text.str.len().mean())
    if length > TEXT_LENGTH:
        return drop(f"free text: {length:.0f} characters per cell on average")
    if distinct > max_categories and distinct > len(present) / 2:
        return drop(f"too varied to be a category: {distinct} distinct values in {len(present)} cells")
    slots = min(distinct, max_categories)
    note = (f"{slots} most frequent values of the training rows" + (", the rest as 'other'" if distinct > slots else "")
            + (f"; {missing} blanks as their own slot" if missing else ""))
    return TableColumn(name, index, "category", distinct=distinct, missing=missing, slots=slots, note=note)
