"""What the LLM calls of a run cost, per role, and what came of them. Apart from `shared.llm.client`
so that a report (`researcher report`) is written without importing the `openai` client."""

from __future__ import annotations

from typing import Any

from shared.messaging.messages import LLMCall
from shared.registry.records import IterationRecord, RunRecord


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


# ---- what came of the calls: who wrote each proposal and each model's code, and each fallback's why ----
def llm_sources(run: RunRecord, iterations: list[IterationRecord]) -> dict[str, Any]:
    """The start's check, and per kind of work how much the LLMs did and how often (and why) the
    built-in step stood in after an LLM failed. Read from the LLMCall records the iterations keep."""
    return {"check": [{"role": c.role, "model": c.model, "outcome": c.outcome, "error": c.error}
                      for c in run.llm_check or []],
            "proposals": _proposals(iterations), "code": _code(iterations), "formats": _formats(iterations)}


def _formats(iterations: list[IterationRecord]) -> dict[str, Any]:
    """Per role, the response formats its calls were made in (how many each) and what the server
    refused, with its words: the mode the client settled on for the endpoint."""
    out: dict[str, Any] = {}
    for call in (c for it in iterations for c in it.llm_calls):
        if not call.response_format:  # a record from before the modes, or a check
            continue
        row = out.setdefault(call.role, {"used": {}, "refused": {}})
        if call.outcome == "format_refused":
            row["refused"].setdefault(call.response_format, call.error)
        else:
            row["used"][call.response_format] = row["used"].get(call.response_format, 0) + 1
    return out


def _oneline(text: str | None, limit: int = 240) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _failure(call: LLMCall) -> str:
    return f"{call.outcome}: {call.error}"


def _proposals(iterations: list[IterationRecord]) -> dict[str, Any]:
    """A built-in proposal fell back when the planning LLM was asked for it (its propose calls are
    the iteration's) or for the decision before it (the previous iteration's decide calls) and
    failed; one after a decision that chose no config was the LLM's choice."""
    out: dict[str, Any] = {"llm": 0, "builtin": 0, "fell_back": 0, "fallbacks": []}
    previous: IterationRecord | None = None
    for it in iterations:
        if it.proposer == "llm":
            out["llm"] += 1
        else:
            out["builtin"] += 1
            asked = ([c for c in it.llm_calls if c.role == "planning" and c.purpose == "propose"]
                     or [c for c in (previous.llm_calls if previous else []) if c.role == "planning" and c.purpose == "decide"])
            if asked and asked[-1].outcome != "ok":
                out["fell_back"] += 1
                out["fallbacks"].append({"iteration": it.iteration, "reason": _failure(asked[-1])})
        previous = it
    return out


def _code(iterations: list[IterationRecord]) -> dict[str, Any]:
    """Per assembled iteration, who wrote the code; `llm_generations` counts every code reply of
    the tools LLM (fixes after the sandbox's verdicts and failed calls included)."""
    out: dict[str, Any] = {"llm": 0, "deterministic": 0, "fell_back": 0, "llm_generations": 0, "fallbacks": []}
    for it in iterations:
        generations = [c for c in it.llm_calls if c.role == "tools" and c.purpose == "code"]
        out["llm_generations"] += len(generations)
        if not it.code_artifact or it.state == "proposed":  # never assembled, or back for another attempt
            continue
        if it.assembler == "llm":
            out["llm"] += 1
            continue
        out["deterministic"] += 1
        if not generations:  # no tools LLM configured (or the config could not be built): not a fallback
            continue
        last = generations[-1]
        rejected = [a for a in it.code_attempts if a.assembler == "llm"]
        reason = _failure(last) if last.outcome != "ok" or not rejected else (
            f"the sandbox rejected its {len(rejected)} attempts (the last: {rejected[-1].error})")
        out["fell_back"] += 1
        out["fallbacks"].append({"iteration": it.iteration, "reason": reason})
    return out


def format_sources(sources: dict[str, Any]) -> list[str]:
    """The report's lines on the LLMs' share of the work; none for a run that had no LLM."""
    proposals, code = sources["proposals"], sources["code"]
    if not sources["check"] and not (proposals["llm"] or proposals["fell_back"] or code["llm_generations"]):
        return []
    lines = [f"LLM check at the start: {c['role']} LLM {c['model']}: "
              + ("ok" if c["outcome"] == "ok" else f"{c['outcome']}: {c['error']}") for c in sources["check"]]
    lines.append(f"proposals: {proposals['llm']} by the planning LLM, {proposals['builtin']} by the built-in search "
                 f"({proposals['fell_back']} after the LLM failed)")
    lines += [f"  iteration {f['iteration']}: {f['reason']}" for f in proposals["fallbacks"]]
    lines.append(f"code: {code['llm']} by the tools LLM ({code['llm_generations']} generations), {code['deterministic']} "
                 f"by the deterministic assembler ({code['fell_back']} after the LLM failed)")
    lines += [f"  iteration {f['iteration']}: {f['reason']}" for f in code["fallbacks"]]
    for role, row in sources.get("formats", {}).items():
        used = ", ".join(f"{mode} ({count} call{'s' if count != 1 else ''})" for mode, count in row["used"].items())
        lines.append(f"response format of the {role} LLM: {used or 'none answered'}")
        lines += [f"  {_oneline(error)}" for error in row["refused"].values()]
    return lines
