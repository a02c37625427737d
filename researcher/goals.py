"""A goal as the CLI takes it: its flags (defaults from Goal, ranges from GOAL_LIMITS), the LLM
flags of an embedded stack, the checks made before anything starts, and the submission a
planner answers. Light imports only (tests/unit/test_cli_imports.py)."""

from __future__ import annotations

import argparse
import copy
import re
import time
import uuid
from typing import get_args

from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

from shared.data.catalog import check_goal, known_datasets
from shared.data.files import LOCAL_HINT
from shared.errors import MessageError
from shared.messaging import subjects
from shared.messaging.bus import decode, encode, publish_to_stream
from shared.messaging.messages import GOAL_LIMITS, SCALAR_METRICS, ErrorReply, Goal, GoalAnswer, GoalStatistic
from shared.messaging.limits import cap_problems
from shared.runtime.config import Config, PlannerConfig


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default (not the absent ones: None, or off for a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if (not action.help and action.option_strings and action.default is not None and action.default is not False
                and action.default is not argparse.SUPPRESS):
            action = copy.copy(action)  # an option without help still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def goal_args(p: argparse.ArgumentParser) -> None:
    """A goal's flags; their defaults are Goal's own, their ranges GOAL_LIMITS."""
    d, limits = Goal(run_id="-", goal="-"), GOAL_LIMITS
    p.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(known_datasets())}")
    p.add_argument("--goal-metric", choices=SCALAR_METRICS, default=d.goal_metric, metavar="METRIC",
                   help="the validation metric the goal is judged and candidates are selected on, one of: "
                        f"{', '.join(SCALAR_METRICS)} (val_loss: lower is better, every other: higher)")
    p.add_argument("--target", type=float, default=None,
                   help="the goal metric's target: a fraction in (0, 1], or above 0 for val_loss "
                        "(default: --target-accuracy's value)")
    p.add_argument("--target-accuracy", type=float, default=d.target_accuracy,
                   help="a fraction in (0, 1]; the target of --goal-metric when --target is not given")
    p.add_argument("--max-iterations", type=int, default=d.max_iterations,
                   help="the compute budget in full evaluations: N x num-seeds x max-epochs seed-epochs, "
                        "%d to %d" % limits["max_iterations"])
    p.add_argument("--epoch-budget", type=int, default=d.epoch_budget,
                   help="the compute budget in seed-epochs (one seed trained one epoch), instead of "
                        "--max-iterations' (default: from --max-iterations)")
    p.add_argument("--parallel", type=int, default=d.parallel,
                   help="candidates in flight at once, %d to %d (default: the stack's planner.parallel, %d)"
                        % (*limits["parallel"], PlannerConfig().parallel))
    p.add_argument("--num-seeds", type=int, default=d.num_seeds, help="%d to %d" % limits["num_seeds"])
    p.add_argument("--patience", type=int, default=d.patience,
                   help="full evaluations without a better best before stopping, %d to %d" % limits["patience"])
    p.add_argument("--goal-statistic", choices=get_args(GoalStatistic), default=d.goal_statistic,
                   help="judge the goal on the mean over seeds or the cautious end of its 95%% interval "
                        "(the lower bound; the upper for val_loss)")
    p.add_argument("--subset-size", type=int, default=d.subset_size, help="samples drawn from the data set, at least %d (default: all of them)" % limits["subset_size"][0])
    p.add_argument("--max-epochs", type=int, default=d.max_epochs, help="%d to %d" % limits["max_epochs"])
    p.add_argument("--max-cpu-s", type=float, default=None,
                   help="end the run (budget_spent) once its training containers have used this many CPU seconds, "
                        "as their cgroups count them (default: no limit)")
    p.add_argument("--max-gpu-s", type=float, default=None,
                   help="likewise for GPU seconds (default: no limit)")
    p.add_argument("--max-llm-tokens", type=int, default=None,
                   help="end the run (budget_spent) once its LLM calls have used this many tokens, in and out, "
                        "as the servers report them (default: no limit)")
    p.add_argument("--require-llm", action="store_true", help="fail the run instead of falling back to the built-in "
                   "search or assembler when a configured LLM cannot be reached or answers nothing usable")


LLM_ROLES = (("llm", "PLANNING", "planning"), ("tools_llm", "TOOLS", "tools"))


def llm_args(p: argparse.ArgumentParser) -> None:
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
    for flag, role, _ in LLM_ROLES:
        base_url, model, key = (getattr(args, f"{flag}_{k}", None) for k in ("base_url", "model", "api_key"))
        if base_url:
            env[f"RESEARCHER_LLM__{role}__BASE_URL"] = base_url
        if model:
            env[f"RESEARCHER_LLM__{role}__MODEL"] = model
        if key:
            env[f"RESEARCHER_{role}_LLM_API_KEY"] = key
            env[f"RESEARCHER_LLM__{role}__API_KEY_ENV"] = f"RESEARCHER_{role}_LLM_API_KEY"
    return env


def make_goal(args: argparse.Namespace) -> Goal:
    return Goal(run_id=uuid.uuid4().hex[:16], goal=args.goal, dataset=args.dataset,
                target_accuracy=args.target_accuracy, max_iterations=args.max_iterations,
                num_seeds=args.num_seeds, patience=args.patience, goal_statistic=args.goal_statistic,
                subset_size=args.subset_size, max_epochs=args.max_epochs, submitted_at=time.time(),
                require_llm=args.require_llm, parallel=args.parallel, epoch_budget=args.epoch_budget,
                goal_metric=args.goal_metric, target=args.target, max_cpu_s=args.max_cpu_s, max_gpu_s=args.max_gpu_s,
                max_llm_tokens=args.max_llm_tokens)


class GoalRejected(Exception):
    """The goal has problems; the message names each field (and its flag) and the allowed range."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the goal was rejected:\n" + "\n".join(f"  {flagged(p)}" for p in problems))


# a field named in a problem's text; not a setting's key (limits.max_epochs)
_FIELD = re.compile(r"(?<![.\w])(" + "|".join(f for f in Goal.__struct_fields__ if "_" in f) + r")\b")


def flagged(problem: str) -> str:
    """A goal problem in what a CLI user types: "num_seeds must be ..." -> "--num-seeds: must be
    ...", and a field named inside the text ("needs num_seeds >= 2") as its flag too."""
    field = problem.split(" ", 1)[0].rstrip(":")
    if field not in Goal.__struct_fields__ or field == "goal":
        return problem
    said = problem[len(field):].lstrip(": ")
    return f"--{field.replace('_', '-')}: {_FIELD.sub(lambda m: '--' + m.group(1).replace('_', '-'), said)}"


def check_locally(goal: Goal, data_dir: str | None = None, config: Config | None = None) -> None:
    """What the CLI can check before any stack is touched: every field's range and the data set's
    name; with an embedded stack's `data_dir` (this machine's data.dir) its files, and with its
    `config` its caps (limits), too."""
    problems = check_goal(goal, data_dir, LOCAL_HINT)
    if config is not None:
        problems += cap_problems(goal, config.limits, config.planner.max_epochs)
    if problems:
        raise GoalRejected(problems)


async def submit_goal(nc, goal: Goal, timeout_s: float = 10.0) -> str:
    """Submit as a request a planner answers; -> how it was taken. A rejection raises GoalRejected.
    With no planner answering (a stack still starting, say), the goal is queued on the durable
    GOALS stream instead, where the next planner checks it and records a rejection as a failed run."""
    try:
        msg = await nc.request(subjects.GOAL_SUBMIT_SUBJECT, encode(goal), timeout=timeout_s)
    except (NoRespondersError, NatsTimeoutError):
        try:
            await publish_to_stream(nc.jetstream(), subjects.GOALS_SUBJECT, encode(goal),
                                    headers={"Nats-Msg-Id": goal.run_id})
        except NoStreamResponseError:  # no GOALS stream: only a planner declares it, and none has started yet
            raise GoalRejected(["no planner has started on this stack yet (it declares the goal queue when it "
                                "does): start the stack's planner (make up), then submit again"]) from None
        return "queued (no planner answered yet; it is checked when one starts)"
    try:
        answer = decode(msg.data, GoalAnswer, subjects.GOAL_SUBMIT_SUBJECT)
    except MessageError:
        raise GoalRejected([decode(msg.data, ErrorReply, subjects.GOAL_SUBMIT_SUBJECT).error]) from None
    if not answer.accepted:
        raise GoalRejected(answer.problems)
    return "accepted"
