"""`researcher report`, `export`, `runs` and `stop`: read the registry of a running stack (--nats-url), or
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
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from shared.messaging import subjects
from shared.messaging.bus import COMMAND_CONNECT_S, connect, decode, encode
from shared.errors import MessageError
from shared.messaging.messages import STOP_WAIT_S, TERMINAL_STATUSES, ErrorReply, StopAnswer, StopRequest
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
    export = sub.add_parser("export", help="write a run's configs, code, results, plots and best model to a directory")
    export.add_argument("run_id")
    export.add_argument("directory", type=Path)
    nats_arg(export)
    add_home_arg(export)
    stop = sub.add_parser("stop", help="stop a run: the planner driving it ends it as stopped, keeping what it measured")
    stop.add_argument("run_id")
    nats_arg(stop)
    add_home_arg(stop)
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
    async with open_registry(args.nats_url, home_of(args)) as (registry, where):
        try:
            out = await export_run(registry, args.run_id, args.directory)
        except KeyError:
            return _no_such_run(args, where)
    print(f"exported run {args.run_id} to {out}")
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
            "created_at": run.created_at, "finished_at": run.finished_at, "error": run.error}


def format_runs(found: list[RunRecord]) -> str:
    header = ("RUN", "STATUS", "DATASET", "METRIC", "BEST", "TARGET", "CANDIDATES", "STARTED", "GOAL")
    rows = [header]
    for run in found:
        best = "-" if run.best_score is None else f"{run.best_score:.4f}"
        target = f"{'<=' if run.goal.lower_is_better else '>='}{run.goal.target_value:.4f}"
        rows.append((run.run_id, run.status, _cut(run.goal.dataset, 24), run.goal.goal_metric, best, target,
                     str(run.current_iteration),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at)), _cut(run.goal.goal, 48)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def stop_run(args: argparse.Namespace) -> int:
    """`researcher stop`: ask the planner driving the run to stop it; -> 0 once it is stopped."""
    home = home_of(args)
    url = args.nats_url or home.running_stack()
    if not url:
        raise NoRegistry("no running stack to ask: pass --nats-url (or NATS_URL) for a stack started with `make up`; "
                         f"no `researcher run` is running on {home.path} (one in progress stops with Ctrl-C)")
    nc = await client_connection(url, None if args.nats_url else home)
    try:
        run = await (await Registry.read(nc.jetstream())).get_run(args.run_id)
        if run is None or run.status in TERMINAL_STATUSES:  # nothing to ask a planner
            print(f"error: no run {args.run_id!r} in the registry at {url}" if run is None
                  else f"run {args.run_id} had already ended: {run.status}", file=sys.stderr)
            return 1
        who = f"{getpass.getuser()}@{socket.gethostname()} with researcher stop"
        try:
            reply = await nc.request(subjects.STOP_SUBJECT, encode(StopRequest(run_id=args.run_id, by=who)),
                                     timeout=STOP_WAIT_S + 5)
        except (NoRespondersError, NatsTimeoutError):  # running, and no replica drives it
            print(f"error: no planner answered for run {args.run_id}, which is still running: is the stack's "
                  "planner up (make ps)? A planner takes over a running run within seconds of starting",
                  file=sys.stderr)
            return 1
        try:
            answer = decode(reply.data, StopAnswer, subjects.STOP_SUBJECT)
        except MessageError:
            print(f"error: {decode(reply.data, ErrorReply, subjects.STOP_SUBJECT).error}", file=sys.stderr)
            return 1
    finally:
        await nc.close()
    print(f"run {answer.run_id}: {answer.status}: {answer.message}", file=sys.stderr)
    return 0 if answer.status == "stopped" or answer.testing else 1
