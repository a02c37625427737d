"""The report's count of what the LLMs wrote and what fell back, read from the LLMCall records."""

from shared.llm.usage import format_sources, llm_sources
from shared.messaging.messages import Goal, LLMCall
from shared.registry.records import CodeAttempt, IterationRecord, RunRecord

RUN = RunRecord(run_id="r", goal=Goal(run_id="r", goal="g"))


def call(role: str, purpose: str, outcome: str = "ok", error: str | None = None) -> LLMCall:
    return LLMCall(role=role, purpose=purpose, model="m", outcome=outcome, error=error)


def it(n: int, proposer: str = "builtin", assembler: str = "deterministic", calls=(), attempts=()) -> IterationRecord:
    return IterationRecord(run_id="r", iteration=n, state="decided", proposer=proposer, assembler=assembler,
                           code_artifact=f"r/it{n}/model_code.py", llm_calls=list(calls), code_attempts=list(attempts))


def test_a_run_without_llms_counts_nothing_and_shows_no_lines():
    sources = llm_sources(RUN, [it(1), it(2)])
    assert sources["proposals"] == {"llm": 0, "builtin": 2, "fell_back": 0, "fallbacks": []}
    assert sources["code"]["deterministic"] == 2 and sources["code"]["fell_back"] == 0
    assert format_sources(sources) == []


def test_each_fallback_is_counted_with_the_failed_call_that_caused_it():
    iterations = [
        # the first proposal failed; the tools LLM's code was used
        it(1, assembler="llm", calls=[call("planning", "propose", "unreachable", "cannot reach http://x/v1"),
                                      call("tools", "code"), call("planning", "decide", "malformed", "not JSON")]),
        # the decision after 1 failed, so the search proposed 2; the tools LLM answered 500
        it(2, calls=[call("tools", "code", "http_500", "HTTP 500 from http://x/v1: crashed"), call("planning", "decide")]),
        # the decision after 2 chose no config (the LLM's choice, not a fallback); the sandbox
        # rejected every one of the tools LLM's attempts
        it(3, calls=[call("tools", "code"), call("tools", "code")],
           attempts=[CodeAttempt(attempt=1, assembler="llm", code=None, reason="exception", error="exception: boom"),
                     CodeAttempt(attempt=2, assembler="llm", code=None, reason="output_shape", error="output_shape: (2, 5)")]),
        it(4, proposer="llm", assembler="deterministic"),  # no tools call: deterministic by configuration
    ]
    sources = llm_sources(RUN, iterations)
    assert sources["proposals"] == {"llm": 1, "builtin": 3, "fell_back": 2, "fallbacks": [
        {"iteration": 1, "reason": "unreachable: cannot reach http://x/v1"},
        {"iteration": 2, "reason": "malformed: not JSON"}]}
    assert sources["code"] == {"llm": 1, "deterministic": 3, "fell_back": 2, "llm_generations": 4, "fallbacks": [
        {"iteration": 2, "reason": "http_500: HTTP 500 from http://x/v1: crashed"},
        {"iteration": 3, "reason": "the sandbox rejected its 2 attempts (the last: output_shape: (2, 5))"}]}
    lines = format_sources(sources)
    assert "proposals: 1 by the planning LLM, 3 by the built-in search (2 after the LLM failed)" in lines
    assert "  iteration 1: unreachable: cannot reach http://x/v1" in lines
    assert "code: 1 by the tools LLM (4 generations), 3 by the deterministic assembler (2 after the LLM failed)" in lines


def test_the_check_at_the_start_is_reported():
    run = RunRecord(run_id="r", goal=Goal(run_id="r", goal="g"),
                    llm_check=[call("planning", "check", "unreachable", "cannot reach http://x/v1"), call("tools", "check")])
    lines = format_sources(llm_sources(run, []))
    assert lines[:2] == ["LLM check at the start: planning LLM m: unreachable: cannot reach http://x/v1",
                         "LLM check at the start: tools LLM m: ok"]
