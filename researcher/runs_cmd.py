"""`researcher report`, `export`, `runs`, and `stop`, `pause`, `resume`, `queue` (steering by hand): read the registry of a running stack (--nats-url), or
else the embedded stack's home, which outlives `researcher run` (researcher/home.py): joined when
its stack is running, otherwise opened with a nats-server of this command's own for as long as it
reads. Light imports only: these commands start in well under a second."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from researcher.home import Home, HomeBusyError, default_home
from researcher.stack import free_port, start_nats_server, stop

from shared.errors import ExportTargetError, MissingExtraError, SteerError
from shared.messaging.bus import COMMAND_CONNECT_S, connect
from shared.messaging.messages import SteerRequest
from shared.messaging.steering import parse_config, steer
from shared.registry.records import RunRecord
from shared.registry.report import build_report, export_run, for_terminal, format_report, load_records
from shared.registry.store import Registry


def add_home_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=None, metavar="DIR",
                   help=f"the embedded stack's home: its registry and logs (default: $RESEARCHER_HOME or {default_home()})")


def add_parsers(sub, nats_arg) -> None:
    report = sub.add_parser("report", help="print a run's report")
    report.add_argument("run_id")
    report.add_argument("--json", action="store_true", help="the machine-readable report")
    nats_arg(report)
    add_home_arg(report)
    export = sub.add_parser("export", help="write a run's configs, code, results, plots and best model to a directory, "
                            "and/or to MLflow (--mlflow) and TensorBoard (--tensorboard)")
    export.add_argument("run_id")
    export.add_argument("directory", type=Path, nargs="?", help="the export folder (optional with a tracker)")
    export.add_argument("--mlflow", metavar="URI", help="an MLflow tracking store: a path, file:///..., sqlite:///x.db "
                        "or http://host:5000 (needs pytorch-researcher[mlflow]); a second export replaces the first")
    export.add_argument("--mlflow-experiment", default="pytorch-researcher", metavar="NAME",
                        help="the MLflow experiment to write to (default: %(default)s)")
    export.add_argument("--tensorboard", type=Path, metavar="DIR",
                        help="write TensorBoard event files to DIR/<run id> (needs pytorch-researcher[tensorboard])")
    nats_arg(export)
    add_home_arg(export)
    steering = {
        "stop": "stop a run: the planner driving it ends it as stopped, keeping what it measured",
        "pause": "pause a run: no candidate starts or is promoted and it does not end by its own decisions until "
                 "resumed; candidates in flight finish. A run has no wall-clock budget: its budgets are compute, "
                 "which a paused run spends only on the candidates in flight",
        "resume": "resume a paused run: the search carries on (configs queued by hand first)",
        "queue": "queue a model_config as a run's next candidate, ahead of the search and the planning LLM; "
                 "checked at once as a proposal is (refused with the reason)"}
    for name, text in steering.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("run_id")
        if name == "queue":
            p.add_argument("config", help="a model_config as a JSON or YAML file (an export's "
                                          "experiments/RUN/iteration_NN/model_config.yaml as it is), or - for stdin")
        nats_arg(p)
        add_home_arg(p)
    runs = sub.add_parser("runs", help="list the runs in the registry, oldest first")
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    nats_arg(runs)
    add_home_arg(runs)


class NoRegistry(Exception):
    """Nothing to read: no stack given and no home with a store."""


@asynccontextmanager
async def open_registry(nats_url: str | None, home: Home) -> AsyncIterator[tuple[Registry, str]]:
    """-> (registry, where it is, for messages)."""
    if nats_url:
        async with _connected(nats_url, None) as registry:
            yield registry, nats_url
        return
    if not home.has_store():
        raise NoRegistry(f"no runs yet in {home.path} (the embedded stack's home; `researcher run` fills it); "
                         "for a stack started with `make up`, pass --nats-url nats://localhost:4222")
    busy = HomeBusyError(home.path, {})
    for _ in range(2):  # a stack may start between the two looks
        url = home.running_stack()
        if url:
            async with _connected(url, home) as registry:
                yield registry, f"{home.path} (the running embedded stack)"
            return
        try:
            lock = home.lock("researcher (reading the registry)", wait_s=5.0)
        except HomeBusyError as exc:
            busy = exc
            continue
        try:
            port = free_port()
            with open(home.path / "reader-nats-server.log", "ab") as log:
                proc = start_nats_server(port, str(home.store), log, lock.fileno(), credentials=home.credentials)
            try:
                async with _connected(f"tls://127.0.0.1:{port}", home) as registry:
                    yield registry, str(home.path)
            finally:
                stop(proc, 5.0)
        finally:
            lock.release()
        return
    raise busy


async def client_connection(url: str, home: Home | None):
    """A command's connection as the client role: with the home's credential for a home's stack,
    else this machine's (or NATS_CREDENTIALS)."""
    credential = str(home.credentials.role("client").path) if home else None
    return await connect(url, "researcher-cli", first_within_s=COMMAND_CONNECT_S, credential=credential)


@asynccontextmanager
async def _connected(url: str, home: Home | None) -> AsyncIterator[Registry]:
    """A reader's connection to the registry (client_connection)."""
    nc = await client_connection(url, home)
    try:
        yield await Registry.read(nc.jetstream())
    finally:
        await nc.close()


def home_of(args: argparse.Namespace) -> Home:
    return Home(args.home.expanduser() if getattr(args, "home", None) else default_home())


def _no_such_run(args: argparse.Namespace, where: str) -> int:
    again = f" --nats-url {args.nats_url}" if args.nats_url else (f" --home {args.home}" if args.home else "")
    print(f"no run {args.run_id!r} in the registry at {where}; `researcher runs{again}` lists those there",
          file=sys.stderr)
    return 1


async def report(args: argparse.Namespace) -> int:
    async with open_registry(args.nats_url, home_of(args)) as (registry, where):
        records = await load_records(registry, args.run_id)
    if records is None:
        return _no_such_run(args, where)
    print(json.dumps(build_report(*records), indent=2) if args.json else for_terminal(format_report(*records)))
    return 0


async def export(args: argparse.Namespace) -> int:
    if not (args.directory or args.mlflow or args.tensorboard):
        print("usage error: researcher export RUN needs where to write: a DIRECTORY, --mlflow URI or "
              "--tensorboard DIR (or several)", file=sys.stderr)
        return 2
    from researcher.trackers import require

    try:  # a missing extra is said before the registry is opened
        for wanted, module, extra in ((args.mlflow, "mlflow", "mlflow"), (args.tensorboard, "tensorboard", "tensorboard")):
            if wanted:
                require(module, f"--{extra}", extra)
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from researcher.trackers.view import load_view

    view = None
    async with open_registry(args.nats_url, home_of(args)) as (registry, where):
        if args.directory:
            try:
                out = await export_run(registry, args.run_id, args.directory)
            except KeyError:
                return _no_such_run(args, where)
            print(f"exported run {args.run_id} to {out}")
        if args.mlflow or args.tensorboard:
            view = await load_view(registry, args.run_id)
            if view is None:
                return _no_such_run(args, where)
    return to_trackers(view, args) if view else 0


def to_trackers(view, args: argparse.Namespace) -> int:
    """The trackers' part of `export`, once the registry is closed (they write for a while)."""
    started = time.monotonic()
    try:
        if args.mlflow:
            from researcher.trackers import mlflow_export

            parent, experiment = mlflow_export.export(view, args.mlflow, args.mlflow_experiment)
            print(f"exported run {view.run_id} to MLflow at {args.mlflow}: experiment {args.mlflow_experiment!r} "
                  f"({experiment}), parent run {parent}, {len(view.candidates)} candidates "
                  f"(open with: mlflow ui --backend-store-uri {mlflow_export.tracking_uri(args.mlflow)})")
        if args.tensorboard:
            from researcher.trackers import tensorboard_export

            folder = tensorboard_export.export(view, args.tensorboard)
            print(f"exported run {view.run_id} to TensorBoard event files in {folder} "
                  f"(open with: tensorboard --logdir {args.tensorboard})")
    except (MissingExtraError, ExportTargetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the tracker's own failure (no server, a bad URI, a folder it cannot write)
        which = "--tensorboard" if isinstance(exc, OSError) else "--mlflow"
        print(f"error: the export to {which} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
              file=sys.stderr)
        return 1
    print(f"tracker export took {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


async def runs(args: argparse.Namespace) -> int:
    try:
        async with open_registry(args.nats_url, home_of(args)) as (registry, where):
            found = await registry.list_runs()
    except NoRegistry as exc:  # nothing run yet is an answer, not an error
        print(exc, file=sys.stderr)
        return 0
    if args.json:
        for run in found:
            print(json.dumps(run_row(run)))
        return 0
    if not found:
        print(f"no runs in the registry at {where}", file=sys.stderr)
        return 0
    print(f"{len(found)} run(s) in {where}", file=sys.stderr)
    print(format_runs(found))
    return 0


def run_row(run: RunRecord) -> dict:
    return {"run_id": run.run_id, "status": run.status, "dataset": run.goal.dataset, "goal": run.goal.goal,
            "goal_statistic": run.goal.goal_statistic, "goal_metric": run.goal.goal_metric,
            "target": run.goal.target_value,
            "best_score": run.best_score, "best_iteration": run.best_iteration,
            "iterations": run.current_iteration, "max_iterations": run.goal.max_iterations,
            "candidates": run.current_iteration, "budget_seed_epochs": run.budget_epochs,
            "created_at": run.created_at, "finished_at": run.finished_at, "error": run.error,
            "paused": run.paused, "queued": len(run.queued)}


def format_runs(found: list[RunRecord]) -> str:
    header = ("RUN", "STATUS", "DATASET", "METRIC", "BEST", "TARGET", "CANDIDATES", "STARTED", "GOAL")
    rows = [header]
    for run in found:
        best = "-" if run.best_score is None else f"{run.best_score:.4f}"
        target = f"{'<=' if run.goal.lower_is_better else '>='}{run.goal.target_value:.4f}"
        rows.append((run.run_id, "paused" if run.paused and run.status == "running" else run.status, _cut(run.goal.dataset, 24), run.goal.goal_metric, best, target,
                     str(run.current_iteration),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at)), _cut(run.goal.goal, 48)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def steer_run(args: argparse.Namespace) -> int:
    """`researcher stop|pause|resume|queue`: ask the planner driving the run (shared.messaging.steering);
    -> 0 once the action is taken, 1 with a one-line error otherwise."""
    config = None
    if args.command == "queue":
        try:
            config = read_config(args.config)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    home = home_of(args)
    url = args.nats_url or home.running_stack()
    if not url:
        raise NoRegistry("no running stack to ask: pass --nats-url (or NATS_URL) for a stack started with `make up`; "
                         f"no `researcher run` is running on {home.path} (one in progress stops with Ctrl-C)")
    who = f"{getpass.getuser()}@{socket.gethostname()} with researcher {args.command}"
    nc = await client_connection(url, None if args.nats_url else home)
    try:
        answer = await steer(nc, SteerRequest(run_id=args.run_id, action=args.command, by=who, config=config))
    except SteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    if not answer.ok:
        print(f"error: {answer.message}", file=sys.stderr)
        return 1
    print(f"run {answer.run_id}: {answer.status}: {answer.message}", file=sys.stderr)
    return 0


def read_config(path: str) -> dict:
    """A model_config from a JSON or YAML file, or stdin ("-"); an export's model_config.yaml as it is.
    ValueError with what is wrong."""
    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the config {where}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_config(text, where)
