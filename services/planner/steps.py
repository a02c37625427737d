"""One candidate's own state machine: proposed -> assembled -> validated -> evaluating -> evaluated
(or rejected). Each step reads the candidate's record, does one thing, and writes the new state
through the run's driver, so a planner that restarts continues every candidate from its last write."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgspec
import structlog
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from services.planner.records import request_summary, store_calls, store_plots, tokens_used
from shared.errors import MessageError
from shared.evaluation.aggregate import summarise
from shared.messaging import subjects
from shared.messaging.bus import decode, encode, publish_to_stream
from shared.messaging.messages import (PROBE_BATCH, AssembleReply, AssembleRequest, CodeFeedback, EvalJob, LLMCall,
                                       TrainingRecipe, ValidateRequest, ValidationResult)
from shared.registry.records import CodeAttempt, IterationRecord, ModelSummary, RunRecord

if TYPE_CHECKING:
    from services.planner.driver import RunDriver

log = structlog.get_logger()
replace = msgspec.structs.replace
# Sandbox verdicts that say nothing about the code: not fed back to the tools LLM as its fault.
_MACHINERY_REASONS = frozenset({"service_unavailable", "harness_failed"})
COLLECT_POLL_S = 5.0  # a result another planner replica stored is seen this soon


async def queue_seed_jobs(js, run: RunRecord, it: IterationRecord, source: str, seeds: list[int], *,
                          rung: int | None, split: str = "val") -> None:
    """The seed jobs of candidate `it` at `rung` (its ladder's epochs there; None: the full budget),
    predicting the validation inputs, or the test inputs at the run's end (`split` "test"). The job
    id is the message id: a job queued again (after a crash) is dropped as a duplicate."""
    epochs = next(r for r in it.rungs if r.index == rung).epochs
    recipe = replace(TrainingRecipe.from_model_config(it.model_config), epochs=epochs)
    facts = run.dataset_facts
    for seed in seeds:
        job = EvalJob.with_recipe(recipe, job_id=job_id(run.run_id, it.iteration, seed, rung, split), run_id=run.run_id,
                                  iteration=it.iteration, seed=seed, dataset=run.goal.dataset, class_name=it.class_name,
                                  source=source, subset_size=run.goal.subset_size, rung=rung,
                                  keep_weights=rung is None and split == "val", split=split,  # type: ignore[arg-type]
                                  test_digest=facts.test_digest if facts else "",
                                  input_shape=list(facts.input_shape) if facts else [],
                                  vocab_size=facts.vocab_size if facts else 0,
                                  encoding_settings=facts.encoding_settings if facts else "")
        await publish_to_stream(js, subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})


def job_id(run_id: str, iteration: int, seed: int, rung: int | None, split: str = "val") -> str:
    """A seed job's id (its stream message id too); a test job's ("test": the run's best candidate
    on the held-out test split, at its end) is its own."""
    at = ".test" if split == "test" else "" if rung is None else f".r{rung}"
    return f"{run_id}.it{iteration:04d}{at}.seed{seed}"


class CandidateSteps:
    def __init__(self, driver: "RunDriver") -> None:
        self.d = driver
        self.p = driver.planner
        self.registry, self.config = self.p.registry, self.p.config

    async def advance(self, run: RunRecord, it: IterationRecord) -> None:
        if it.state == "proposed":
            await self._assemble(run, it)
        elif it.state == "assembled":
            await self._validate(run, it)
        elif it.state == "validated":
            await self._dispatch(run, it)
        elif it.state == "evaluating":
            await self._collect(run, it)

    async def _request(self, subject: str, payload: bytes, reply_type, run: RunRecord, it: IterationRecord,
                       timeout: float | None = None):
        """-> the decoded reply, or None after a failed attempt (retried later, up to step_retries)."""
        try:
            msg = await self.p.nc.request(subject, payload, timeout=timeout or self.config.planner.step_timeout_s)
            return decode(msg.data, reply_type, subject)
        except (NatsTimeoutError, NoRespondersError, MessageError, asyncio.TimeoutError) as exc:
            attempts = it.attempts + 1
            error = f"{subject} did not answer usefully after {attempts} attempts: {type(exc).__name__}: {exc}"
            if attempts >= self.config.planner.step_retries:
                await self.reject(run, it, ValidationResult(ok=False, reason="service_unavailable", error=error))
            else:
                await self.d.update(it.iteration, lambda r: replace(r, attempts=attempts))
                await asyncio.sleep(min(10.0, 2.0 ** attempts))
            log.warning("step_failed", subject=subject, attempts=attempts, error=str(exc), iteration=it.iteration)
            return None

    async def _assemble(self, run: RunRecord, it: IterationRecord) -> None:
        feedback = [CodeFeedback(source=((await self.registry.get_artifact(a.code or "")) or b"").decode(), error=a.error)
                    for a in it.code_attempts if a.assembler == "llm"]
        # no attempts left (the sandbox rejected them all): the assembler builds it deterministically
        request = AssembleRequest(run_id=run.run_id, iteration=it.iteration, model_config=it.model_config,
                                  feedback=feedback, attempts_left=self.config.llm.code_attempts - _code_generations(it),
                                  tokens_used=tokens_used(self.d.history(), "tools"))
        reply = await self._request(subjects.ASSEMBLE_SUBJECT, encode(request), AssembleReply, run, it,
                                    timeout=self.p.llm_step_timeout_s)
        if reply is None:
            return
        calls = await store_calls(self.registry, run.run_id, it.iteration, reply.llm_calls)
        if not reply.ok:
            await self.d.update(it.iteration, lambda r: replace(r, llm_calls=[*r.llm_calls, *calls]))
            await self.reject(run, it, ValidationResult(ok=False, reason="config", error=f"model_config cannot be built: {reply.error}"))
            return
        attempt = len(it.code_attempts) + 1
        filename = "model_code.py" if attempt == 1 else f"model_code.attempt{attempt}.py"
        name = await self.registry.put_artifact(f"{run.run_id}/it{it.iteration:04d}/{filename}", reply.source.encode())
        await self.d.update(it.iteration, lambda r: replace(
            r, state="assembled", class_name=reply.class_name, code_artifact=name, attempts=0, assembler=reply.assembler,
            llm_calls=[*r.llm_calls, *calls]))
        if reply.note and await self.p.guard.refuse(run, f"at candidate {it.iteration} the tools LLM's code could not be "
                                                          f"used ({reply.note})"):
            return
        if reply.note:
            await self.d.event("llm_fallback", f"candidate {it.iteration}: {reply.note}", it.iteration)
        by = "the tools LLM" if reply.assembler == "llm" else "the deterministic assembler"
        await self.d.event("assembled", f"candidate {it.iteration}: {by} wrote {reply.class_name}"
                           + (f" (attempt {attempt})" if attempt > 1 else ""), it.iteration, {"assembler": reply.assembler})

    async def _validate(self, run: RunRecord, it: IterationRecord) -> None:
        source = (await self.registry.get_artifact(it.code_artifact or "") or b"").decode()
        facts = run.dataset_facts
        assert facts is not None  # a run whose data could not be read failed at its start
        request = ValidateRequest(run_id=run.run_id, iteration=it.iteration, source=source, class_name=it.class_name,
                                  input_shape=[PROBE_BATCH, *facts.input_shape],
                                  expected_output_shape=[PROBE_BATCH, facts.num_classes],
                                  input_dtype=facts.input_dtype, vocab_size=facts.vocab_size)
        result = await self._request(subjects.VALIDATE_SUBJECT, encode(request), ValidationResult, run, it)
        if result is None:
            return
        if not result.ok and it.assembler == "llm" and result.reason not in _MACHINERY_REASONS:
            await self._retry_code(run, it, result)
            return
        if not result.ok:
            await self.reject(run, it, result)
            return
        await self.d.update(it.iteration, lambda r: replace(r, state="validated", validation=result, attempts=0))
        await self.d.event("validated", f"candidate {it.iteration}: valid, {result.param_count:,} parameters, "
                           f"output {tuple((result.output_shape or [])[1:])} per sample (as the model's process reports them)",
                           it.iteration, {"param_count": result.param_count})

    async def _retry_code(self, run: RunRecord, it: IterationRecord, result: ValidationResult) -> None:
        """The tools LLM's code was rejected: back to assembling, with the error for a fix while it
        has attempts left, and with the deterministic assembler after that."""
        error = f"{result.reason}: {result.error}"
        attempt = CodeAttempt(attempt=len(it.code_attempts) + 1, assembler="llm", code=it.code_artifact,
                              reason=result.reason, error=error)
        more = _code_generations(it) < self.config.llm.code_attempts
        await self.d.update(it.iteration, lambda r: replace(
            r, state="proposed", attempts=0, code_attempts=[*r.code_attempts, attempt]))
        if not more and await self.p.guard.refuse(run, f"at candidate {it.iteration} the sandbox rejected all "
                                                        f"{self.config.llm.code_attempts} of the tools LLM's attempts ({error})"):
            return
        then = ("asking it for a fix" if more else
                f"its {self.config.llm.code_attempts} attempts are spent, so the deterministic assembler builds it")
        await self.d.event("code_rejected", f"candidate {it.iteration}: the sandbox rejected the tools LLM's code "
                           f"({error}); {then}", it.iteration, {"reason": result.reason, "error": result.error})

    async def _dispatch(self, run: RunRecord, it: IterationRecord) -> None:
        source = (await self.registry.get_artifact(it.code_artifact or "") or b"").decode()
        rung = next(r for r in it.rungs if r.index == it.rung)
        await queue_seed_jobs(self.p.js, run, it, source, it.seeds, rung=it.rung)
        summary, calls = it.summary, []
        if summary is None:  # while the seeds train
            summary, calls = await self._summarise(run, it, source)
        await self.d.update(it.iteration, lambda r: replace(
            r, state="evaluating", started_at=time.time(), summary=summary, llm_calls=[*r.llm_calls, *calls]))
        fidelity = "full budget" if it.rung is None else f"rung {it.rung}"
        await self.d.event("evaluating", f"candidate {it.iteration}: {len(it.seeds)} seed job(s) queued, {fidelity}: "
                           f"{rung.epochs} epoch(s) each", it.iteration, {"rung": it.rung, "epochs": rung.epochs,
                                                                            "seeds": it.seeds})

    async def _summarise(self, run: RunRecord, it: IterationRecord, source: str) -> tuple[ModelSummary, list[LLMCall]]:
        summary, reply = await request_summary(self.p.nc, run, it, source, tokens_used(self.d.history(), "tools"),
                                               self.p.llm_step_timeout_s)
        if reply.error and reply.llm_calls:
            await self.d.event("llm_fallback", f"candidate {it.iteration}: no model summary from the tools LLM "
                               f"({reply.error}); summary.json holds the measured facts", it.iteration)
        return summary, await store_calls(self.registry, run.run_id, it.iteration, reply.llm_calls)

    async def _collect(self, run: RunRecord, it: IterationRecord) -> None:
        results = await self.registry.seed_results(run.run_id, it.iteration, it.seeds, it.rung)
        overdue = time.time() - it.started_at > self.config.planner.eval_timeout_s
        if len(results) < len(it.seeds) and not overdue:
            await self.d.results_arrived(COLLECT_POLL_S)  # a result, or poll the registry again
            return
        goal = run.goal
        evaluation = summarise(results, it.seeds, rank_by=goal.goal_metric)
        if it.rung is None:  # a cheap rung's curves are in its results; plots are for full evaluations
            evaluation.plots = await store_plots(self.registry, run, it, evaluation)
        await self.d.update(it.iteration, lambda r: replace(r, state="evaluated", evaluation=evaluation,
                                                            finished_at=time.time()))
        measured = evaluation.summary(goal.goal_metric)
        mean = "n/a" if measured.mean is None else f"{measured.mean:.4f}"
        fidelity = "at the full budget" if it.rung is None else f"at rung {it.rung}"
        await self.d.event("evaluated", f"candidate {it.iteration}: {goal.goal_metric} mean {mean} over {measured.n} "
                           f"seed(s) {fidelity}", it.iteration,
                           {goal.goal_metric: msgspec.to_builtins(measured), "metric": goal.goal_metric,
                            "val_accuracy": msgspec.to_builtins(evaluation.summary()), "rung": it.rung})

    async def reject(self, run: RunRecord, it: IterationRecord, result: ValidationResult) -> None:
        await self.d.update(it.iteration, lambda r: replace(r, state="rejected", validation=result, finished_at=time.time()))
        await self.d.event("rejected", f"candidate {it.iteration}: rejected: {result.error}", it.iteration,
                           {"reason": result.reason, "error": result.error})


def _code_generations(it: IterationRecord) -> int:
    """The tools LLM's code replies for this iteration so far, failed ones included."""
    return sum(1 for c in it.llm_calls if c.role == "tools" and c.purpose == "code")
