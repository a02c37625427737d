"""The quick check of an LLM endpoint, made when a run starts (by the planner, recorded in the run)
and by `researcher run` before it starts an embedded stack: an endpoint that cannot be reached, or
that answers nothing an OpenAI client can use, is said up front instead of being found out at
the first proposal."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import msgspec

from shared.llm.client import LLMClient, LLMSettings
from shared.messaging.messages import LLMCall

# Outcomes of a GET /models that say only that the server has no model list (some proxies): the
# check asks for a tiny completion instead.
_NO_MODEL_LIST = frozenset({"http_404", "http_405", "http_501"})
# What each role's trouble costs a run that goes on without it.
FALLBACK = {"planning": "the built-in search proposes instead", "tools": "the deterministic assembler writes the code"}
MODEL_FLAG = {"planning": "--llm-model", "tools": "--tools-llm-model"}


async def check_endpoint(settings: LLMSettings, timeout_s: float) -> LLMCall:
    """One cheap call, no retries, `timeout_s` seconds at most (each request): the endpoint's model
    list, and the configured model in it. -> a record whose outcome is "ok" or says what failed."""
    quick = LLMClient(dataclasses.replace(settings, timeout_s=timeout_s, max_retries=0, max_reply_tokens=8,
                                          response_format="text"))
    t0 = time.monotonic()
    try:
        listed = await quick.list_models()
        if isinstance(listed, LLMCall) and listed.outcome in _NO_MODEL_LIST:
            call = (await quick.complete([{"role": "user", "content": "Reply with the word OK."}], "check"))[-1]
            if call.outcome == "truncated":  # 8 tokens were not enough for a chatty model: it answers all the same
                call = msgspec.structs.replace(call, outcome="ok", error=None)
            return msgspec.structs.replace(call, messages=[], reply="a chat completion" if call.outcome == "ok" else None)
    finally:
        await quick.close()
    if isinstance(listed, LLMCall):
        return listed
    record = dict(role=settings.role, purpose="check", model=settings.model, started_at=time.time(),
                  latency_s=round(time.monotonic() - t0, 3))
    if settings.model in listed:
        return LLMCall(**record, outcome="ok", reply=f"its model list has {settings.model}")
    shown = ", ".join(listed[:12]) + (f" and {len(listed) - 12} more" if len(listed) > 12 else "")
    return LLMCall(**record, outcome="unknown_model",
                   error=f"{settings.base_url} does not list model {settings.model!r} (it lists: {shown or 'none'}); "
                         f"set {MODEL_FLAG.get(settings.role, '--llm-model')} (llm.{settings.role}.model) to one of them")


async def check_endpoints(roles: list[LLMSettings], timeout_s: float) -> list[LLMCall]:
    """Every configured role's check at once, in the order given."""
    return list(await asyncio.gather(*(check_endpoint(s, timeout_s) for s in roles)))


def required_error(what: str) -> str:
    return f"the LLM is required (--require-llm) and {what}; the run fails instead of falling back"


def unconfigured_problem(require_llm: bool, roles: list[LLMSettings]) -> str | None:
    """A goal that requires an LLM of a stack that has none: rejected at submission."""
    if not require_llm or roles:
        return None
    return ("require_llm: this stack has no LLM configured to require: give `researcher run` --llm-base-url and "
            "--llm-model, or configure the running stack's llm.planning.base_url and llm.planning.model "
            "(config/researcher.yaml, or RESEARCHER_LLM__PLANNING__BASE_URL and RESEARCHER_LLM__PLANNING__MODEL)")


def describe_check(call: LLMCall, settings: LLMSettings, require_llm: bool = False) -> str:
    """One line for the run's events and the CLI: the role, its model and endpoint, the outcome,
    and what the run does about a failure (falls back, or with --require-llm fails)."""
    where = f"{call.role} LLM {call.model} at {settings.base_url}"
    if call.outcome == "ok":
        return f"{where}: answers ({call.reply}, {call.latency_s:.2f} s)"
    then = "the run fails (--require-llm)" if require_llm else f"where it fails, {FALLBACK.get(call.role, 'it is skipped')}"
    return f"{where}: {call.outcome}: {call.error}. {then[0].upper()}{then[1:]}"
