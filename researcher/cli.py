"""`researcher` (run, submit, report, export, runs, stop, validate, evaluate, credentials) and `research-agent --goal ...`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from researcher import credentials_cmd, dashboard_cmd, evaluate_cmd, interrupts, run_cmd, runs_cmd, validate_cmd
from researcher.goals import LLM_ROLES, DefaultsHelp, GoalRejected, check_locally, goal_args, llm_args, make_goal, submit_goal
from researcher.home import HomeBusyError
from shared.errors import ConfigFileError, NatsUnreachableError
from shared.messaging.bus import COMMAND_CONNECT_S, connect
from shared.security.credentials import CredentialsError
from shared.runtime.log import configure_logging

# Light imports only: `researcher --help`, submit, report and export start in a fraction of a
# second. tqdm, the LLM client (openai) and, in evaluate_cmd and validate_cmd, torch, numpy, the
# evaluation engine and the Docker client are imported by the functions that use them
# (tests/unit/test_cli_imports.py checks which modules stay out).


def _nats_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL"), help="a running stack (default: $NATS_URL)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytorch-researcher")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="researcher", description="An autonomous ML research agent for PyTorch.")
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", formatter_class=DefaultsHelp,
                         help="run one goal to its report (an embedded stack when no NATS URL is given)")
    run.add_argument("goal")
    goal_args(run)
    _nats_arg(run)
    llm_args(run)
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument("--export", type=Path, default=None, metavar="DIR",
                     help="when the run ends, write its export (as `researcher export`) to DIR")
    runs_cmd.add_home_arg(run)
    dashboard_cmd.add_run_arg(run)
    run.add_argument("--log-dir", type=Path, default=None,
                     help="service logs of the embedded stack (default: logs/<time>/ in its home)")
    submit = sub.add_parser("submit", formatter_class=DefaultsHelp, help="publish a goal to a running stack and print its run id")
    submit.add_argument("goal")
    goal_args(submit)
    _nats_arg(submit)
    runs_cmd.add_parsers(sub, _nats_arg)
    validate_cmd.add_parser(sub)
    evaluate_cmd.add_parser(sub)
    credentials_cmd.add_parser(sub)
    dashboard_cmd.add_parser(sub)
    return root


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
        raise SystemExit("this command needs a running stack: pass --nats-url or set NATS_URL (e.g. tls://localhost:4222)")
    return args.nats_url


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging("cli", "error", stream=sys.stderr)  # stdout carries the report alone
    with interrupts.signals_as_exceptions():
        try:
            return _command(args)
        except ConfigFileError as exc:  # a bad key in the file or the environment: its line, not a traceback
            print(f"researcher: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 128 + signal.SIGINT


def _command(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return validate_cmd.run(args)
    if args.command == "evaluate":
        return evaluate_cmd.run_evaluate(args)
    if args.command == "credentials":
        return credentials_cmd.run(args)
    try:
        if args.command == "run":
            return run_cmd.run(args)
        if args.command == "dashboard":
            return dashboard_cmd.serve(args)
        handler = {"submit": _submit, "report": runs_cmd.report, "export": runs_cmd.export,
                   "runs": runs_cmd.runs, **dict.fromkeys(("stop", "pause", "resume", "queue"), runs_cmd.steer_run)}[args.command]
        return interrupts.run(handler(args))
    except GoalRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HomeBusyError, runs_cmd.NoRegistry, NatsUnreachableError, CredentialsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def research_agent_main(argv: list[str] | None = None) -> int:
    """The spec's name: `research-agent --goal "..." [--dataset ...]` is `researcher run`."""
    p = argparse.ArgumentParser(prog="research-agent", description="Run one research goal to its report.",
                                formatter_class=DefaultsHelp)
    p.add_argument("--goal", required=True)
    goal_args(p)
    _nats_arg(p)
    llm_args(p)
    p.add_argument("--json", action="store_true")
    args, rest = p.parse_known_args(argv)
    if rest:
        p.error(f"unrecognised arguments: {' '.join(rest)}")
    forwarded = ["run", args.goal, "--dataset", args.dataset, "--target-accuracy", str(args.target_accuracy),
                 "--max-iterations", str(args.max_iterations), "--num-seeds", str(args.num_seeds),
                 "--patience", str(args.patience), "--goal-statistic", args.goal_statistic,
                 "--max-epochs", str(args.max_epochs), "--goal-metric", args.goal_metric]
    for flag in ("subset_size", "parallel", "epoch_budget", "target", "max_cpu_s", "max_gpu_s", "max_llm_tokens"):
        if getattr(args, flag):
            forwarded += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.nats_url:
        forwarded += ["--nats-url", args.nats_url]
    for name in (f"{flag}_{key}" for flag, _, _ in LLM_ROLES for key in ("base_url", "model", "api_key")):
        if getattr(args, name):
            forwarded += [f"--{name.replace('_', '-')}", getattr(args, name)]
    if args.json:
        forwarded.append("--json")
    if args.require_llm:
        forwarded.append("--require-llm")
    return main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
