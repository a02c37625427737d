"""The LLM layer with the real `openai` client over HTTP to a scripted OpenAI-compatible server."""

from __future__ import annotations

import msgspec
import pytest

from shared.runtime.config import load_config
from shared.llm.client import LLMClient, accepted_mode, ask_json, llm_settings
from shared.llm.usage import usage_by_role
from tests.llm_server import Reply, ScriptedLLM


class Answer(msgspec.Struct):
    action: str
    value: int


@pytest.fixture
def server():
    with ScriptedLLM() as s:
        yield s


def client_for(server: ScriptedLLM, **over) -> LLMClient:
    env = {"RESEARCHER_LLM__PLANNING__BASE_URL": server.url, "RESEARCHER_LLM__PLANNING__MODEL": "planner",
           "RESEARCHER_LLM__PLANNING__TIMEOUT_S": "2", "RESEARCHER_LLM__PLANNING__MAX_RETRIES": "2"}
    env.update({f"RESEARCHER_LLM__PLANNING__{k.upper()}": str(v) for k, v in over.items()})
    settings = llm_settings(load_config(path="/dev/null", environ=env), "planning")
    assert settings is not None
    return LLMClient(settings)


MESSAGES = [{"role": "system", "content": "answer in JSON"}, {"role": "user", "content": "go"}]


async def test_a_reply_is_decoded_and_its_tokens_and_latency_recorded(server):
    server.script("planner", {"action": "iterate", "value": 3})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value == Answer(action="iterate", value=3)
    [call] = answer.calls
    assert call.outcome == "ok" and call.model == "planner" and call.role == "planning"
    assert call.tokens_in == 4 and call.tokens_out == 4 and call.latency_s > 0
    assert call.messages == MESSAGES and '"value": 3' in call.reply
    # the reply's JSON schema is asked for (generated from the type that decodes it), with the cap of a plan
    schema = {"title": "Answer", "type": "object", "properties": {"action": {"type": "string"}, "value": {"type": "integer"}},
              "required": ["action", "value"]}
    assert server.seen("planner")[0].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Answer", "schema": schema, "strict": False}}
    assert server.seen("planner")[0].body["max_tokens"] == 1024 and call.response_format == "json_schema"


async def test_a_server_refusing_json_schema_gets_json_object_with_the_schema_and_it_is_remembered(server):
    server.refuse("json_schema", status=422, message="Input should be 'text' or 'json_object'")
    server.script("planner", {"action": "iterate", "value": 1}, {"action": "stop", "value": 2})
    client = client_for(server)
    first = await ask_json(client, MESSAGES, Answer, "propose")
    assert first.value == Answer(action="iterate", value=1)
    assert [(c.outcome, c.response_format) for c in first.calls] == [("format_refused", "json_schema"), ("ok", "json_object")]
    assert "refused response_format json_schema: HTTP 422" in first.calls[0].error and "json_object" in first.calls[0].error
    asked = server.seen("planner")[1].body["response_format"]
    assert asked["type"] == "json_object" and asked["schema"]["title"] == "Answer"  # where llama-cpp-python reads it
    # the endpoint's mode is kept: the next request (another client of it too) goes straight to json_object
    second = await ask_json(client_for(server, model="planner"), MESSAGES, Answer, "decide")
    assert [c.response_format for c in second.calls] == ["json_object"] and len(server.requests) == 3
    assert accepted_mode(server.url) == "json_object"


async def test_a_server_refusing_response_format_altogether_is_asked_in_plain_text(server):
    server.refuse("json_schema", "json_object", status=400, message="Unrecognized request argument: response_format")
    server.script("planner", 'Sure! {"action": "iterate", "value": 5}')
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value == Answer(action="iterate", value=5)
    assert [(c.outcome, c.response_format) for c in answer.calls] == [
        ("format_refused", "json_schema"), ("format_refused", "json_object"), ("ok", "text")]
    assert "response_format" not in server.requests[-1].body
    assert accepted_mode(server.url) == "text"


async def test_a_server_refusing_every_request_is_no_format_refusal(server):
    server.fallback("planner", lambda body: Reply(status=400, content="the prompt exceeds the context window"))
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value is None and "context window" in answer.error
    assert [c.outcome for c in answer.calls] == ["http_400"] * 3  # each mode tried, none blamed
    assert accepted_mode(server.url) is None


async def test_json_mode_false_asks_in_plain_text(server):
    server.script("planner", {"action": "stop", "value": 0})
    answer = await ask_json(client_for(server, json_mode="false"), MESSAGES, Answer, "propose")
    assert answer.value is not None and "response_format" not in server.requests[0].body


async def test_a_reply_cut_off_at_its_cap_is_malformed_at_once_and_asked_again_shorter(server):
    # a complete object inside a cut-off reply is not taken: the reply did not end
    server.script("planner", Reply(content='{"action": "iterate", "value": 1} {"action": "iterate", "value":',
                                   finish_reason="length"), {"action": "stop", "value": 2})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "code")
    assert answer.value == Answer(action="stop", value=2)
    assert [c.outcome for c in answer.calls] == ["malformed", "ok"]
    assert "cut off at the 3,072-token cap for code replies" in answer.calls[0].error
    assert server.requests[0].body["max_tokens"] == 3072 and "shorter" in server.requests[1].messages[-1]["content"]


async def test_a_step_whose_time_budget_is_spent_falls_back_with_that_reason(server):
    server.script("planner", '{"action": "iterate"}')  # malformed at once (no value): a repair is asked for
    server.fallback("planner", lambda body: Reply(content='{"action": "iterate", "value": 1}', delay_s=3))
    client = client_for(server, timeout_s=30, max_retries=2)
    client.settings.step_seconds["plan"] = 1.5
    answer = await ask_json(client, MESSAGES, Answer, "propose", repairs=3)
    assert answer.value is None
    assert [c.outcome for c in answer.calls] == ["malformed", "timeout"]  # the repair cut short, not retried
    assert "within what was left of the propose step's 1.5 s for LLM calls" in answer.error
    assert len(server.requests) == 2
    # a step with less than a second left asks for no repair, and says why
    server.script("planner", Reply(content='{"action": "iterate"}', delay_s=0.6))
    client.settings.step_seconds["plan"] = 1.2
    late = await ask_json(client, MESSAGES, Answer, "propose", repairs=3)
    assert [c.outcome for c in late.calls] == ["malformed"] and "no time left for a repair" in late.error
    await client.close()


async def test_fenced_json_with_prose_is_accepted(server):
    server.script("planner", Reply(content='Here it is:\n```json\n{"action": "stop", "value": 1}\n```'))
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value == Answer(action="stop", value=1)


async def test_malformed_json_is_sent_back_once_for_a_repair(server):
    server.script("planner", '{"action": "iterate", "value": ', {"action": "iterate", "value": 7})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value == Answer(action="iterate", value=7)
    assert [c.outcome for c in answer.calls] == ["malformed", "ok"]
    assert "not one valid JSON object" in answer.calls[0].error
    repair = server.seen("planner")[1].messages
    # sampled warmer than the first try (0.2): a small model would repeat its reply word for word
    assert [s.body["temperature"] for s in server.seen("planner")] == [0.2, 0.7]
    assert repair[-2] == {"role": "assistant", "content": '{"action": "iterate", "value": '}
    assert "could not be used" in repair[-1]["content"] and "not one valid JSON object" in repair[-1]["content"]


async def test_a_reply_failing_twice_gives_up_with_the_specific_error(server):
    server.script("planner", {"action": "iterate"}, {"action": "iterate", "value": "x"}, {"action": "iterate", "value": 1})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value is None and len(answer.calls) == 2  # one repair, not more
    assert "$.value" in answer.error and "Expected `int`" in answer.error
    assert len(server.seen("planner")) == 2


async def test_the_check_function_rejects_a_decodable_reply(server):
    server.script("planner", {"action": "fly", "value": 1}, {"action": "stop", "value": 1})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "decide",
                            check=lambda a: None if a.action in ("stop", "iterate") else f"unknown action {a.action!r}")
    assert answer.value.action == "stop"
    assert "unknown action 'fly'" in server.seen("planner")[1].messages[-1]["content"]


async def test_429s_and_500s_are_retried_with_backoff_then_succeed(server):
    server.script("planner", Reply(status=429, content="slow down", headers={"retry-after": "0"}),
                  Reply(status=500, content="overloaded"), {"action": "iterate", "value": 2})
    answer = await ask_json(client_for(server), MESSAGES, Answer, "propose")
    assert answer.value == Answer(action="iterate", value=2)
    assert [s.status for s in server.seen("planner")] == [429, 500, 200]
    assert len(answer.calls) == 1  # one logical call, its retries inside the client


async def test_persistent_500s_fail_with_the_status_and_the_server_message(server):
    server.fallback("planner", lambda body: Reply(status=500, content="model crashed"))
    answer = await ask_json(client_for(server, max_retries=1), MESSAGES, Answer, "propose")
    assert answer.value is None
    assert answer.calls[0].outcome == "http_500" and "model crashed" in answer.error
    assert len(server.seen("planner")) == 2  # the first try and one retry


async def test_a_429_past_the_retries_is_reported_as_such(server):
    server.fallback("planner", lambda body: Reply(status=429, content="quota exceeded", headers={"retry-after": "0"}))
    answer = await ask_json(client_for(server, max_retries=0), MESSAGES, Answer, "propose")
    assert answer.calls[0].outcome == "http_429" and "quota exceeded" in answer.error


async def test_a_server_slower_than_the_timeout_times_out(server):
    server.fallback("planner", lambda body: Reply(content='{"action": "stop", "value": 1}', delay_s=3))
    answer = await ask_json(client_for(server, timeout_s=0.5, max_retries=1), MESSAGES, Answer, "propose")
    assert answer.value is None and answer.calls[0].outcome == "timeout"
    assert "no reply within 0.5 s" in answer.error


async def test_an_unreachable_endpoint_is_reported():
    with ScriptedLLM() as gone:
        url = gone.url
    settings = llm_settings(load_config(path="/dev/null", environ={
        "RESEARCHER_LLM__PLANNING__BASE_URL": url, "RESEARCHER_LLM__PLANNING__MODEL": "m",
        "RESEARCHER_LLM__PLANNING__MAX_RETRIES": "0"}), "planning")
    answer = await ask_json(LLMClient(settings), MESSAGES, Answer, "propose")
    assert answer.calls[0].outcome == "unreachable" and url in answer.error


async def test_a_refusal_and_an_empty_reply_are_outcomes_not_crashes(server):
    server.script("planner", Reply(content=None, refusal="I cannot help with that"), Reply(content="   "))
    client = client_for(server)
    refused = await ask_json(client, MESSAGES, Answer, "propose")
    assert refused.calls[0].outcome == "refused" and "I cannot help" in refused.error
    empty = await ask_json(client, MESSAGES, Answer, "propose")
    assert empty.calls[0].outcome == "empty"


async def test_a_spent_token_budget_makes_no_request(server):
    client = client_for(server, token_budget=100)
    answer = await ask_json(client, MESSAGES, Answer, "propose", tokens_used=100)
    assert answer.calls[0].outcome == "budget" and "token budget of 100" in answer.error
    assert server.requests == []


async def test_the_api_key_comes_from_the_named_variable_and_is_sent_as_a_bearer_token(server, monkeypatch):
    monkeypatch.setenv("MY_LAB_KEY", "sk-test-123")
    server.script("planner", {"action": "stop", "value": 0})
    client = client_for(server, api_key_env="MY_LAB_KEY")
    await ask_json(client, MESSAGES, Answer, "propose")
    assert server.seen("planner")[0].authorization == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(client.settings)  # the settings name the variable, never hold the key


def test_usage_is_totalled_per_role(server):
    from shared.messaging.messages import LLMCall
    calls = [LLMCall(role="planning", purpose="propose", model="m", outcome="ok", tokens_in=10, tokens_out=5, latency_s=0.5),
             LLMCall(role="planning", purpose="decide", model="m", outcome="timeout", latency_s=2.0),
             LLMCall(role="tools", purpose="code", model="c", outcome="ok", tokens_in=100, tokens_out=50, latency_s=1.0)]
    assert usage_by_role(calls) == {
        "planning": {"calls": 2, "failed": 1, "tokens_in": 10, "tokens_out": 5, "latency_s": 2.5},
        "tools": {"calls": 1, "failed": 0, "tokens_in": 100, "tokens_out": 50, "latency_s": 1.0}}
