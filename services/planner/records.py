"""What the planner keeps beside an iteration's record: its plots and its LLM exchanges as
artifacts in the registry's object store, and its model summary (summary.json)."""

from __future__ import annotations

import asyncio
import json

import msgspec
import structlog
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from shared.messaging import subjects
from shared.messaging.bus import decode, encode
from shared.errors import MessageError
from shared.messaging.messages import LLMCall, SummaryReply, SummaryRequest
from shared.evaluation.plots import confusion_matrix_png, learning_curves_png
from shared.registry.store import IterationRecord, Registry, RunRecord

log = structlog.get_logger()


async def store_plots(registry: Registry, run: RunRecord, it: IterationRecord, evaluation: dict) -> dict[str, str]:
    """Confusion matrix (best seed) and learning curves (every seed) as PNG artifacts; -> their names.
    Plots are a view of the results: one that cannot be drawn is logged, never fails the run."""
    final, curves = evaluation.get("final") or {}, [c for c in evaluation["learning_curves"].values() if c]
    title = f"{run.run_id} iteration {it.iteration} ({it.class_name or 'model'})"
    wanted = {}
    if final.get("confusion_matrix"):
        names = [row["class"] for row in final.get("per_class", [])] or [str(i) for i in range(len(final["confusion_matrix"]))]
        wanted["confusion_matrix.png"] = lambda: confusion_matrix_png(final["confusion_matrix"], names, title=title)
    if curves:
        wanted["learning_curves.png"] = lambda: learning_curves_png(curves, title=title)
    stored = {}
    for filename, render in wanted.items():
        try:
            png = await asyncio.to_thread(render)
        except Exception as exc:  # noqa: BLE001
            log.warning("plot_failed", plot=filename, error=str(exc))
            continue
        stored[filename] = await registry.put_artifact(f"{run.run_id}/it{it.iteration:04d}/{filename}", png)
    return stored


async def store_calls(registry: Registry, run_id: str, n: int, calls: list[LLMCall]) -> list[LLMCall]:
    """Each call's prompt and reply become an artifact; the record keeps its name and figures."""
    stored = []
    for call in calls:
        name = f"{run_id}/it{n:04d}/llm/{call.started_at:.6f}-{call.role}-{call.purpose}.json"
        exchange = {k: v for k, v in msgspec.to_builtins(call).items() if k != "exchange"}
        await registry.put_artifact(name, json.dumps(exchange, indent=1).encode())
        stored.append(msgspec.structs.replace(call, messages=[], reply=None, exchange=name))
    return stored


def tokens_used(history: list[IterationRecord], role: str) -> int:
    """Tokens in and out the run has spent on `role`, for its budget."""
    return sum(c.tokens for h in history for c in h.llm_calls if c.role == role)


def model_facts(run: RunRecord, it: IterationRecord) -> dict:
    """What the sandbox measured of the iteration's validated model."""
    v = it.validation
    return {"class_name": it.class_name, "assembler": it.assembler, "input_shape": [*run.dataset_facts["input_shape"]],
            "output_shape": v.output_shape[1:] if v and v.output_shape else None,
            "parameters": v.param_count if v else None, "trainable_parameters": v.trainable_params if v else None,
            "flops_per_sample": v.flops // 2 if v and v.flops is not None else None,  # the probe batch holds 2
            "layers": v.layers if v else []}


async def request_summary(nc, run: RunRecord, it: IterationRecord, source: str, tools_tokens_used: int,
                          timeout: float) -> tuple[dict, SummaryReply]:
    """The measured facts and the tools LLM's reading of the code (summary.json). A summary is a
    description, never a gate: when the reading fails, the facts stand alone."""
    facts = model_facts(run, it)
    request = SummaryRequest(run_id=run.run_id, iteration=it.iteration, class_name=it.class_name, source=source,
                             facts={**facts, "layers": facts["layers"][:60]}, tokens_used=tools_tokens_used)
    try:
        msg = await nc.request(subjects.SUMMARY_SUBJECT, encode(request), timeout=timeout)
        reply = decode(msg.data, SummaryReply, subjects.SUMMARY_SUBJECT)
    except (NatsTimeoutError, NoRespondersError, MessageError, asyncio.TimeoutError) as exc:
        reply = SummaryReply(ok=False, error=f"no summary from the assembler: {type(exc).__name__}: {exc}")
    return {"facts": facts, "narrative": reply.narrative, "narrative_error": reply.error}, reply
