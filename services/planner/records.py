"""What the planner keeps beside an iteration's record: its plots and its LLM exchanges as
artifacts in the registry's object store, and its model summary (summary.json); and what it lets
go: the trained weights of iterations that are not the best."""

from __future__ import annotations

import asyncio
import json

import msgspec
import structlog
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from shared.messaging import subjects
from shared.messaging.bus import decode, encode
from shared.errors import MessageError
from shared.messaging.messages import PROBE_BATCH, LLMCall, ModelFacts, SummaryReply, SummaryRequest
from shared.evaluation.plots import evaluation_plots
from shared.registry.records import Evaluation, IterationRecord, ModelSummary, RunRecord
from shared.registry.store import Registry

log = structlog.get_logger()


async def store_plots(registry: Registry, run: RunRecord, it: IterationRecord, evaluation: Evaluation) -> dict[str, str]:
    """The evaluation's plots (shared.evaluation.plots) as PNG artifacts; -> their names. Plots
    are a view of the results: one that cannot be drawn is logged, never fails the run."""
    title = f"{run.run_id} iteration {it.iteration} ({it.class_name or 'model'})"
    names = run.dataset_facts.class_names if run.dataset_facts else []
    stored = {}
    for filename, render in evaluation_plots(evaluation, names, title).items():
        try:
            png = await asyncio.to_thread(render)
        except Exception as exc:  # noqa: BLE001
            log.warning("plot_failed", plot=filename, error=str(exc))
            continue
        stored[filename] = await registry.put_artifact(f"{run.run_id}/it{it.iteration:04d}/{filename}", png)
    return stored


async def drop_weights(registry: Registry, run_id: str, iteration: int, seeds: list[int]) -> int:
    """Delete an iteration's seed weights (only the best iteration's are exported, and a home
    keeps every run: megabytes per seed add up); the seed results keep what they scored.
    -> how many were deleted. A failure to delete is logged, never fails the run."""
    dropped = 0
    for seed, result in (await registry.seed_results(run_id, iteration, seeds)).items():
        if result.weights:
            try:
                dropped += await registry.delete_artifact(result.weights)
            except Exception as exc:  # noqa: BLE001 - NATS away: the weights stay, nothing else is lost
                log.warning("weights_not_dropped", iteration=iteration, seed=seed, error=f"{type(exc).__name__}: {exc}")
    return dropped


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


def model_facts(run: RunRecord, it: IterationRecord) -> ModelFacts:
    """What the sandbox measured of the iteration's validated model (the model process's claims)."""
    v = it.validation
    return ModelFacts(class_name=it.class_name, assembler=it.assembler,
                      input_shape=list(run.dataset_facts.input_shape) if run.dataset_facts else [],
                      output_shape=v.output_shape[1:] if v and v.output_shape else None,
                      parameters=v.param_count if v else None, trainable_parameters=v.trainable_params if v else None,
                      flops_per_sample=v.flops // PROBE_BATCH if v and v.flops is not None else None,
                      layers=v.layers if v else [])


async def request_summary(nc, run: RunRecord, it: IterationRecord, source: str, tools_tokens_used: int,
                          timeout: float) -> tuple[ModelSummary, SummaryReply]:
    """The measured facts and the tools LLM's reading of the code (summary.json). A summary is a
    description, never a gate: when the reading fails, the facts stand alone."""
    facts = model_facts(run, it)
    request = SummaryRequest(run_id=run.run_id, iteration=it.iteration, class_name=it.class_name, source=source,
                             facts=msgspec.structs.replace(facts, layers=facts.layers[:60]), tokens_used=tools_tokens_used)
    try:
        msg = await nc.request(subjects.SUMMARY_SUBJECT, encode(request), timeout=timeout)
        reply = decode(msg.data, SummaryReply, subjects.SUMMARY_SUBJECT)
    except (NatsTimeoutError, NoRespondersError, MessageError, asyncio.TimeoutError) as exc:
        reply = SummaryReply(ok=False, error=f"no summary from the assembler: {type(exc).__name__}: {exc}")
    return ModelSummary(facts=facts, narrative=reply.narrative, narrative_error=reply.error), reply
