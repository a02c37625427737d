"""`researcher run`: a goal followed to its report, on a running stack or on an embedded one
started for it (whose home keeps the results: researcher/home.py). The goal and its data are
checked first, then the LLM endpoints, then the stack starts; the report and the export are
written before the stack stops; an interrupted command records its run as stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Awaitable, Callable

import msgspec

from researcher import dashboard_cmd, interrupts, runs_cmd
from researcher.goals import LLM_ROLES, check_locally, flagged, llm_env, make_goal, submit_goal
from researcher.stack import LocalStack
from shared.errors import ConfigFileError
from shared.messaging import subjects
from shared.messaging.bus import COMMAND_CONNECT_S, TRANSIENT_ERRORS, connect, decode
from shared.messaging.messages import TERMINAL_STATUSES, Event, Goal
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.report import build_report, export_run, for_terminal, format_report, load_records
from shared.registry.store import Registry
from shared.runtime.config import load_config


async def follow(nc, goal: Goal, quiet: bool = False, poll_s: float = 1.0,
                 submit: Callable[[], Awaitable[None]] | None = None) -> tuple[RunRecord, list[IterationRecord]]:
    """Show events, and on a terminal a progress bar over iterations, until the run is terminal
    (without a terminal, a line per event and no bar redrawn among them); -> its records.
    `submit` is called once the events are subscribed to, so none of the first ones is missed."""
    from tqdm import tqdm

    registry = await Registry.read(nc.jetstream())
    # over the compute budget, in seed-epochs: the planner's progress events say how much is spent
    bar = tqdm(total=None, desc="compute", unit="seed-epoch", file=sys.stderr, leave=False,
               disable=quiet or not sys.stderr.isatty())

    async def on_event(msg) -> None:
        event = decode(msg.data, Event, msg.subject)
        if event.kind == "progress" and isinstance(event.data.get("spent"), int):
            bar.total = event.data.get("budget")
            bar.n = event.data["spent"]
            bar.refresh()
        bar.write(f"[{time.strftime('%H:%M:%S')}] {for_terminal(event.message)}", file=sys.stderr)

    sub = await nc.subscribe(subjects.events_subject(goal.run_id), cb=on_event)
    try:
        if submit is not None:
            await nc.flush()  # the server holds the subscription
            await submit()
        while True:  # the registry decides, the events only show progress
            run = await registry.get_run(goal.run_id)
            if run is not None and run.status in TERMINAL_STATUSES:
                break
            await asyncio.sleep(poll_s)
    finally:
        await sub.unsubscribe()
        bar.close()
    records = await load_records(registry, goal.run_id)
    assert records is not None
    return records


def show(records: tuple[RunRecord, list[IterationRecord]], as_json: bool) -> None:
    print(json.dumps(build_report(*records), indent=2) if as_json else for_terminal(format_report(*records)))


def _check_llm_flags(args: argparse.Namespace) -> str | None:
    """-> an error for flags that cannot take effect, or settings that do not hold together."""
    from shared.llm.client import llm_settings  # openai: only `run` needs it

    env = llm_env(args)
    if env and args.nats_url:
        return ("--llm-* flags configure the embedded stack; a running stack takes its LLMs from its configuration "
                "(the llm section of config/researcher.yaml, or RESEARCHER_LLM__PLANNING__BASE_URL and the like)")
    try:
        config = load_config(environ={**os.environ, **env})
    except ConfigFileError as exc:
        return str(exc)
    return None if args.nats_url else _check_llm_endpoints(args, [llm_settings(config, role) for _, _, role in LLM_ROLES])


# Seconds `researcher run` waits for each LLM endpoint before it starts an embedded stack.
CLI_CHECK_TIMEOUT_S = 5.0


def _check_llm_endpoints(args: argparse.Namespace, configured: list) -> str | None:
    """The embedded stack's LLMs, checked before it starts: trouble is shown at once, and with
    --require-llm it is an error (the run would fail at its start)."""
    from shared.llm.check import check_endpoints, describe_check, required_error, unconfigured_problem

    roles = [s for s in configured if s]
    unconfigured = unconfigured_problem(args.require_llm, roles)
    if unconfigured:
        return flagged(unconfigured)
    failed = []
    for call, settings in zip(asyncio.run(check_endpoints(roles, CLI_CHECK_TIMEOUT_S)), roles):
        print(describe_check(call, settings, args.require_llm), file=sys.stderr)
        if call.outcome != "ok":
            failed.append(f"the {call.role} LLM failed its check ({call.outcome}: {call.error})")
    return required_error("; ".join(failed)) if failed and args.require_llm else None


def run(args: argparse.Namespace) -> int:
    goal = make_goal(args)
    # an embedded stack's services read this configuration: the data files and the caps are checked
    # before the stack starts; a running stack checks them itself when the goal is submitted
    config = None if args.nats_url else load_config()
    check_locally(goal, config and config.data.dir, config)
    problem = _check_llm_flags(args) or _dashboard_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # The embedded stack is entered outside the event loop: whatever ends the loop (a signal as an
    # exception, a crash), the stack's __exit__ stops its processes.
    where = f" --nats-url {args.nats_url}" if args.nats_url else (f" --home {args.home}" if args.home else "")
    with ExitStack() as stack:
        url, credential = args.nats_url, None
        if not url:
            home = runs_cmd.home_of(args)
            services = dashboard_cmd.with_dashboard(args.dashboard)
            print(f"starting an embedded stack (nats-server + {', '.join(services)}) in {home.path}...",
                  file=sys.stderr)
            env = {**llm_env(args), **(dashboard_cmd.stack_env(args.dashboard) if args.dashboard else {})}
            local = stack.enter_context(LocalStack(log_dir=args.log_dir, env=env, home=home, services=services))
            # the command owns the stack it started: the admin's credential, to record a run it ends as stopped
            url, credential = local.url, local.credential("admin")
            print(f"service logs: {local.log_dir} (NATS on {url}: loopback only, TLS with this home's credentials)",
                  file=sys.stderr)
            if args.dashboard:
                print(f"dashboard: http://127.0.0.1:{args.dashboard}/runs/{goal.run_id} (while the run goes on; "
                      "`researcher dashboard` serves this home's runs afterwards)", file=sys.stderr)
        try:
            records, exported = interrupts.run(_submit_and_follow(url, goal, args.export, embedded=not args.nats_url,
                                                                  credential=credential))
        except TRANSIENT_ERRORS as exc:
            logs = "" if args.nats_url else f"; the service logs are in {local.log_dir}"
            print(f"error: the NATS server at {url} stopped answering while run {goal.run_id} was followed "
                  f"({type(exc).__name__}: {exc}){logs}", file=sys.stderr)
            return 1
        # the results first: stopping the embedded stack takes a while, and is not to be interrupted
        show(records, args.json)
        print(f"later: researcher report {goal.run_id}{where} | researcher export {goal.run_id} DIR{where} | "
              f"researcher runs{where}", file=sys.stderr)
        if not args.nats_url:
            interrupts.ignore_signals("the run is over; stopping the embedded stack...")
    failed = records[0].status == "failed" or (args.export is not None and not exported)
    return 1 if failed else 0


def _dashboard_problem(args: argparse.Namespace) -> str | None:
    if args.dashboard is None:
        return None
    if args.nats_url:
        return ("--dashboard serves an embedded stack's dashboard; the stack at --nats-url serves its own "
                "(`make up`: http://127.0.0.1:8088/)")
    return dashboard_cmd.port_problem(args.dashboard)


async def _stop_orphans(nc) -> None:
    """Runs a killed command left `running` (SIGKILL gave it no chance to stop them): this stack
    holds their home now, so nothing drives them; recorded as stopped, as an interrupted one is,
    rather than resumed behind the new run's back."""
    registry = await Registry.open(nc.jetstream())
    for run in await registry.list_runs():
        if run.status == "running" and await _stop(registry, run.run_id, "stopped: the researcher run command that "
                                                   "drove it was killed before it finished"):
            print(f"run {run.run_id} ({run.goal.goal!r}) was left unfinished by a command that was killed; "
                  "recorded as stopped", file=sys.stderr)


async def _stop(registry: Registry, run_id: str, why: str) -> bool:
    """Record a run as stopped unless it ended already; -> whether this changed it."""
    changed = []

    def stopped(run: RunRecord) -> RunRecord:
        changed.clear()
        if run.status in TERMINAL_STATUSES:
            return run
        changed.append(True)
        return msgspec.structs.replace(run, status="stopped", finished_at=time.time(), error=why)
    await registry.update_run(run_id, stopped)
    return bool(changed)


async def _mark_stopped(nc, goal: Goal) -> None:
    """The embedded stack ends with its command, so its run does too: recorded as stopped, not
    left to be resumed by the next `researcher run`. A goal not taken yet is recorded stopped too,
    so that a planner taking it later finds its run over."""
    why = "stopped: the researcher run command was interrupted"
    try:
        registry = await Registry.open(nc.jetstream())
        try:
            changed = await asyncio.wait_for(_stop(registry, goal.run_id, why), timeout=5)
        except KeyError:
            changed = await registry.create_run(RunRecord(run_id=goal.run_id, goal=goal, status="stopped", error=why,
                                                          finished_at=time.time()))
        if changed:
            print(f"run {goal.run_id} stopped; `researcher report {goal.run_id}` shows what it did", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the stack may be gone already; nothing more to do
        print(f"run {goal.run_id} could not be marked stopped ({type(exc).__name__}: {exc})", file=sys.stderr)


async def _submit_and_follow(url: str, goal: Goal, export: Path | None, embedded: bool,
                             credential: str | None = None) -> tuple[tuple[RunRecord, list[IterationRecord]], bool]:
    nc = await connect(url, "researcher-cli", first_within_s=COMMAND_CONNECT_S, credential=credential)
    try:
        if embedded:
            await _stop_orphans(nc)

        async def submit() -> None:
            how = await submit_goal(nc, goal)
            print(f"run {goal.run_id} {how}", file=sys.stderr)

        try:
            records = await follow(nc, goal, submit=submit)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):  # a signal: the run ends with the command
            if embedded:
                await _mark_stopped(nc, goal)
            raise
        exported = False
        if export:
            try:
                await export_run(await Registry.read(nc.jetstream()), goal.run_id, export)
                exported = True
                print(f"exported run {goal.run_id} to {export}", file=sys.stderr)
            except OSError as exc:  # the report still comes; `researcher export` can try again
                print(f"error: the export to {export} failed: {exc}", file=sys.stderr)
        return records, exported
    finally:
        try:
            await asyncio.wait_for(nc.close(), 5.0)
        except Exception:  # noqa: BLE001 - a server gone: nothing to tell it, and what went wrong is raised
            pass
