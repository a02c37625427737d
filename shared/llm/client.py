"""The two LLM roles over any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp's server, OpenAI).

Every call goes through the `openai` client, which retries connection errors, timeouts, 408, 409,
429 and 5xx with exponential backoff (honouring Retry-After). A failure never raises past this
module: each call comes back as an `LLMCall` record with its outcome, and `ask_json` sends a reply
that does not decode back with the error for a repair, a bounded number of times.

Structured outputs: each request for JSON carries the reply's JSON schema, generated from the
msgspec type that decodes it (`reply_schema`), as `response_format` of type `json_schema`. A
server that refuses that (HTTP 400/415/422/501, or a 500 naming response_format) is asked again with `json_object` (the schema
beside it, where llama-cpp-python's server reads it), then in plain text; the mode an endpoint
took is kept for the rest of the process, and each call records the mode it was made in.

Bounds: each kind of request has its reply cap (`llm.reply_tokens`), and a reply cut off at it is
malformed at once; each step's calls, repairs included, share a wall-clock budget
(`llm.step_seconds`), after which the step falls back.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import msgspec
import openai
import structlog

from shared.runtime.config import Config, resolve_llm
from shared.messaging.messages import LLMCall
from shared.llm.prompts import render

log = structlog.get_logger()
T = TypeVar("T")

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)

# The response formats, most constrained first: a server that refuses one is asked in the next.
MODES = ("json_schema", "json_object", "text")
# The statuses with which servers refuse a request they cannot parse or do not support: the
# response_format is the first suspect. A 500 is the server's trouble (retried by the client),
# unless it names the response_format: llama-cpp-python's server answers a json_schema type so.
_REFUSALS = frozenset({"http_400", "http_415", "http_422", "http_501"})
# What each endpoint (base URL) took: its most constrained mode that was answered.
_accepted: dict[str, str] = {}
# The kind of request each purpose is, for its reply cap and its step's time budget.
KINDS = {"propose": "plan", "decide": "plan", "code": "code", "summary": "summary"}
_ECHO_CHARS = 1500  # of a reply cut off at its cap, what goes back with the repair request
# A repair is sampled at least this warm: at the default 0.2, SmolLM2-135M repeated its rejected
# reply word for word (whether warmer helps much is for `make bench-llm` to say).
REPAIR_TEMPERATURE = 0.7


def _refused(call: LLMCall) -> bool:
    return call.outcome in _REFUSALS or (call.outcome == "http_500" and "response_format" in (call.error or ""))


@dataclass(frozen=True)
class LLMSettings:
    role: str
    base_url: str
    model: str
    api_key_env: str
    timeout_s: float
    max_retries: int
    token_budget: int
    max_reply_tokens: int
    temperature: float
    response_format: str = "json_schema"  # the mode asked for first (MODES)
    reply_tokens: dict[str, int] = field(default_factory=dict)  # per kind of request (KINDS): its cap
    step_seconds: dict[str, float] = field(default_factory=dict)  # per kind: the budget of a step's calls
    schema_beside_json_object: bool = True  # json_object carries the schema too (`make bench-llm` compares without)

    def cap(self, purpose: str) -> int:
        return min(self.max_reply_tokens, self.reply_tokens.get(KINDS.get(purpose, ""), self.max_reply_tokens))

    def step_budget(self, purpose: str) -> float | None:
        return self.step_seconds.get(KINDS.get(purpose, ""))


def llm_settings(config: Config, role: str) -> LLMSettings | None:
    """The role's endpoint, or None when no LLM is configured for it (the built-in step runs)."""
    values = resolve_llm(config.llm, role)
    if not values.pop("enabled") or not values["base_url"]:
        return None
    json_mode = values.pop("json_mode")
    values["response_format"] = values["response_format"] or ("text" if json_mode is False else "json_schema")
    return LLMSettings(role=role, **values, reply_tokens=msgspec.structs.asdict(config.llm.reply_tokens),
                       step_seconds=msgspec.structs.asdict(config.llm.step_seconds))


def reply_schema(type_: Any) -> dict[str, Any]:
    """The JSON schema of a reply type, as msgspec generates it from the type that decodes the
    reply, with the type itself at the root (response_format wants an object schema there, not a
    $ref) and the definitions it uses beside it."""
    schema = msgspec.json.schema(type_)
    defs = schema.pop("$defs", {})
    ref = schema.get("$ref", "")
    if not ref.startswith("#/$defs/"):
        return {**schema, **({"$defs": defs} if defs else {})}
    name = ref.rsplit("/", 1)[-1]
    root = dict(defs[name])
    others = {key: value for key, value in defs.items() if key != name}
    return {**root, **({"$defs": others} if others else {})}


def response_format(mode: str, schema: dict[str, Any] | None, name: str, beside: bool = True) -> dict[str, Any] | None:
    """The request's response_format in `mode` (json_object with the schema `beside` it): None for plain text."""
    if mode == "json_schema" and schema is not None:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}
    if mode in ("json_schema", "json_object"):
        return {"type": "json_object", **({"schema": schema} if schema is not None and beside else {})}
    return None


def accepted_mode(base_url: str) -> str | None:
    """The mode `base_url` was last answered in after refusing a more constrained one, if any."""
    return _accepted.get(base_url)


class LLMClient:
    """One role's client. `used` counts the tokens this run has spent on the role, for its budget."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        # Local servers take no key, but the client insists on one: any placeholder will do there.
        key = os.environ.get(settings.api_key_env) or "no-key"
        self._client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=key, timeout=settings.timeout_s,
                                          max_retries=settings.max_retries)

    async def close(self) -> None:
        await self._client.close()

    def mode(self, schema: dict[str, Any] | None) -> str:
        """The mode the next request for a reply of `schema` is made in: the configured one, or
        what the endpoint was found to take when that is less."""
        if schema is None:
            return "text"
        configured = MODES.index(self.settings.response_format)
        return MODES[max(configured, MODES.index(_accepted.get(self.settings.base_url, MODES[0])))]

    async def complete(self, messages: list[dict[str, Any]], purpose: str, tokens_used: int = 0, *,
                       schema: dict[str, Any] | None = None, schema_name: str = "reply",
                       deadline: float | None = None, temperature: float | None = None) -> list[LLMCall]:
        """One chat completion, asked again in the next mode while the server refuses the
        response_format. -> the calls made, the last the answer ("ok" with the reply, or what went
        wrong); those before it, when it was answered, are "format_refused"."""
        mode = self.mode(schema)
        calls: list[LLMCall] = []
        while True:
            call = await self._once(messages, purpose, tokens_used, mode, schema, schema_name, deadline, temperature)
            calls.append(call)
            if not _refused(call) or mode == "text":
                break
            mode = MODES[MODES.index(mode) + 1]
        if len(calls) > 1 and not calls[-1].outcome.startswith("http_"):
            # a lesser mode was answered: the server refused the others, for this endpoint from now on
            _accepted[self.settings.base_url] = mode
            log.warning("llm_response_format_refused", role=self.settings.role, base_url=self.settings.base_url,
                        refused=[c.response_format for c in calls[:-1]], mode=mode, error=calls[0].error)
            calls[:-1] = [msgspec.structs.replace(c, outcome="format_refused",
                                                  error=f"the server refused response_format {c.response_format}: {c.error}")
                          for c in calls[:-1]]
        return calls

    async def _once(self, messages: list[dict[str, Any]], purpose: str, tokens_used: int, mode: str,
                    schema: dict[str, Any] | None, schema_name: str, deadline: float | None,
                    temperature: float | None = None) -> LLMCall:
        s = self.settings
        started = time.time()
        record = dict(role=s.role, purpose=purpose, model=s.model, started_at=started, messages=messages,
                      response_format=mode)
        if tokens_used >= s.token_budget:
            return LLMCall(**record, outcome="budget",
                           error=f"the {s.role} LLM's token budget of {s.token_budget:,} for this run is spent")
        budget = s.step_budget(purpose)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return LLMCall(**record, outcome="over_time",
                           error=f"the {purpose} step's {budget or 0:g} s for LLM calls are spent")
        cap = s.cap(purpose)
        kwargs: dict[str, Any] = {"model": s.model, "messages": messages, "max_tokens": cap,
                                  "temperature": s.temperature if temperature is None else temperature}
        form = response_format(mode, schema, schema_name, s.schema_beside_json_object)
        if form is not None:
            kwargs["response_format"] = form
        if left is not None:
            kwargs["timeout"] = min(s.timeout_s, left)
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(left):  # the client's retries included
                response = await self._client.chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            outcome, error = _failure(exc, s)
            if outcome == "timeout" and left is not None and time.monotonic() - t0 >= left - 0.05:
                error = f"no reply within what was left of the {purpose} step's {budget:g} s for LLM calls"
        except TimeoutError:
            outcome, error = "timeout", f"no reply within what was left of the {purpose} step's {budget:g} s for LLM calls"
        else:
            return _completed(record, response, time.monotonic() - t0, cap)
        log.warning("llm_call_failed", role=s.role, purpose=purpose, outcome=outcome, error=error, response_format=mode)
        return LLMCall(**record, outcome=outcome, error=error, latency_s=round(time.monotonic() - t0, 3))

    async def list_models(self) -> list[str] | LLMCall:
        """The endpoint's model ids (GET /models: no tokens spent, no model loaded); or, when the
        request fails or the body is not a model list, the failed call that says why."""
        s, t0 = self.settings, time.monotonic()
        record = dict(role=s.role, purpose="check", model=s.model, started_at=time.time())
        try:
            # raw: the parsed form of a body that is not JSON is an AttributeError, not an OpenAIError
            raw = await self._client.models.with_raw_response.list()
        except openai.OpenAIError as exc:
            outcome, error = _failure(exc, s)
        else:
            try:
                return [m.id for m in msgspec.json.decode(raw.content, type=_ModelList).data]
            except (msgspec.DecodeError, msgspec.ValidationError):
                outcome = "bad_response"
                error = (f"GET {s.base_url.rstrip('/')}/models answered {_excerpt(raw.content)}, not an OpenAI model "
                         "list: is this the API's URL (it usually ends in /v1)?")
        return LLMCall(**record, outcome=outcome, error=error, latency_s=round(time.monotonic() - t0, 3))


class _ModelEntry(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_ModelEntry]


def _failure(exc: openai.OpenAIError, s: LLMSettings) -> tuple[str, str]:
    """An exception of the openai client as an LLMCall's outcome and error."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", f"no reply within {s.timeout_s:g} s ({s.max_retries} retries)"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable", f"cannot reach {s.base_url}: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}", f"HTTP {exc.status_code} from {s.base_url}: {_status_detail(exc)}"
    return "bad_response", f"{type(exc).__name__}: {exc}"  # a body that is not a chat completion, say


def _excerpt(body: bytes | str, limit: int = 80) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return repr(text[:limit] + ("..." if len(text) > limit else "")) if text.strip() else "an empty body"


def _status_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return str(body or exc.message)[:300]


def _completed(record: dict, response: Any, latency: float, cap: int) -> LLMCall:
    if isinstance(response, (str, bytes)):  # what the client makes of a body that is not JSON (an HTML page)
        return LLMCall(**record, latency_s=round(latency, 3), outcome="bad_response",
                       error=f"the answer is not a chat completion but {_excerpt(response)}: is the base URL the API's "
                             "(it usually ends in /v1)?")
    usage = getattr(response, "usage", None)
    tokens = dict(tokens_in=getattr(usage, "prompt_tokens", None), tokens_out=getattr(usage, "completion_tokens", None),
                  latency_s=round(latency, 3))
    choice = response.choices[0] if getattr(response, "choices", None) else None
    message = choice.message if choice else None
    refusal = getattr(message, "refusal", None)
    if refusal or (choice and choice.finish_reason == "content_filter"):
        return LLMCall(**record, **tokens, outcome="refused", error=f"the model refused: {refusal or 'content filter'}")
    text = (message.content if message else None) or ""
    if choice and choice.finish_reason == "length":  # cut off: whatever it holds is not the whole answer
        return LLMCall(**record, **tokens, outcome="truncated", reply=text,
                       error=f"the reply was cut off at the {cap:,}-token cap for {record['purpose']} replies before "
                             "it ended: answer with a shorter one")
    if not text.strip():
        return LLMCall(**record, **tokens, outcome="empty", error="the reply was empty", reply=text)
    return LLMCall(**record, **tokens, outcome="ok", reply=text)


def extract_json(text: str) -> bytes:
    """The JSON object in a reply, without the Markdown fences or prose some models add around it."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return (text[start:end + 1] if 0 <= start < end else text).encode()


def decode_reply(text: str, type_: type[T]) -> T:
    """Raises ValueError with a message a model can act on."""
    try:
        return msgspec.json.decode(extract_json(text), type=type_)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the JSON does not match the required shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"the reply is not one valid JSON object: {exc}") from None


@dataclass
class JSONAnswer:
    value: Any | None  # the decoded, checked reply; None when every attempt failed
    calls: list[LLMCall] = field(default_factory=list)
    error: str | None = None  # why the last attempt failed

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.calls)


async def ask_json(client: LLMClient, messages: list[dict[str, Any]], type_: type[T], purpose: str, *,
                   check: Callable[[T], str | None] | None = None, repairs: int = 1, tokens_used: int = 0) -> JSONAnswer:
    """Ask for one JSON object of `type_` (its schema in the request's response_format); a reply
    that does not decode, that `check` finds fault with (it returns an error), or that was cut off
    at its cap goes back with the error for a fix, up to `repairs` times while the step's time
    budget lasts. A call that fails outright (HTTP, timeout, budget) ends the attempts: its error
    is the answer's."""
    answer = JSONAnswer(value=None)
    messages = list(messages)
    schema, name = reply_schema(type_), getattr(type_, "__name__", "reply")
    budget = client.settings.step_budget(purpose)
    deadline = None if budget is None else time.monotonic() + budget
    for attempt in range(repairs + 1):
        calls = await client.complete(messages, purpose, tokens_used + answer.tokens, schema=schema, schema_name=name,
                                      deadline=deadline,
                                      temperature=max(client.settings.temperature, REPAIR_TEMPERATURE) if attempt else None)
        answer.calls += calls[:-1]
        call = calls[-1]
        echo = call.reply or ""
        if call.outcome == "truncated":  # malformed at once: no decoding of half an answer
            problem = call.error or "the reply was cut off"
            echo = echo[:_ECHO_CHARS] + " ..."
        elif call.outcome != "ok":
            answer.calls.append(call)
            answer.error = call.error
            return answer
        else:
            try:
                value = decode_reply(call.reply or "", type_)
                problem = check(value) if check else None
            except ValueError as exc:
                problem = str(exc)
        if problem is None:
            answer.calls.append(call)
            answer.value, answer.error = value, None
            return answer
        answer.calls.append(msgspec.structs.replace(call, outcome="malformed", error=problem))
        answer.error = problem
        log.info("llm_reply_rejected", role=client.settings.role, purpose=purpose, attempt=attempt + 1, error=problem)
        if attempt < repairs and deadline is not None and deadline - time.monotonic() < 1:
            answer.error = f"{problem} (no time left for a repair: the {purpose} step's {budget:g} s for LLM calls are spent)"
            return answer
        messages += [{"role": "assistant", "content": echo},
                     {"role": "user", "content": render("repair", error=problem)}]
    return answer
