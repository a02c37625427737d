"""The data sets' names and the check of a name, without loading anything: no numpy, no
scikit-learn, so a command that only checks a name (`researcher submit --dataset ...`) starts
in milliseconds. `shared.data.datasets` maps each of these names to its loader."""

from __future__ import annotations

from shared.errors import DatasetError, UnknownDatasetError
from shared.messaging.messages import Goal, goal_problems

# Every registered name; shared.data.datasets.LOADERS has exactly these keys (a unit test checks).
NAMES = ("digits", "breast_cancer", "wine", "iris", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion_mnist", "fashion-mnist": "fashion_mnist"}


def known_datasets() -> list[str]:
    return sorted(NAMES) + ["csv:PATH:TARGET"]


def parse_csv_name(name: str) -> tuple[str, str, str]:
    """`csv:PATH:TARGET` -> ("csv", PATH, TARGET); PATH may itself hold colons."""
    parts = name.split(":")
    if len(parts) < 3 or not parts[-1] or not ":".join(parts[1:-1]):
        raise UnknownDatasetError(name, known_datasets())
    return "csv", ":".join(parts[1:-1]), parts[-1]


def dataset_key(name: str) -> str:
    """The registered name for `name` (case and spaces ignored; `csv:PATH:TARGET` as given);
    UnknownDatasetError otherwise. Loads nothing."""
    if name.strip().lower().startswith("csv:"):
        parse_csv_name(name.strip())
        return name.strip()
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise UnknownDatasetError(name, known_datasets())
    return key


def check_goal(goal: Goal) -> list[str]:
    """Every problem of a goal (goal_problems), its data set's name included; [] when it is sound."""
    problems = goal_problems(goal)
    if goal.dataset.strip():
        try:
            dataset_key(goal.dataset)
        except DatasetError as exc:
            problems.append(f"dataset: {exc}")
    return problems
