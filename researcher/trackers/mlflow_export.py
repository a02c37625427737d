"""`researcher export RUN --mlflow URI`: the run as MLflow runs, through `MlflowClient` alone (never
the fluent API's global active run): a parent run for the research run, a nested run per
candidate, and inside it one per seed. What goes where is researcher/trackers/view.py's.

A second export of the same run replaces the first: the runs tagged with its researcher.run_id in
the experiment are deleted (MLflow keeps deleted runs until `mlflow gc`) before the new ones are
written, so the experiment holds one copy of each research run."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from itertools import zip_longest
from pathlib import Path
from typing import Any

import structlog

from researcher.trackers import require
from researcher.trackers.view import TAG, CandidateView, RunView, SeedView

DEFAULT_EXPERIMENT = "pytorch-researcher"
# MLflow's limits (mlflow.utils.validation): 250 characters per key, 6,000 per parameter value,
# 8,000 per tag value; one log_batch holds 1,000 metrics, 100 parameters and 100 tags
MAX_KEY, MAX_PARAM, MAX_TAG = 250, 6000, 8000
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100
log = structlog.get_logger()
_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")  # the characters MLflow accepts in a key, and no others


def tracking_uri(given: str) -> str:
    """A path or file: URI is MLflow's file store, which MLflow 3 keeps in maintenance mode and
    refuses unless MLFLOW_ALLOW_FILE_STORE is set: naming one on the command line is that consent.
    sqlite:///x.db, http(s):// and the rest go to MLflow as they are."""
    if "://" not in given and not given.startswith(("sqlite:", "databricks")):
        given = Path(given).expanduser().resolve().as_uri()
    if given.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return given


def _artifact_location(uri: str) -> str | None:
    """Beside a sqlite database its experiment's artifacts (MLflow would put them under the working
    directory's ./mlruns); elsewhere the store's own default."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / f"{db.stem}-artifacts").resolve().as_uri()
    return None


def key(name: str) -> str:
    """`name` as MLflow accepts it: its characters, and at most 250 of them (a long key keeps a
    digest of the whole, so two long keys stay two)."""
    clean = _NOT_IN_KEY.sub("_", name).replace("..", "__")
    if len(clean) <= MAX_KEY:
        return clean
    return clean[: MAX_KEY - 13] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def _cut(value: str, limit: int, where: str) -> str:
    note = f"… (cut at {limit} characters; whole in {where})"
    return value if len(value) <= limit else value[: limit - len(note)] + note


def export(view: RunView, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> tuple[str, str]:
    """Write the run; -> (its parent run id, the experiment id)."""
    mlflow = require("mlflow", "--mlflow", "mlflow")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=_artifact_location(client.tracking_uri))
    previous = _previous(client, experiment_id, view.run_id)  # deleted once the new export is whole
    replaced = len(previous)
    parent = _start(client, experiment_id, view.name, view.tags | {f"{TAG}replaced_runs": str(replaced)},
                    view.started_at, None)
    _log(client, parent, view.params, view.metrics, view.series, view.started_at)
    with tempfile.TemporaryDirectory(prefix="researcher-mlflow-") as tmp:
        (Path(tmp) / "report.json").write_text(view.report_json)
        client.log_artifacts(parent, tmp)
    for candidate in view.candidates:
        _candidate(client, experiment_id, parent, candidate)
    client.set_terminated(parent, view.status.upper(), end_time=_ms(view.finished_at))
    for old in previous:
        client.delete_run(old)
    log.info("mlflow_export", run_id=view.run_id, experiment=experiment_id, parent=parent, replaced_runs=replaced,
             candidates=len(view.candidates), seeds=sum(len(c.seeds) for c in view.candidates))
    return parent, experiment_id


def _candidate(client: Any, experiment_id: str, parent: str, c: CandidateView) -> None:
    run_id = _start(client, experiment_id, c.name, c.tags, c.started_at, parent)
    _log(client, run_id, c.params, c.metrics, {}, c.started_at, step=c.iteration)
    with tempfile.TemporaryDirectory(prefix="researcher-mlflow-") as tmp:
        folder = Path(tmp)
        (folder / "config.yaml").write_text(c.config_yaml)
        if c.code is not None:
            (folder / "model_code.py").write_bytes(c.code)
        if c.plots:
            (folder / "plots").mkdir()
            for filename, png in c.plots.items():  # confusion_matrix.png, learning_curves.png
                (folder / "plots" / Path(filename).name).write_bytes(png)
        client.log_artifacts(run_id, tmp)
    for seed in c.seeds:
        _seed(client, experiment_id, run_id, c, seed)
    if c.status != "running":
        client.set_terminated(run_id, c.status.upper(), end_time=_ms(c.finished_at))


def _seed(client: Any, experiment_id: str, parent: str, c: CandidateView, s: SeedView) -> None:
    run_id = _start(client, experiment_id, f"{c.name} seed {s.seed}", s.tags, s.started_at, parent)
    last = max((epoch for points in s.curves.values() for epoch, _ in points), default=0)
    _log(client, run_id, {"seed": str(s.seed)}, s.metrics, s.curves, s.started_at, step=last)
    client.set_terminated(run_id, s.status.upper(), end_time=_ms(s.finished_at))


def _start(client: Any, experiment_id: str, name: str, tags: dict[str, str], started_at: float,
           parent: str | None) -> str:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {key(k): _cut(v, MAX_TAG, "report.json") for k, v in tags.items()}
    if parent:
        tags[MLFLOW_PARENT_RUN_ID] = parent  # what makes MLflow's UI nest it
    run = client.create_run(experiment_id, start_time=_ms(started_at) or None, tags=tags, run_name=name)
    return run.info.run_id


def _log(client: Any, run_id: str, params: dict[str, str], scalars: dict[str, float],
         curves: dict[str, list[tuple[int, float]]], at: float, step: int = 0) -> None:
    """Parameters, scalars (at `step`) and curves (their own steps) in as few batches as MLflow takes."""
    from mlflow.entities import Metric, Param

    time_ms = _ms(at)
    metrics = [Metric(key(name), value, time_ms, step) for name, value in scalars.items()]
    metrics += [Metric(key(name), value, time_ms, epoch) for name, points in curves.items() for epoch, value in points]
    cleaned: dict[str, str] = {}
    for name, value in params.items():  # two names may clean to one key: MLflow refuses a parameter set twice
        cleaned.setdefault(key(name), _cut(value, MAX_PARAM, "config.yaml or report.json"))
    entries = [Param(k, v) for k, v in cleaned.items()]
    room = METRICS_PER_BATCH - PARAMS_PER_BATCH  # a batch holds 1,000 entries in all
    for metric_part, param_part in zip_longest([metrics[i: i + room] for i in range(0, len(metrics), room)],
                                               [entries[i: i + PARAMS_PER_BATCH]
                                                for i in range(0, len(entries), PARAMS_PER_BATCH)], fillvalue=[]):
        client.log_batch(run_id, metrics=metric_part, params=param_part)


def _previous(client: Any, experiment_id: str, run_id: str) -> list[str]:
    """The runs an earlier export of `run_id` wrote here (the export deletes them once it is written
    whole: one cut short leaves the earlier one in place)."""
    query = f"tags.`{TAG}run_id` = '{run_id}'"  # run ids are letters, digits, - and _ (Goal checks them)
    found, token = [], None
    while True:  # every page first: deleting while paging would shift the pages
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000, page_token=token)
        found += [run.info.run_id for run in page]
        token = page.token
        if not token:
            break
    return found


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
