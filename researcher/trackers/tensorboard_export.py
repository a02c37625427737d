"""`researcher export RUN --tensorboard DIR`: the run as TensorBoard event files, one TensorBoard
run per folder:

    DIR/<run_id>/                   each candidate's score (step: its iteration), the test split's
                                    figures and the best score; the goal and tags as text
    DIR/<run_id>/c0003/             its statistics over seeds (step: its iteration); config, code
    DIR/<run_id>/c0003/seed0/       the seed's curves (step: the epoch) and final scalars

What goes where is researcher/trackers/view.py's. A second export of the same run replaces the
folder DIR/<run_id> (only one this export wrote: it carries a marker file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from researcher.trackers import require
from researcher.trackers.view import CandidateView, RunView
from shared.errors import ExportTargetError

log = structlog.get_logger()
MARKER = ".researcher-export"  # in DIR/<run_id>: the folder is this export's to replace


def export(view: RunView, root: Path) -> Path:
    """Write the run's event files under root/<run_id>; -> that folder."""
    require("tensorboard", "--tensorboard", "tensorboard")  # torch's writer needs it, and says so less plainly
    from torch.utils.tensorboard import SummaryWriter

    final = root / view.run_id
    if final.exists() and not (final / MARKER).is_file():
        raise ExportTargetError(str(final), f"it exists and was not written by `researcher export` (no {MARKER} "
                                            "in it); move it away or name another --tensorboard folder")
    folder = root / f".{view.run_id}.writing"  # renamed into place once whole: one cut short leaves the last
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(f"researcher export of run {view.run_id}; a later export replaces this folder\n")
    with SummaryWriter(str(folder)) as w:
        for name, points in view.series.items():
            for iteration, value in points:
                w.add_scalar(name, value, iteration, walltime=view.started_at)
        for name, value in view.metrics.items():
            w.add_scalar(name, value, 0, walltime=view.finished_at)
        w.add_text("run", _table({"status": view.status, **view.tags}), 0, walltime=view.started_at)
        w.add_text("goal_settings", _table(view.params), 0, walltime=view.started_at)
    for candidate in view.candidates:
        _candidate(SummaryWriter, folder / f"c{candidate.iteration:04d}", candidate)
    if final.exists():
        shutil.rmtree(final)
        log.info("tensorboard_export_replaces", run_id=view.run_id, folder=str(final))
    folder.rename(final)
    log.info("tensorboard_export", run_id=view.run_id, folder=str(final), candidates=len(view.candidates))
    return final


def _candidate(SummaryWriter: type, folder: Path, c: CandidateView) -> None:
    with SummaryWriter(str(folder)) as w:
        for name, value in c.metrics.items():
            w.add_scalar(name, value, c.iteration, walltime=c.finished_at)
        w.add_text("candidate", _table({"name": c.name, "status": c.status, **c.tags}), c.iteration,
                   walltime=c.started_at)
        w.add_text("config", _block(c.config_yaml), c.iteration, walltime=c.started_at)
        if c.code is not None:
            w.add_text("code", _block(c.code.decode(errors="replace")), c.iteration, walltime=c.started_at)
    for seed in c.seeds:
        with SummaryWriter(str(folder / f"seed{seed.seed}")) as w:
            for name, points in seed.curves.items():
                for epoch, value in points:
                    w.add_scalar(name, value, epoch, walltime=seed.started_at)
            last = max((epoch for points in seed.curves.values() for epoch, _ in points), default=0)
            for name, value in seed.metrics.items():
                w.add_scalar(name, value, last, walltime=seed.finished_at)
            w.add_text("seed", _table({"status": seed.status, **seed.tags}), last, walltime=seed.started_at)


def _block(text: str) -> str:
    """Text as a Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def _table(rows: dict[str, str]) -> str:
    cells = ((k, str(v).replace("|", "\\|").replace("\n", " ")) for k, v in rows.items())
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in cells)
