"""Hugging Face text data sets (`hf:NAME`), read offline through the `datasets` library from the
local copy shared.data.hf_files.locate finds: a save_to_disk folder, the Hub's data files, or a
Hugging Face cache. Nothing is downloaded unless asked (`download_missing`).

Column roles are given in the name (`hf:glue/qnli?text=question,sentence&label=label`) or inferred:
the label is a ClassLabel column, else one named label/labels/target/class/...; the text is the one
string column, or a known pair of them (sentence1/sentence2, question/sentence, premise/hypothesis...).

The splits: the official test split is the test split where its rows are labelled; where they are
not (GLUE's test labels are -1) the labelled validation split is, and the facts' test_note says
so; with neither, with_test_split holds out a stratified share, as for any set. Each seed's
train/validation split is drawn from the training split, and its tokenizer fitted on its own
training rows (shared.data.tokens).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from shared.data.catalog import HF_SYNTAX, parse_hf_name
from shared.data.encoders import MAX_CLASSES
from shared.data.hf_files import DATA_SUFFIXES, Location, locate
from shared.data.tokens import TRAINED, TextEncoder
from shared.errors import DatasetError, DatasetNotFoundError, OutsideDataDirError
from shared.runtime.config import DataConfig

LABEL_NAMES = ("label", "labels", "target", "class", "sentiment", "category", "y", "gold_label")
PAIRS = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"), ("question1", "question2"),
         ("sentence_a", "sentence_b"), ("text_a", "text_b"), ("question", "passage"), ("sentence", "question"))
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "content_text")  # chosen among other strings
TRAIN, TEST, VALIDATION = ("train",), ("test",), ("validation", "valid", "dev", "val", "validation_matched")
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


_offline_lock = threading.RLock()  # the switches are the process's: one load at a time sets and restores them


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """The libraries' offline switches on for the call, then as they were: a machine without internet
    must not wait on retries, and nothing is fetched unless asked. Both read them at import as well as
    from their config modules, so both places are set. An evaluator loads in threads: the switches are
    held for one load at a time, so no thread's restore turns them off under another's."""
    with _offline_lock, _offline_switches():
        yield


@contextlib.contextmanager
def _offline_switches() -> Iterator[None]:
    import datasets
    import huggingface_hub.constants as hub

    saved = {k: os.environ.get(k) for k in _OFFLINE}
    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (hub, "HF_HUB_OFFLINE")]
    old = [getattr(m, a, None) for m, a in flags]
    os.environ.update({k: "1" for k in _OFFLINE})
    for m, a in flags:
        setattr(m, a, True)
    try:
        yield
    finally:
        for (m, a), v in zip(flags, old):
            setattr(m, a, v)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def read_splits(where: Location) -> dict[str, Any]:
    """split name -> datasets.Dataset, read from `where` without the network; DatasetError for
    files the library cannot read, naming them."""
    import datasets

    datasets.disable_progress_bars()
    try:
        with offline():
            if where.kind == "saved":
                loaded = datasets.load_from_disk(str(where.path), keep_in_memory=False)
            elif where.kind == "arrow":  # the files datasets prepared; read in place (the data dir may be read-only)
                loaded = _prepared(where.path)
            else:  # the Hub's data files: prepared into a scratch cache, kept in memory, never in the data dir
                with tempfile.TemporaryDirectory(prefix="hf-") as scratch:
                    loaded = datasets.load_dataset(str(where.path), where.config or None, cache_dir=scratch,
                                                   keep_in_memory=True)
    except (DatasetError, OutsideDataDirError):
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow's, datasets' and the OS's errors for a bad file are many
        raise DatasetError(f"{where.path}: the datasets library cannot read it ({type(exc).__name__}: {exc}); "
                           "write it again with save_to_disk, or put the Hub's Parquet/JSON lines/CSV files there"
                           ) from exc
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _prepared(folder: Path) -> Any:
    """NAME-SPLIT[-00000-of-0000N].arrow files -> a DatasetDict, each split's shards in order."""
    import datasets

    shards: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.arrow")):
        stem = path.name.removesuffix(".arrow").split("-")
        split = stem[-4] if len(stem) >= 4 and stem[-2] == "of" else stem[-1]
        shards.setdefault(split, []).append(path)
    return datasets.DatasetDict({split: datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in paths])
                                 for split, paths in shards.items()})


def _pick(splits: dict[str, Any], names: tuple[str, ...]) -> str:
    return next((n for n in names if n in splits), "")


def roles(columns: dict[str, Any], text: tuple[str, ...], label: str, where: str) -> tuple[tuple[str, ...], str]:
    """(text columns, label column) of a split with these features, given or inferred; DatasetError
    naming the columns and the `?text=...&label=...` syntax when they cannot be told."""
    from datasets import ClassLabel, Value

    listing = ", ".join(f"{c} ({_kind(f)})" for c, f in columns.items())
    for c in (*text, label):
        if c and c not in columns:
            raise DatasetError(f"{where}: no column {c!r}; its columns: {listing}")
    if label and label in text:  # the model would read its own answer
        raise DatasetError(f"{where}: column {label!r} cannot be both the text and the label; its columns: {listing}; "
                           f"name them: {HF_SYNTAX}")
    if not label:
        classlabels = [c for c, f in columns.items() if isinstance(f, ClassLabel)]
        named = [c for c in LABEL_NAMES if c in columns]
        label = (classlabels or named or [""])[0]
        if not label:
            raise DatasetError(f"{where}: no label column found (a ClassLabel, or one named "
                               f"{'/'.join(LABEL_NAMES[:5])}...); its columns: {listing}; name it: {HF_SYNTAX}")
    if not text:
        strings = [c for c, f in columns.items()
                   if isinstance(f, Value) and f.dtype in ("string", "large_string") and c != label]
        pair = next((p for p in PAIRS if set(p) <= set(strings)), None)
        named = [c for c in TEXT_NAMES if c in strings]
        text = pair or (tuple(strings) if len(strings) == 1 else tuple(named[:1]))
        if not text:
            why = ("no string column" + (f" besides the label {label!r}" if label in columns and _kind(columns[label])
                                         in ("string", "large_string") else "")
                   if not strings else f"{len(strings)} string columns ({', '.join(strings)})")
            raise DatasetError(f"{where}: cannot tell the text column: {why}; its columns: {listing}; name it (two "
                               f"for a sentence pair): {HF_SYNTAX}")
    return text, label


def _kind(feature: Any) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__


def check_columns(key: str, root: Path) -> None:
    """The check at submission: the hf: set `key` is found under `root` and its training split has the
    columns its roles name (or can be inferred from); DatasetError saying which otherwise, as loading it
    would, in a second rather than after a stack has started. A saved or prepared set's features are
    read memory-mapped; Parquet files' from their schema; JSON lines and CSV files are only checked for
    the columns the name gives (their types are known once read)."""
    import datasets

    name = parse_hf_name(key)
    where = locate(name.path, root)
    if where.kind != "files":  # memory-mapped, nothing copied, no network: not under the loads' lock
        try:
            loaded = datasets.load_from_disk(str(where.path)) if where.kind == "saved" else _prepared(where.path)
        except Exception as exc:  # noqa: BLE001 - the library's and the OS's errors for a bad folder are many
            raise DatasetError(f"{where.path}: the datasets library cannot read it ({type(exc).__name__}: {exc}); "
                               "write it again with save_to_disk") from exc
        splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        train = _pick(splits, TRAIN) or next(iter(splits))
        roles(dict(splits[train].features), name.text, name.label, f"{where.path} ({train})")
        return
    folder = where.path / where.config if where.config else where.path
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))
    first = next((p for p in files if "train" in p.relative_to(folder).as_posix()), files[0] if files else None)
    if first is None or first.name.endswith((".json", ".json.gz")):  # a .json may be one array: known once read
        return
    try:
        if first.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            features = dict(datasets.Features.from_arrow_schema(pq.read_schema(first)))
            roles(features, name.text, name.label, str(first))
            return
        opener = gzip.open if first.suffix == ".gz" else open
        with opener(first, "rt", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            line = handle.readline()
        row = json.loads(line) if ".jsonl" in first.name else next(csv.reader([line]), [])
        names = [str(c).strip() for c in row] if isinstance(row, (dict, list)) else []
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{first}: cannot read its columns ({type(exc).__name__}: {exc}); write it again, "
                           "or put the Hub's Parquet/JSON lines/CSV files there") from exc
    if not names:
        raise DatasetError(f"{first}: its first line names no columns (an empty file, or a blank first line); "
                           "write a header row (CSV) or one JSON object per line")
    for column in (*name.text, name.label):
        if column and column not in names:
            raise DatasetError(f"{first}: no column {column!r}; its columns: {', '.join(names)}")


def _labels(split: Any, label: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, values) of a split's label column: ClassLabel indices, or raw values (None and a
    ClassLabel's -1 are unlabelled)."""
    values = split[label]
    if classes is not None:  # a ClassLabel: indices into its names
        y = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        return y >= 0, y
    raw = np.array(["" if v is None else str(v) for v in values], dtype=object)
    missing = np.array([v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == -1)
                        for v in values], dtype=bool)
    return ~missing, raw


def load_text(key: str, root: Path, config: DataConfig, download_missing: bool = False) -> Any:
    """The Dataset (shared.data.datasets) of the hf: set `key`, its TextEncoder set from `config`."""
    from datasets import ClassLabel

    from shared.data.datasets import Dataset

    name = parse_hf_name(key)
    try:
        where = locate(name.path, root)
    except DatasetNotFoundError:
        if not download_missing:
            raise
        where = download(name.path, root)
    splits = read_splits(where)
    train = _pick(splits, TRAIN) or (next(iter(splits)) if len(splits) == 1 else "")
    if not train:
        raise DatasetError(f"{where.path}: no training split among {', '.join(splits) or 'none'}; name one train "
                           "(train.jsonl, train-00000-of-00001.parquet, or a DatasetDict key 'train')")
    text, label = roles(dict(splits[train].features), name.text, name.label, f"{where.path} ({train})")
    feature = splits[train].features[label]
    classes = list(feature.names) if isinstance(feature, ClassLabel) else None
    parts = {s: _labels(splits[s], label, classes) for s in {train, _pick(splits, TEST), _pick(splits, VALIDATION)} if s}
    if classes is None:  # class names: the labelled values of the splits used, in numeric order where they are numbers
        seen = {v for ok, raw in parts.values() for v in raw[ok]}
        classes = sorted(seen, key=lambda v: (0, float(v), v) if _number(v) else (1, 0.0, v))
        fractional = [v for v in classes if _number(v) and float(v) != round(float(v))]
        if fractional or len(classes) > MAX_CLASSES:  # a score (STS-B's similarity) or an identifier, not classes
            why = (f"values such as {', '.join(fractional[:3])} are not whole numbers: a regression target"
                   if fractional else f"{len(classes)} distinct values, more than {MAX_CLASSES} classes")
            raise DatasetError(f"{where.path}: the label {label!r} is no classification target ({why}); name the class "
                               f"column: {HF_SYNTAX}")
        index = {c: k for k, c in enumerate(classes)}
        parts = {s: (ok, np.array([index.get(v, -1) for v in raw], dtype=np.int64)) for s, (ok, raw) in parts.items()}
    notes, held = [], ""
    test = _pick(splits, TEST)
    if test and not parts[test][0].all():
        held = _pick(splits, VALIDATION)
        why = f"the official test split {test!r} is unlabelled"
        if held and parts[held][0].all():
            note = f"{why}: the official validation split {held!r} is the held-out test split"
        else:
            held, note = "", f"{why} and no labelled validation split: a stratified share is held out"
    else:
        held, note = test, ""
    unused = [s for s in splits if s not in (train, held)]
    if unused:  # each seed draws its own validation split from the training split
        notes.append(f"splits not used: {', '.join(unused)} (the pool is {train!r}; the test split "
                     f"{repr(held) if held else 'is held out of it'})")
    x, y = _rows(splits[train], text, *parts[train])
    dropped = len(splits[train]) - len(y)
    if dropped:
        notes.append(f"{dropped} unlabelled rows of {train!r} left out")
    x_test = y_test = None
    if held:
        x_test, y_test = _rows(splits[held], text, *parts[held])
    if len(y) == 0:
        raise DatasetError(f"{where.path}: no labelled rows in its training split {train!r}")
    encoder = TextEncoder(tokenizer=config.tokenizer,
                          vocab_size=config.vocab_size, max_length=config.max_length, pair=len(text) == 2,
                          text_columns=text, pool=x, user_file=tokenizer_file(config.tokenizer, root),
                          notes=tuple(notes))
    return Dataset(key, "text", x, y, tuple(str(c) for c in classes), x_test, y_test,
                   "official" if held else "", note, encoder)


def _number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _rows(split: Any, text: tuple[str, ...], labelled: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled rows' texts, (N,) or (N, 2) strings (None as ""), and labels."""
    columns = [np.array(["" if v is None else str(v) for v in split[c]], dtype=object) for c in text]
    x = columns[0] if len(columns) == 1 else np.stack(columns, axis=1)
    return x[labelled], y[labelled].astype(np.int64)


def tokenizer_file(setting: str, root: Path) -> Path | None:
    """data.tokenizer as a tokenizer.json under the data directory; None for a trained kind."""
    if setting in TRAINED:
        return None
    path = (root / Path(setting).expanduser()).resolve()
    if not path.is_relative_to(root.resolve()):
        raise OutsideDataDirError(setting, str(root), str(path), what="tokenizer file", example="data.tokenizer: tokenizer.json")
    if not path.is_file():
        raise DatasetNotFoundError(setting, [str(path)], "put the tokenizer.json there (Tokenizer.save(path) of the "
                                   "tokenizers library), or set data.tokenizer to wordpiece or bpe")
    return path


def download(path: str, root: Path) -> Location:
    """Only when asked: the set fetched from the Hub by `datasets` and saved under `root` (it needs internet)."""
    import datasets

    parts = path.split("/")
    target = root / parts[-1]
    for repo, config in ((path, None), ("/".join(parts[:-1]), parts[-1])) if len(parts) > 1 else ((path, None),):
        try:
            datasets.load_dataset(repo, config).save_to_disk(str(target))
            return Location("saved", target)
        except Exception as exc:  # noqa: BLE001 - no network, no such set: try the other reading, then say so
            error = exc
    raise DatasetError(f"downloading hf:{path} into {target} failed: {error}")
