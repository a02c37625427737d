"""What the LLM calls of a run cost, per role. Apart from `shared.llm.client` so that a report
(`researcher report`) is written without importing the `openai` client."""

from __future__ import annotations

from typing import Any

from shared.messaging.messages import LLMCall


def usage_by_role(calls: list[LLMCall]) -> dict[str, dict[str, Any]]:
    """Totals per role: calls, failed calls, tokens in and out, seconds waited."""
    out: dict[str, dict[str, Any]] = {}
    for call in calls:
        row = out.setdefault(call.role, {"calls": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0, "latency_s": 0.0})
        row["calls"] += 1
        row["failed"] += call.outcome != "ok"
        row["tokens_in"] += call.tokens_in or 0
        row["tokens_out"] += call.tokens_out or 0
        row["latency_s"] = round(row["latency_s"] + call.latency_s, 3)
    return out
