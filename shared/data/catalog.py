"""The data sets' names and the check of a name, without loading anything: no numpy, no
scikit-learn, so a command that only checks a name (`researcher submit --dataset ...`) starts
in milliseconds. `shared.data.datasets` maps each of these names to its loader."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl

from shared.data.files import FILES, FORMATS, image_files, table_file, table_header, target_column, with_hint
from shared.errors import DatasetError, UnknownDatasetError
from shared.messaging.messages import Goal, goal_problems

# Every registered name; shared.data.datasets.LOADERS has exactly these keys (a unit test checks).
NAMES = ("digits", "breast_cancer", "wine", "iris", "synthetic", "imbalanced", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion_mnist", "fashion-mnist": "fashion_mnist"}


HF_ROLES = ("text", "label")  # the column roles an hf: name may give after its `?`
HF_SYNTAX = "hf:NAME?text=COLUMN[,COLUMN2]&label=COLUMN"


def known_datasets() -> list[str]:
    return sorted(NAMES) + ["csv:PATH:TARGET", "parquet:PATH:TARGET", "hf:NAME"]


class HfName(NamedTuple):
    """`hf:PATH[?text=A[,B]&label=C]`: a Hugging Face data set (a Hub name such as imdb,
    stanfordnlp/imdb or glue/sst2, or a folder under the data directory) and the column roles
    given with it ((): inferred when it is loaded)."""

    path: str
    text: tuple[str, ...] = ()  # one column, or two for a sentence pair
    label: str = ""

    @property
    def key(self) -> str:
        """The canonical name: the roles in a fixed order, so one data set has one key."""
        roles = [f"text={','.join(self.text)}"] if self.text else []
        roles += [f"label={self.label}"] if self.label else []
        return f"hf:{self.path}" + (f"?{'&'.join(roles)}" if roles else "")


def parse_hf_name(name: str) -> HfName:
    """`hf:PATH?text=A,B&label=C` -> HfName; DatasetError saying what is wrong and the syntax otherwise."""
    body = name.strip()[3:].strip()
    path, _, query = body.partition("?")
    path = path.strip().rstrip("/")
    if not path:
        raise DatasetError(f"{name!r} names no data set; write {HF_SYNTAX}, e.g. hf:imdb or "
                           "hf:glue/qnli?text=question,sentence&label=label (the part after ? is optional)")
    roles: dict[str, str] = {}
    for role, value in parse_qsl(query, keep_blank_values=True):
        if role not in HF_ROLES or role in roles or not value.strip():
            raise DatasetError(f"{name!r}: {role!r}={value!r} is not a column role; after ? give text=COLUMN "
                               f"(two, comma-separated, for a sentence pair) and label=COLUMN, once each: {HF_SYNTAX}")
        roles[role] = value.strip()
    text = tuple(c.strip() for c in roles.get("text", "").split(",") if c.strip())
    if len(text) > 2:
        raise DatasetError(f"{name!r}: text= names {len(text)} columns; one, or two for a sentence pair ({HF_SYNTAX})")
    return HfName(path, text, roles.get("label", ""))


def table_format(name: str) -> str:
    """"csv" or "parquet" for a table's name (either case), "" for any other name."""
    prefix = name.strip().split(":", 1)[0].lower()
    return prefix if ":" in name and prefix in FORMATS else ""


def parse_table_name(name: str) -> tuple[str, str, str]:
    """`csv:PATH:TARGET` -> ("csv", PATH, TARGET), `parquet:` alike; PATH may itself hold colons."""
    parts = name.split(":")
    if len(parts) < 3 or not parts[-1] or not ":".join(parts[1:-1]) or not table_format(name):
        raise UnknownDatasetError(name, known_datasets())
    return table_format(name), ":".join(parts[1:-1]), parts[-1]


def dataset_key(name: str) -> str:
    """The registered name for `name` (case and spaces ignored; `csv:PATH:TARGET` and
    `parquet:PATH:TARGET` as given; `hf:NAME?ROLES` with its roles in a canonical order);
    UnknownDatasetError otherwise. Loads nothing."""
    if name.strip().lower().startswith("hf:"):
        return parse_hf_name(name).key
    fmt = table_format(name)
    if fmt:
        spec = fmt + ":" + name.strip()[len(fmt) + 1:]  # `CSV:` too, so every later check sees the csv: it is
        parse_table_name(spec)
        return spec
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        close = difflib.get_close_matches(key, [*NAMES, *ALIASES], n=1)
        raise UnknownDatasetError(name, known_datasets(), ALIASES.get(close[0], close[0]) if close else "")
    return key


def check_files(key: str, data_dir: str | os.PathLike[str]) -> None:
    """That the data set `key` (a dataset_key) can be read from `data_dir`, without reading it: a
    torchvision set's files exist; a table's file lies inside the data directory, exists, and its
    header row (a CSV file's) or schema (a Parquet file's) names the target; an hf: set's copy is
    found and its training split has the columns its roles name (text.check_columns: this one imports
    the datasets library, so only an hf: name pays for it). DatasetError otherwise, saying where it looked."""
    root = Path(data_dir).expanduser()
    if key.startswith("hf:"):
        from shared.data.text import check_columns

        check_columns(key, root)
    elif key in FILES:
        image_files(key, root)
    elif table_format(key):
        fmt, path_text, target = parse_table_name(key)
        path = table_file(path_text, root, fmt=fmt)
        target_column(path, table_header(path, fmt), target)


def check_goal(goal: Goal, data_dir: str | os.PathLike[str] | None = None, hint: str = "") -> list[str]:
    """Every problem of a goal (goal_problems), its data set's name included; with `data_dir`, also
    whether its files can be read there (check_files), a missing file or a path outside followed
    by `hint` (what to set, where it is shown). [] when it is sound."""
    problems = goal_problems(goal)
    if goal.dataset.strip():
        try:
            key = dataset_key(goal.dataset)
            if data_dir is not None:
                check_files(key, data_dir)
        except DatasetError as exc:
            problems.append(f"dataset: {with_hint(exc, hint) if hint else exc}")
    return problems
