"""A whole goal against a real local model: SmolLM2-135M-Instruct served by llama-cpp-python on
loopback (`make local-llm`), as both the planning and the tools LLM. Not in `make test` (the
server takes about ten minutes to build); `make test-local-llm` runs it, and it is skipped where
the server is not built and cannot be started.

A 135M model is weak: what is checked is not that it helps, but that every LLM step either used
its reply or fell back with a reason, in the report and the run's events, and that the run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.local_llm, pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-llm.sh"
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def local_llm() -> str:
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
    if status.returncode == 0:
        return status.stdout.strip()
    built = list((ROOT / "build" / "local-llm" / "wheels").glob("llama_cpp_python-*.whl"))
    if not built and not os.environ.get("LOCAL_LLM_BUILD"):
        pytest.skip("the local model server is not built here: `make local-llm` builds it once (about ten minutes "
                    "on 2 cores), or set LOCAL_LLM_BUILD=1 to let this test build it")
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=1800)
    if started.returncode != 0:
        pytest.skip(f"the local model server could not be built or started: {started.stderr[-1500:]}")
    return started.stdout.strip().splitlines()[-1]


def test_a_whole_goal_with_the_local_model_as_both_llms(local_llm, docker_engine, tmp_path):
    env = {**os.environ,
           # a small model on 2 cores writes 10 to 40 tokens a second: steps bounded to keep the test short
           "RESEARCHER_LLM__STEP_SECONDS__PLAN": "90", "RESEARCHER_LLM__STEP_SECONDS__CODE": "120",
           "RESEARCHER_LLM__STEP_SECONDS__SUMMARY": "60", "RESEARCHER_LLM__CODE_ATTEMPTS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "researcher.cli", "run", "a small network for the wine data reaching 95% accuracy",
         "--dataset", "wine", "--target-accuracy", "0.99", "--max-iterations", "2", "--num-seeds", "2",
         "--max-epochs", "4", "--json", "--log-dir", str(tmp_path / "logs"),
         "--llm-base-url", local_llm, "--llm-model", MODEL, "--tools-llm-model", MODEL],
        capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    kept = ROOT / "build" / "test-artifacts" / "local-llm"  # what the model did, to read afterwards
    kept.mkdir(parents=True, exist_ok=True)
    (kept / "report.json").write_text(proc.stdout)
    (kept / "events.txt").write_text(proc.stderr)
    assert report["status"] in ("goal_achieved", "max_iterations", "no_progress", "stopped"), report.get("reason")
    sources = report["llm_sources"]
    assert [c["outcome"] for c in sources["check"]] == ["ok", "ok"]  # the start's check of both roles
    iterations = report["iterations"]
    assert iterations

    planning = [c for it in iterations for c in it["llm_calls"] if c["role"] == "planning"]
    tools = [c for it in iterations for c in it["llm_calls"] if c["role"] == "tools"]
    assert planning and tools, "both LLMs were asked"
    # every call was answered in the mode this server takes, after its one refusal of json_schema
    assert {c["response_format"] for c in planning + tools if c["outcome"] != "format_refused"} == {"json_object"}
    assert sources["formats"]["planning"]["refused"].keys() <= {"json_schema"}

    # proposals: the LLM's, or the built-in search's with the LLM's failure as the reason
    fallbacks = {f["iteration"]: f["reason"] for f in sources["proposals"]["fallbacks"]}
    for it in iterations:
        if it["proposer"] != "llm":
            assert it["iteration"] in fallbacks or it["iteration"] > 1, it["iteration"]
    assert all(reason and ":" in reason for reason in fallbacks.values())
    # code: the tools LLM's (validated in the sandbox), or the deterministic assembler's with a reason
    code_fallbacks = {f["iteration"]: f["reason"] for f in sources["code"]["fallbacks"]}
    for it in iterations:
        if it.get("code_artifact") is None:
            continue
        assert it["assembler"] == "llm" or it["iteration"] in code_fallbacks, it["iteration"]
        if it["assembler"] == "llm":
            assert it["validation"]["ok"] is True
    # summaries: a reading, or why there is none
    for it in iterations:
        summary = it.get("summary")
        if summary:
            assert summary["narrative"] or summary["narrative_error"], it["iteration"]
    # no call ran past its step: a reply, a malformed one, or a failure that names its cause
    for call in planning + tools:
        assert call["outcome"] == "ok" or call["error"], call
    # and each fallback was said in the run's events as it happened
    if fallbacks:
        assert "the built-in search proposes instead" in proc.stderr
    if code_fallbacks:
        assert "deterministic assembler" in proc.stderr
