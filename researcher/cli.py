"""`researcher` (run, submit, report, export, validate, evaluate) and `research-agent --goal ...`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Awaitable, Callable, get_args

import msgspec
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from researcher import evaluate_cmd, interrupts, runs_cmd, validate_cmd
from researcher.home import HomeBusyError
from researcher.stack import LocalStack
from shared.data.catalog import check_goal, known_datasets
from shared.data.files import LOCAL_HINT
from shared.errors import ConfigFileError, MessageError, NatsUnreachableError
from shared.messaging import subjects
from shared.messaging.bus import COMMAND_CONNECT_S, TRANSIENT_ERRORS, connect, decode, encode, ensure_streams
from shared.messaging.messages import GOAL_LIMITS, TERMINAL_STATUSES, ErrorReply, Event, Goal, GoalAnswer, GoalStatistic
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.report import build_report, export_run, format_report, load_records
from shared.registry.store import Registry
from shared.runtime.config import load_config
from shared.runtime.log import configure_logging

# Light imports only: `researcher --help`, submit, report and export start in a fraction of a
# second. tqdm, the LLM client (openai) and, in evaluate_cmd and validate_cmd, torch, numpy, the
# evaluation engine and the Docker client are imported by the functions that use them
# (tests/unit/test_cli_imports.py checks which modules stay out).


def _goal_args(p: argparse.ArgumentParser) -> None:
    """A goal's flags; their defaults are Goal's own, their ranges GOAL_LIMITS."""
    d, limits = Goal(run_id="-", goal="-"), GOAL_LIMITS
    p.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(known_datasets())}")
    p.add_argument("--target-accuracy", type=float, default=d.target_accuracy, help="a fraction in (0, 1]")
    p.add_argument("--max-iterations", type=int, default=d.max_iterations, help="%d to %d" % limits["max_iterations"])
    p.add_argument("--num-seeds", type=int, default=d.num_seeds, help="%d to %d" % limits["num_seeds"])
    p.add_argument("--patience", type=int, default=d.patience,
                   help="iterations without a better best before stopping, %d to %d" % limits["patience"])
    p.add_argument("--goal-statistic", choices=get_args(GoalStatistic), default=d.goal_statistic,
                   help="judge the goal on the mean over seeds or the lower bound of its 95%% interval")
    p.add_argument("--subset-size", type=int, default=d.subset_size, help="samples drawn from the data set, at least %d (default: all of them)" % limits["subset_size"][0])
    p.add_argument("--max-epochs", type=int, default=d.max_epochs, help="%d to %d" % limits["max_epochs"])
    p.add_argument("--require-llm", action="store_true", help="fail the run instead of falling back to the built-in "
                   "search or assembler when a configured LLM cannot be reached or answers nothing usable")


_LLM_ROLES = (("llm", "PLANNING", "planning"), ("tools_llm", "TOOLS", "tools"))


def _llm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLMs", "any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, OpenAI); for the "
                             "embedded stack (a running stack takes them from its configuration's llm section)")
    g.add_argument("--llm-base-url", help="the planning LLM's endpoint, e.g. http://localhost:11434/v1; "
                   "none: the built-in search plans")
    g.add_argument("--llm-model", help="the planning LLM's model name, e.g. qwen2.5-coder:7b")
    g.add_argument("--llm-api-key", help="the planning LLM's key (or put it in $OPENAI_API_KEY)")
    g.add_argument("--tools-llm-base-url", help="the tools LLM's endpoint (code and summaries); default: the planning one")
    g.add_argument("--tools-llm-model", help="default: the planning model")
    g.add_argument("--tools-llm-api-key", help="default: the planning key")


def llm_env(args: argparse.Namespace) -> dict[str, str]:
    """The --llm-* flags as the environment of the embedded stack's services. A key travels in a
    variable of its own that the configuration names, so it is never part of the settings."""
    env: dict[str, str] = {}
    for flag, role, _ in _LLM_ROLES:
        base_url, model, key = (getattr(args, f"{flag}_{k}", None) for k in ("base_url", "model", "api_key"))
        if base_url:
            env[f"RESEARCHER_LLM__{role}__BASE_URL"] = base_url
        if model:
            env[f"RESEARCHER_LLM__{role}__MODEL"] = model
        if key:
            env[f"RESEARCHER_{role}_LLM_API_KEY"] = key
            env[f"RESEARCHER_LLM__{role}__API_KEY_ENV"] = f"RESEARCHER_{role}_LLM_API_KEY"
    return env


def _nats_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL"), help="a running stack (default: $NATS_URL)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytorch-researcher")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default (not the absent ones: None, or off for a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="researcher", description="An autonomous ML research agent for PyTorch.")
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", formatter_class=_Help,
                         help="run one goal to its report (an embedded stack when no NATS URL is given)")
    run.add_argument("goal")
    _goal_args(run)
    _nats_arg(run)
    _llm_args(run)
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument("--export", type=Path, default=None, metavar="DIR",
                     help="when the run ends, write its export (as `researcher export`) to DIR")
    runs_cmd.add_home_arg(run)
    run.add_argument("--log-dir", type=Path, default=None,
                     help="service logs of the embedded stack (default: logs/<time>/ in its home)")
    submit = sub.add_parser("submit", formatter_class=_Help, help="publish a goal to a running stack and print its run id")
    submit.add_argument("goal")
    _goal_args(submit)
    _nats_arg(submit)
    runs_cmd.add_parsers(sub, _nats_arg)
    validate_cmd.add_parser(sub)
    evaluate_cmd.add_parser(sub)
    return root


def make_goal(args: argparse.Namespace) -> Goal:
    return Goal(run_id=uuid.uuid4().hex[:16], goal=args.goal, dataset=args.dataset,
                target_accuracy=args.target_accuracy, max_iterations=args.max_iterations,
                num_seeds=args.num_seeds, patience=args.patience, goal_statistic=args.goal_statistic,
                subset_size=args.subset_size, max_epochs=args.max_epochs, submitted_at=time.time(),
                require_llm=args.require_llm)


class GoalRejected(Exception):
    """The goal has problems; the message names each field (and its flag) and the allowed range."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the goal was rejected:\n" + "\n".join(f"  {_flagged(p)}" for p in problems))


_FIELD = re.compile(r"\b(" + "|".join(f for f in Goal.__struct_fields__ if "_" in f) + r")\b")


def _flagged(problem: str) -> str:
    """A goal problem in what a CLI user types: "num_seeds must be ..." -> "--num-seeds: must be
    ...", and a field named inside the text ("needs num_seeds >= 2") as its flag too."""
    field = problem.split(" ", 1)[0].rstrip(":")
    if field not in Goal.__struct_fields__ or field == "goal":
        return problem
    said = problem[len(field):].lstrip(": ")
    return f"--{field.replace('_', '-')}: {_FIELD.sub(lambda m: '--' + m.group(1).replace('_', '-'), said)}"


def check_locally(goal: Goal, data_dir: str | None = None) -> None:
    """What the CLI can check before any stack is touched: every field's range and the data set's
    name; with `data_dir` (an embedded stack's, which reads this machine's data.dir), its files too."""
    problems = check_goal(goal, data_dir, LOCAL_HINT)
    if problems:
        raise GoalRejected(problems)


async def submit_goal(nc, goal: Goal, timeout_s: float = 10.0) -> str:
    """Submit as a request a planner answers; -> how it was taken. A rejection raises GoalRejected.
    With no planner answering (a stack still starting, say), the goal is queued on the durable
    GOALS stream instead, where the next planner checks it and records a rejection as a failed run."""
    try:
        msg = await nc.request(subjects.GOAL_SUBMIT_SUBJECT, encode(goal), timeout=timeout_s)
    except (NoRespondersError, NatsTimeoutError):
        js = nc.jetstream()
        await ensure_streams(js)
        await js.publish(subjects.GOALS_SUBJECT, encode(goal), headers={"Nats-Msg-Id": goal.run_id})
        return "queued (no planner answered yet; it is checked when one starts)"
    try:
        answer = decode(msg.data, GoalAnswer, subjects.GOAL_SUBMIT_SUBJECT)
    except MessageError:
        raise GoalRejected([decode(msg.data, ErrorReply, subjects.GOAL_SUBMIT_SUBJECT).error]) from None
    if not answer.accepted:
        raise GoalRejected(answer.problems)
    return "accepted"


async def follow(nc, goal: Goal, quiet: bool = False, poll_s: float = 1.0,
                 submit: Callable[[], Awaitable[None]] | None = None) -> tuple[RunRecord, list[IterationRecord]]:
    """Show events, and on a terminal a progress bar over iterations, until the run is terminal
    (without a terminal, a line per event and no bar redrawn among them); -> its records.
    `submit` is called once the events are subscribed to, so none of the first ones is missed."""
    from tqdm import tqdm

    registry = await Registry.open(nc.jetstream())
    bar = tqdm(total=goal.max_iterations, desc="iterations", unit="it", file=sys.stderr, leave=False,
               disable=quiet or not sys.stderr.isatty())

    async def on_event(msg) -> None:
        event = decode(msg.data, Event, msg.subject)
        if event.kind == "decided":
            bar.update(1)
        bar.write(f"[{time.strftime('%H:%M:%S')}] {event.message}", file=sys.stderr)

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
    print(json.dumps(build_report(*records), indent=2) if as_json else format_report(*records))


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
    return None if args.nats_url else _check_llm_endpoints(args, [llm_settings(config, role) for _, _, role in _LLM_ROLES])


# Seconds `researcher run` waits for each LLM endpoint before it starts an embedded stack.
CLI_CHECK_TIMEOUT_S = 5.0


def _check_llm_endpoints(args: argparse.Namespace, configured: list) -> str | None:
    """The embedded stack's LLMs, checked before it starts: trouble is shown at once, and with
    --require-llm it is an error (the run would fail at its start)."""
    from shared.llm.check import check_endpoints, describe_check, required_error, unconfigured_problem

    roles = [s for s in configured if s]
    unconfigured = unconfigured_problem(args.require_llm, roles)
    if unconfigured:
        return _flagged(unconfigured)
    failed = []
    for call, settings in zip(asyncio.run(check_endpoints(roles, CLI_CHECK_TIMEOUT_S)), roles):
        print(describe_check(call, settings), file=sys.stderr)
        if call.outcome != "ok":
            failed.append(f"the {call.role} LLM failed its check ({call.outcome}: {call.error})")
    return required_error("; ".join(failed)) if failed and args.require_llm else None


def _run(args: argparse.Namespace) -> int:
    goal = make_goal(args)
    # an embedded stack's services read this configuration's data.dir: its files are checked
    # before the stack starts; a running stack checks them itself when the goal is submitted
    check_locally(goal, None if args.nats_url else load_config().data.dir)
    # The embedded stack is entered outside the event loop: whatever ends the loop (a signal as an
    # exception, a crash), the stack's __exit__ stops its processes.
    with ExitStack() as stack:
        url = args.nats_url
        if not url:
            home = runs_cmd.home_of(args)
            print(f"starting an embedded stack (nats-server + planner, assembler, sandbox, evaluator) in {home.path}...",
                  file=sys.stderr)
            local = stack.enter_context(LocalStack(log_dir=args.log_dir, env=llm_env(args), home=home))
            url = local.url
            print(f"service logs: {local.log_dir}", file=sys.stderr)
        try:
            records = interrupts.run(_submit_and_follow(url, goal, args.export, embedded=not args.nats_url))
        except TRANSIENT_ERRORS as exc:
            logs = "" if args.nats_url else f"; the service logs are in {local.log_dir}"
            print(f"error: the NATS server at {url} stopped answering while run {goal.run_id} was followed "
                  f"({type(exc).__name__}: {exc}){logs}", file=sys.stderr)
            return 1
    show(records, args.json)
    if not args.nats_url:
        print(f"later: researcher report {goal.run_id} | researcher export {goal.run_id} DIR | researcher runs",
              file=sys.stderr)
    return 1 if records[0].status == "failed" else 0


async def _tell_resumed(nc) -> None:
    """Runs of an earlier command that was killed (SIGKILL: no chance to stop them) are resumed by
    this stack's planner; say so, since they share its evaluator with the new run."""
    registry = await Registry.open(nc.jetstream())
    for run in await registry.list_runs():
        if run.status == "running":
            print(f"resuming run {run.run_id} ({run.goal.goal!r}), left unfinished by an earlier command; "
                  f"`researcher report {run.run_id}` shows it", file=sys.stderr)


async def _mark_stopped(nc, run_id: str) -> None:
    """The embedded stack ends with its command, so its run does too: recorded as stopped, not
    left to be resumed by the next `researcher run`."""
    def stopped(run: RunRecord) -> RunRecord:
        if run.status in TERMINAL_STATUSES:
            return run
        return msgspec.structs.replace(run, status="stopped", finished_at=time.time(),
                                       error="stopped: the researcher run command was interrupted")
    try:
        registry = await Registry.open(nc.jetstream())
        await asyncio.wait_for(registry.update_run(run_id, stopped), timeout=5)
        print(f"run {run_id} stopped; `researcher report {run_id}` shows what it did", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the stack may be gone already; nothing more to do
        print(f"run {run_id} could not be marked stopped ({type(exc).__name__}: {exc})", file=sys.stderr)


async def _submit_and_follow(url: str, goal: Goal, export: Path | None,
                             embedded: bool) -> tuple[RunRecord, list[IterationRecord]]:
    nc = await connect(url, "researcher-cli", first_within_s=COMMAND_CONNECT_S)
    try:
        if embedded:
            await _tell_resumed(nc)

        async def submit() -> None:
            how = await submit_goal(nc, goal)
            print(f"run {goal.run_id} {how}", file=sys.stderr)

        try:
            records = await follow(nc, goal, submit=submit)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):  # a signal: the run ends with the command
            if embedded:
                await _mark_stopped(nc, goal.run_id)
            raise
        if export:
            await export_run(await Registry.open(nc.jetstream()), goal.run_id, export)
            print(f"exported run {goal.run_id} to {export}", file=sys.stderr)
        return records
    finally:
        try:
            await asyncio.wait_for(nc.close(), 5.0)
        except Exception:  # noqa: BLE001 - a server gone: nothing to tell it, and what went wrong is raised
            pass


async def _submit(args: argparse.Namespace) -> int:
    goal = make_goal(args)
    check_locally(goal)
    nc = await connect(_need_url(args), "researcher-cli", first_within_s=COMMAND_CONNECT_S)
    try:
        how = await submit_goal(nc, goal)
    finally:
        await nc.close()
    print(f"run {goal.run_id} {how}", file=sys.stderr)
    print(goal.run_id)
    return 0


def _need_url(args: argparse.Namespace) -> str:
    if not args.nats_url:
        raise SystemExit("this command needs a running stack: pass --nats-url or set NATS_URL (e.g. nats://localhost:4222)")
    return args.nats_url


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging("cli", "error", stream=sys.stderr)  # stdout carries the report alone
    if args.command == "run":
        problem = _check_llm_flags(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    with interrupts.signals_as_exceptions():
        try:
            return _command(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 128 + signal.SIGINT


def _command(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return validate_cmd.run(args)
    if args.command == "evaluate":
        return evaluate_cmd.run_evaluate(args)
    try:
        if args.command == "run":
            return _run(args)
        handler = {"submit": _submit, "report": runs_cmd.report, "export": runs_cmd.export,
                   "runs": runs_cmd.runs}[args.command]
        return interrupts.run(handler(args))
    except GoalRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HomeBusyError, runs_cmd.NoRegistry, NatsUnreachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def research_agent_main(argv: list[str] | None = None) -> int:
    """The spec's name: `research-agent --goal "..." [--dataset ...]` is `researcher run`."""
    p = argparse.ArgumentParser(prog="research-agent", description="Run one research goal to its report.")
    p.add_argument("--goal", required=True)
    _goal_args(p)
    _nats_arg(p)
    _llm_args(p)
    p.add_argument("--json", action="store_true")
    args, rest = p.parse_known_args(argv)
    if rest:
        p.error(f"unrecognised arguments: {' '.join(rest)}")
    forwarded = ["run", args.goal, "--dataset", args.dataset, "--target-accuracy", str(args.target_accuracy),
                 "--max-iterations", str(args.max_iterations), "--num-seeds", str(args.num_seeds),
                 "--patience", str(args.patience), "--goal-statistic", args.goal_statistic,
                 "--max-epochs", str(args.max_epochs)]
    if args.subset_size:
        forwarded += ["--subset-size", str(args.subset_size)]
    if args.nats_url:
        forwarded += ["--nats-url", args.nats_url]
    for name in (f"{flag}_{key}" for flag, _, _ in _LLM_ROLES for key in ("base_url", "model", "api_key")):
        if getattr(args, name):
            forwarded += [f"--{name.replace('_', '-')}", getattr(args, name)]
    if args.json:
        forwarded.append("--json")
    if args.require_llm:
        forwarded.append("--require-llm")
    return main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
