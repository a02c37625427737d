"""The data sets' names and the check of a name, without loading anything: no numpy, no
scikit-learn, so a command that only checks a name (`researcher submit --dataset ...`) starts
in milliseconds. `shared.data.datasets` maps each of these names to its loader."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from shared.data.files import FILES, FORMATS, image_files, table_file, table_header, target_column, with_hint
from shared.errors import DatasetError, UnknownDatasetError
from shared.messaging.messages import Goal, goal_problems

# Every registered name; shared.data.datasets.LOADERS has exactly these keys (a unit test checks).
NAMES = ("digits", "breast_cancer", "wine", "iris", "synthetic", "imbalanced", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion_mnist", "fashion-mnist": "fashion_mnist"}


def known_datasets() -> list[str]:
    return sorted(NAMES) + ["csv:PATH:TARGET", "parquet:PATH:TARGET"]


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
    `parquet:PATH:TARGET` as given); UnknownDatasetError otherwise. Loads nothing."""
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
    header row (a CSV file's) or schema (a Parquet file's) names the target. DatasetError otherwise, saying where it looked."""
    root = Path(data_dir).expanduser()
    if key in FILES:
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
