"""Exports of a run to the experiment trackers researchers already use: MLflow (mlflow_export.py)
and TensorBoard (tensorboard_export.py), both writing what view.py maps the records to. Their
clients are optional extras of the package (pytorch-researcher[mlflow], [tensorboard], [trackers]),
imported only when an export asks for them."""

from __future__ import annotations

import importlib
from types import ModuleType

from shared.errors import MissingExtraError


def require(module: str, option: str, extra: str) -> ModuleType:
    """`module` imported, or a MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name != module and not module.startswith(exc.name + "."):
            raise  # the package is there and something it needs is broken: its own error says what
        raise MissingExtraError(option, module, extra) from None
