"""LLM trouble is never silent: an endpoint that cannot be reached or answers nothing usable is
said up front (the CLI's check, the run's llm_check events), the report counts what came from the
LLMs and what fell back and why, and --require-llm turns a fallback into a failed run. The real
`openai` client over HTTP to servers started here, a real nats-server and the real services."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from researcher.goals import submit_goal
from researcher.stack import LocalStack, free_port
from shared.llm.prompts import render
from shared.messaging import subjects
from shared.messaging.bus import connect, decode
from shared.messaging.messages import Event, Goal
from shared.registry.report import format_report, load_records
from shared.registry.store import Registry
from tests.llm_server import NotAnAPI, Reply, ScriptedLLM

PLANNER, CODER = "planner-model", "coder-model"
# the services' LLM calls: no retries, so a dead endpoint costs no backoff
NO_RETRIES = {"RESEARCHER_LLM__PLANNING__MAX_RETRIES": "0", "RESEARCHER_LLM__TOOLS__MAX_RETRIES": "0"}

pytestmark = [pytest.mark.usefixtures("sequential_search")]


def cli(*args: str, home, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI with an embedded stack's home of the test's own (a home has one owner at a time)."""
    return subprocess.run([sys.executable, "-m", "researcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RESEARCHER_HOME": str(home), **(env or {})})


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # a port nothing listens on


# ---- no Docker: these end before any model is built ----

def test_require_llm_without_an_llm_is_refused_before_a_stack_starts(tmp_path):
    t0 = time.monotonic()
    proc = cli("run", "digits", "--require-llm", home=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--require-llm: this stack has no LLM configured to require" in proc.stderr
    assert "--llm-base-url and --llm-model" in proc.stderr and "starting an embedded stack" not in proc.stderr
    assert time.monotonic() - t0 < 30


def test_require_llm_with_an_unreachable_endpoint_fails_the_command_within_seconds(tmp_path):
    url = closed_url()
    t0 = time.monotonic()
    proc = cli("run", "digits", "--require-llm", "--llm-base-url", url, "--llm-model", PLANNER, home=tmp_path,
               timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"planning LLM {PLANNER} at {url}: unreachable: cannot reach {url}" in proc.stderr
    assert "the LLM is required (--require-llm) and the planning LLM failed its check (unreachable" in proc.stderr
    assert "starting an embedded stack" not in proc.stderr
    assert time.monotonic() - t0 < 30


@pytest.fixture(scope="module")
def unreachable_planner(tmp_path_factory):
    """A planner alone whose planning LLM is a closed port (the tools role inherits it)."""
    env = {"RESEARCHER_LLM__PLANNING__BASE_URL": closed_url(), "RESEARCHER_LLM__PLANNING__MODEL": PLANNER, **NO_RETRIES}
    with LocalStack(log_dir=tmp_path_factory.mktemp("trouble") / "logs", services=("planner",), env=env) as stack:
        yield stack, env["RESEARCHER_LLM__PLANNING__BASE_URL"]


async def test_require_llm_fails_the_run_at_its_start_naming_the_failure(unreachable_planner):
    stack, url = unreachable_planner
    nc = await connect(stack.url, "test", role="admin")
    events: list[Event] = []
    finished = asyncio.Event()
    try:
        goal = Goal(run_id=f"req-{uuid.uuid4().hex[:8]}", goal="digits", require_llm=True, max_iterations=2)

        async def on_event(msg) -> None:
            events.append(decode(msg.data, Event, msg.subject))
            if events[-1].kind == "run_finished":
                finished.set()

        sub = await nc.subscribe(subjects.events_subject(goal.run_id), cb=on_event)
        assert await submit_goal(nc, goal) == "accepted"
        await asyncio.wait_for(finished.wait(), timeout=30)
        run, iterations = await load_records(await Registry.open(nc.jetstream()), goal.run_id)
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert run.status == "failed" and run.current_iteration == 0 and iterations == []
    assert run.error.startswith("the LLM is required (--require-llm) and the planning LLM planner-model at")
    assert f"cannot reach {url}" in run.error and run.error.endswith("the run fails instead of falling back")
    assert run.finished_at - run.created_at < 20
    assert [(c.role, c.outcome) for c in run.llm_check] == [("planning", "unreachable"), ("tools", "unreachable")]
    kinds = [e.kind for e in events]
    assert "proposed" not in kinds and kinds[-1] == "run_finished" and kinds.count("llm_check") == 2
    assert f"cannot reach {url}" in next(e for e in events if e.kind == "llm_check").message
    assert f"status: failed (the LLM is required (--require-llm)" in format_report(run, iterations)


def test_require_llm_on_a_stack_without_an_llm_is_rejected_at_submission(tmp_path):
    with LocalStack(log_dir=tmp_path / "logs", services=("planner",)) as stack:
        proc = cli("submit", "digits", "--require-llm", "--nats-url", stack.url, home=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--require-llm: this stack has no LLM configured to require" in proc.stderr
    assert "llm.planning.base_url and llm.planning.model" in proc.stderr


# ---- whole runs: the sandbox and the evaluator in containers ----

def _events_before_the_first_proposal(stderr: str) -> str:
    return stderr.split("candidate 1: the built-in search proposed")[0]


@pytest.mark.docker
@pytest.mark.slow
def test_an_unreachable_and_a_garbage_endpoint_are_said_up_front_and_their_fallbacks_counted(docker_engine, tmp_path):
    planning_url = closed_url()
    with NotAnAPI() as garbage:
        proc = cli("run", "digits", "--dataset", "digits", "--max-iterations", "1", "--num-seeds", "1",
                   "--max-epochs", "1", "--subset-size", "600", "--json", "--log-dir", str(tmp_path / "logs"),
                   "--llm-base-url", planning_url, "--llm-model", PLANNER,
                   "--tools-llm-base-url", garbage.url, "--tools-llm-model", CODER, home=tmp_path / "home", env=NO_RETRIES)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    # the CLI's own check, then the run's llm_check events, all before the first proposal
    up_front = _events_before_the_first_proposal(proc.stderr)
    assert up_front.count(f"planning LLM {PLANNER} at {planning_url}: unreachable: cannot reach {planning_url}") == 2
    assert up_front.count(f"tools LLM {CODER} at {garbage.url}: bad_response: GET {garbage.url}/models answered "
                          "'<html><body><h1>It works!") == 2
    assert "Where it fails, the built-in search proposes instead" in up_front  # no --require-llm: it falls back
    assert "Where it fails, the deterministic assembler writes the code" in up_front
    sources = report["llm_sources"]
    assert [(c["role"], c["outcome"]) for c in sources["check"]] == [("planning", "unreachable"), ("tools", "bad_response")]
    assert sources["proposals"] == {"llm": 0, "builtin": 1, "fell_back": 1, "fallbacks": [
        {"iteration": 1, "reason": f"unreachable: cannot reach {planning_url}: All connection attempts failed"}]}
    code = sources["code"]
    assert (code["llm"], code["deterministic"], code["fell_back"], code["llm_generations"]) == (0, 1, 1, 1)
    assert code["fallbacks"][0]["reason"].startswith("bad_response: the answer is not a chat completion but "
                                                     "'<html><body><h1>It works!")
    assert report["status"] == "max_iterations" and report["iterations"][0]["evaluation"]["aggregated"]["val_accuracy"]["n"] == 1


def _code_for(class_name: str, hidden: int) -> str:
    return (f"import torch\nfrom torch import nn\n\n\nclass {class_name}(nn.Module):\n    def __init__(self):\n"
            f"        super().__init__()\n        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, {hidden}), nn.ReLU(), "
            f"nn.Linear({hidden}, 10))\n\n    def forward(self, x):\n        return self.net(x)\n")


NETS = [{"class_name": name, "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": hidden}, {"type": "ReLU"},
                                        {"type": "Linear", "out_features": 10}],
         "optimizer": "adam", "lr": 0.01, "epochs": 1, "batch_size": 32}
        for name, hidden in (("FirstMLP", 32), ("SecondMLP", 64))]


def _coder(body: dict) -> Reply:
    """Code for the class the request names, a reading for a summary request."""
    messages = body["messages"]
    if messages[0]["content"] != render("code_system"):
        return Reply(content=json.dumps({"architecture": "an MLP", "strengths": [], "weaknesses": []}))
    name = next(n["class_name"] for n in NETS if n["class_name"] in messages[1]["content"])
    return Reply(content=json.dumps({"python": _code_for(name, 32 if name == "FirstMLP" else 64)}))


@pytest.mark.docker
@pytest.mark.slow
def test_a_working_llm_is_counted_with_no_fallbacks(docker_engine, tmp_path):
    with ScriptedLLM() as llm:
        llm.script(PLANNER, {"action": "iterate", "reasoning": "a baseline", "model_config": NETS[0]},
                   {"action": "iterate", "reasoning": "wider", "model_config": NETS[1]})
        llm.fallback(CODER, _coder)
        proc = cli("run", "digits", "--dataset", "digits", "--max-iterations", "2", "--num-seeds", "1",
                   "--target-accuracy", "0.999", "--max-epochs", "1", "--subset-size", "600", "--json",
                   "--log-dir", str(tmp_path / "logs"), "--require-llm",
                   "--llm-base-url", llm.url, "--llm-model", PLANNER, "--tools-llm-model", CODER, home=tmp_path / "home", env=NO_RETRIES)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "max_iterations", report["error"]
    assert f"planning LLM {PLANNER} at {llm.url}: answers (its model list has {PLANNER}" in proc.stderr
    sources = report["llm_sources"]
    assert [(c["role"], c["outcome"]) for c in sources["check"]] == [("planning", "ok"), ("tools", "ok")]
    assert sources["proposals"] == {"llm": 2, "builtin": 0, "fell_back": 0, "fallbacks": []}
    assert sources["code"] == {"llm": 2, "deterministic": 0, "fell_back": 0, "llm_generations": 2, "fallbacks": []}
    assert [it["class_name"] for it in report["iterations"]] == ["FirstMLP", "SecondMLP"]
