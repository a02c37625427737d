"""The two LLM roles over any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp's server, OpenAI).

Every call goes through the `openai` client, which retries connection errors, timeouts, 408, 409,
429 and 5xx with exponential backoff (honouring Retry-After). A failure never raises past this
module: each call comes back as an `LLMCall` record with its outcome, and `ask_json` sends a reply
that does not decode back with the error for a repair, a bounded number of times.
"""

from __future__ import annotations

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
    json_mode: bool


def llm_settings(config: Config, role: str) -> LLMSettings | None:
    """The role's endpoint, or None when no LLM is configured for it (the built-in step runs)."""
    values = resolve_llm(config.llm, role)
    if not values.pop("enabled") or not values["base_url"]:
        return None
    return LLMSettings(role=role, **values)


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

    async def complete(self, messages: list[dict[str, Any]], purpose: str, tokens_used: int = 0) -> LLMCall:
        """One chat completion; -> its record (outcome "ok" with the reply, or what went wrong)."""
        s = self.settings
        started = time.time()
        record = dict(role=s.role, purpose=purpose, model=s.model, started_at=started, messages=messages)
        if tokens_used >= s.token_budget:
            return LLMCall(**record, outcome="budget",
                           error=f"the {s.role} LLM's token budget of {s.token_budget:,} for this run is spent")
        kwargs: dict[str, Any] = {"model": s.model, "messages": messages, "max_tokens": s.max_reply_tokens,
                                  "temperature": s.temperature}
        if s.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        t0 = time.monotonic()
        try:
            response = await self._client.chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            outcome, error = _failure(exc, s)
        else:
            return _completed(record, response, time.monotonic() - t0)
        log.warning("llm_call_failed", role=s.role, purpose=purpose, outcome=outcome, error=error)
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


def _completed(record: dict, response: Any, latency: float) -> LLMCall:
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
    """Ask for one JSON object of `type_`; a reply that does not decode, or that `check` finds fault
    with (it returns an error), goes back with the error for a fix, up to `repairs` times. A call
    that fails outright (HTTP, timeout, budget) ends the attempts: its error is the answer's."""
    answer = JSONAnswer(value=None)
    messages = list(messages)
    for attempt in range(repairs + 1):
        call = await client.complete(messages, purpose, tokens_used + answer.tokens)
        if call.outcome != "ok":
            answer.calls.append(call)
            answer.error = call.error
            return answer
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
        messages += [{"role": "assistant", "content": call.reply or ""},
                     {"role": "user", "content": render("repair", error=problem)}]
    return answer
