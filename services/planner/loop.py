"""Drives each run as a persisted state machine: every step reads the registry, does one thing,
writes the new state. A planner that crashes and starts again continues from the last write."""

from __future__ import annotations

import asyncio
import math
import time

import msgspec
import structlog
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from services.planner.decide import decide, iteration_score
from services.planner.intake import new_run
from shared.evaluation.aggregate import summarise
from services.planner.leases import RunLeases
from services.planner.llm_guard import LLMGuard, required_error
from services.planner.llm_plan import ask_plan, merge_decision, plan_context
from services.planner.proposers import RunView, choose, proposers
from services.planner.records import drop_weights, request_summary, store_calls, store_plots, tokens_used
from shared.messaging import subjects
from shared.messaging.bus import decode, encode, publish_event, through_outages
from shared.runtime.config import Config
from shared.errors import MessageError
from shared.llm.client import LLMClient, llm_settings
from shared.runtime.log import bind_run
from shared.messaging.messages import (PROBE_BATCH, TERMINAL_STATUSES, AssembleReply, AssembleRequest, CodeFeedback,
                                       EvalJob, Event, Goal, LLMCall, SeedResult, TrainingRecipe, ValidateRequest,
                                       ValidationResult)
from shared.registry.records import CodeAttempt, Decision, IterationRecord, ModelSummary, RunRecord, unless_ended
from shared.registry.store import Registry

log = structlog.get_logger()
replace = msgspec.structs.replace
# Sandbox verdicts that say nothing about the code: not fed back to the tools LLM as its fault.
_MACHINERY_REASONS = frozenset({"service_unavailable", "harness_failed"})


class Planner:
    def __init__(self, nc, js, registry: Registry, config: Config, leases: RunLeases) -> None:
        self.nc, self.js, self.registry, self.config, self.leases = nc, js, registry, config, leases
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        planning, tools = llm_settings(config, "planning"), llm_settings(config, "tools")
        self.planning = LLMClient(planning) if planning else None
        self.proposers = proposers(config, self.planning)
        self.guard = LLMGuard(registry, self.event, [s for s in (planning, tools) if s], config.llm.check_timeout_s)
        # the assembler's LLM work can outlast an ordinary step: its attempts, each with retries
        self.llm_step_timeout_s = max(config.planner.step_timeout_s, tools.timeout_s * (tools.max_retries + 1)
                                      * config.llm.code_attempts + 30) if tools else config.planner.step_timeout_s

    # ---- inputs ----
    async def on_goal(self, goal: Goal) -> None:
        bind_run(goal.run_id)
        # off the loop: a large data set takes seconds to read, and leases and heartbeats must go on
        record = await asyncio.to_thread(new_run, goal, self.config.data)
        if await self.registry.create_run(record):
            log.info("run_created", goal=goal.goal, dataset=goal.dataset, status=record.status)
            await self.event(goal.run_id, "run_started", f"run started: {goal.goal!r} on {goal.dataset}")
            if record.status == "failed":
                await self.event(goal.run_id, "run_finished", f"run failed: {record.error}", data={"status": "failed"})
        await self.ensure_driving(goal.run_id)

    async def on_result(self, result: SeedResult) -> None:
        bind_run(result.run_id, iteration=result.iteration, seed=result.seed)
        await self.registry.put_seed_result(result)
        accuracy = result.metrics.get("val_accuracy")
        outcome = (f"val_accuracy {'n/a' if accuracy is None else f'{accuracy:.4f}'}" if result.ok
                   else f"failed ({result.reason or 'error'}): {result.error}")
        await self.event(result.run_id, "seed_done", f"seed {result.seed} {outcome}", result.iteration,
                         {"seed": result.seed, "ok": result.ok, "metrics": result.metrics})
        self._wake.setdefault(result.run_id, asyncio.Event()).set()

    async def on_dead_job(self, job: EvalJob, deliveries: int) -> None:
        """A seed job JetStream gave up on: a failed seed carrying why, unless a result came after all."""
        bind_run(job.run_id, iteration=job.iteration, seed=job.seed)
        if (await self.registry.seed_results(job.run_id, job.iteration, [job.seed])).get(job.seed):
            return  # the last evaluator finished it after all; that result stands
        error = (f"dead-lettered after {deliveries} deliveries: no evaluator finished it (each one that took it "
                 "died, stopped, or could not run it: see the run's evaluator_unavailable events); the job is kept on "
                 f"{subjects.dead_job_subject(job.run_id)}")
        await self.on_result(SeedResult(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed,
                                        ok=False, error=error, reason="dead_letter", evaluator="dead-letter"))

    async def resume_all(self) -> int:
        """Renew this replica's leases (dropping runs another replica now holds), then claim and
        drive every running run that no live replica holds; -> how many this replica drives."""
        for run_id in await self.leases.renew():
            task = self._tasks.pop(run_id, None)
            if task:
                task.cancel()
        for run in await self.registry.list_runs():
            if run.status == "running":
                await self.ensure_driving(run.run_id)
        return sum(1 for task in self._tasks.values() if not task.done())

    async def ensure_driving(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if (task is None or task.done()) and await self.leases.claim(run_id):
            self._tasks[run_id] = asyncio.create_task(self._drive(run_id), name=f"run-{run_id}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for run_id in list(self._tasks):  # another replica may take them over at once
            await self.leases.release(run_id)
        if self.planning:
            await self.planning.close()

    # ---- the state machine ----
    async def _drive(self, run_id: str) -> None:
        bind_run(run_id)
        while True:
            try:
                # NATS restarting: the step is redone from the registry once it is back, however long that takes
                if not await through_outages(lambda: self._advance(run_id), "run step", give_up_s=math.inf):
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a fault of the machinery: record it, end the run, keep serving
                log.exception("run_failed")
                error = f"planner error: {type(exc).__name__}: {exc}"
                await self.registry.update_run(run_id, unless_ended(lambda r: replace(
                    r, status="failed", error=error, finished_at=time.time())))
                await self.event(run_id, "run_finished", f"run failed: {error}", data={"status": "failed"})
                return

    async def _advance(self, run_id: str) -> bool:
        """One step of the run; -> False (its lease released) once the run has ended."""
        run = await self.registry.get_run(run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            await self.leases.release(run_id)
            return False
        await self._step(run)
        return True

    async def _step(self, run: RunRecord) -> None:
        n = run.current_iteration
        it = await self.registry.get_iteration(run.run_id, n) if n else None
        if self.guard.pending(run):
            await self.guard.check(run)
        elif it is None or it.state == "decided":
            await self._propose(run)
        elif it.state == "proposed":
            await self._assemble(run, it)
        elif it.state == "assembled":
            await self._validate(run, it)
        elif it.state == "validated":
            await self._dispatch(run, it)
        elif it.state == "evaluating":
            await self._collect(run, it)
        else:  # evaluated or rejected
            await self._decide(run, it)

    async def _propose(self, run: RunRecord) -> None:
        n = run.current_iteration + 1
        view = RunView(run=run, history=await self.registry.iterations(run.run_id, run.current_iteration),
                       max_epochs=self._max_epochs(run), num_train=self._num_train(run))
        proposal, declined = await choose(self.proposers, view)
        if declined and await self.guard.refuse(run, f"at iteration {n} {declined[-1].why}"):
            return
        for d in declined:
            await self.event(run.run_id, "llm_fallback", f"iteration {n}: {d.why}; the built-in search proposes instead",
                             n, {"error": d.why})
        calls = [c for d in declined for c in d.calls] + proposal.calls
        record = IterationRecord(run_id=run.run_id, iteration=n, model_config=proposal.model_config,
                                 search_params=proposal.search_params, proposer=proposal.proposer,
                                 seeds=list(range(run.goal.num_seeds)),
                                 llm_calls=await store_calls(self.registry, run.run_id, n, calls))
        await self.registry.put_iteration(record)
        await self.registry.update_run(run.run_id, lambda r: replace(r, current_iteration=n))
        by = "the planning LLM" if proposal.proposer == "llm" else "the built-in search"
        why = f": {proposal.reasoning}" if proposal.reasoning else ""
        await self.event(run.run_id, "proposed", f"iteration {n}: {by} proposed {proposal.describe()}{why}",
                         n, {"model_config": proposal.model_config, "proposer": proposal.proposer})

    async def _request(self, subject: str, payload: bytes, reply_type, run: RunRecord, it: IterationRecord,
                       timeout: float | None = None):
        """-> the decoded reply, or None after a failed attempt (retried later, up to step_retries)."""
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout or self.config.planner.step_timeout_s)
            return decode(msg.data, reply_type, subject)
        except (NatsTimeoutError, NoRespondersError, MessageError, asyncio.TimeoutError) as exc:
            attempts = it.attempts + 1
            error = f"{subject} did not answer usefully after {attempts} attempts: {type(exc).__name__}: {exc}"
            if attempts >= self.config.planner.step_retries:
                await self._reject(run, it, ValidationResult(ok=False, reason="service_unavailable", error=error))
            else:
                await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(r, attempts=attempts))
                await asyncio.sleep(min(10.0, 2.0 ** attempts))
            log.warning("step_failed", subject=subject, attempts=attempts, error=str(exc))
            return None

    async def _assemble(self, run: RunRecord, it: IterationRecord) -> None:
        history = await self.registry.iterations(run.run_id, run.current_iteration)
        feedback = [CodeFeedback(source=((await self.registry.get_artifact(a.code or "")) or b"").decode(), error=a.error)
                    for a in it.code_attempts if a.assembler == "llm"]
        # no attempts left (the sandbox rejected them all): the assembler builds it deterministically
        request = AssembleRequest(run_id=run.run_id, iteration=it.iteration, model_config=it.model_config,
                                  feedback=feedback, attempts_left=self.config.llm.code_attempts - _code_generations(it),
                                  tokens_used=tokens_used(history, "tools"))
        reply = await self._request(subjects.ASSEMBLE_SUBJECT, encode(request), AssembleReply, run, it,
                                    timeout=self.llm_step_timeout_s)
        if reply is None:
            return
        calls = await store_calls(self.registry, run.run_id, it.iteration, reply.llm_calls)
        if not reply.ok:
            await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(r, llm_calls=[*r.llm_calls, *calls]))
            await self._reject(run, it, ValidationResult(ok=False, reason="config", error=f"model_config cannot be built: {reply.error}"))
            return
        attempt = len(it.code_attempts) + 1
        filename = "model_code.py" if attempt == 1 else f"model_code.attempt{attempt}.py"
        name = await self.registry.put_artifact(f"{run.run_id}/it{it.iteration:04d}/{filename}", reply.source.encode())
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(
            r, state="assembled", class_name=reply.class_name, code_artifact=name, attempts=0, assembler=reply.assembler,
            llm_calls=[*r.llm_calls, *calls]))
        if reply.note and await self.guard.refuse(run, f"at iteration {it.iteration} the tools LLM's code could not be "
                                                        f"used ({reply.note})"):
            return
        if reply.note:
            await self.event(run.run_id, "llm_fallback", f"iteration {it.iteration}: {reply.note}", it.iteration)
        by = "the tools LLM" if reply.assembler == "llm" else "the deterministic assembler"
        await self.event(run.run_id, "assembled", f"iteration {it.iteration}: {by} wrote {reply.class_name}"
                         + (f" (attempt {attempt})" if attempt > 1 else ""), it.iteration, {"assembler": reply.assembler})

    async def _validate(self, run: RunRecord, it: IterationRecord) -> None:
        source = (await self.registry.get_artifact(it.code_artifact or "") or b"").decode()
        facts = run.dataset_facts
        assert facts is not None  # a run whose data could not be read failed at its start
        request = ValidateRequest(run_id=run.run_id, iteration=it.iteration, source=source, class_name=it.class_name,
                                  input_shape=[PROBE_BATCH, *facts.input_shape],
                                  expected_output_shape=[PROBE_BATCH, facts.num_classes])
        result = await self._request(subjects.VALIDATE_SUBJECT, encode(request), ValidationResult, run, it)
        if result is None:
            return
        if not result.ok and it.assembler == "llm" and result.reason not in _MACHINERY_REASONS:
            await self._retry_code(run, it, result)
            return
        if not result.ok:
            await self._reject(run, it, result)
            return
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(
            r, state="validated", validation=result, attempts=0))
        await self.event(run.run_id, "validated", f"iteration {it.iteration}: valid, {result.param_count:,} parameters, "
                         f"output {tuple((result.output_shape or [])[1:])} per sample (as the model's process reports them)", it.iteration, {"param_count": result.param_count})

    async def _retry_code(self, run: RunRecord, it: IterationRecord, result: ValidationResult) -> None:
        """The tools LLM's code was rejected: back to assembling, with the error for a fix while it
        has attempts left, and with the deterministic assembler after that."""
        error = f"{result.reason}: {result.error}"
        attempt = CodeAttempt(attempt=len(it.code_attempts) + 1, assembler="llm", code=it.code_artifact,
                              reason=result.reason, error=error)
        more = _code_generations(it) < self.config.llm.code_attempts
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(
            r, state="proposed", attempts=0, code_attempts=[*r.code_attempts, attempt]))
        if not more and await self.guard.refuse(run, f"at iteration {it.iteration} the sandbox rejected all "
                                                     f"{self.config.llm.code_attempts} of the tools LLM's attempts ({error})"):
            return
        then = ("asking it for a fix" if more else
                f"its {self.config.llm.code_attempts} attempts are spent, so the deterministic assembler builds it")
        await self.event(run.run_id, "code_rejected", f"iteration {it.iteration}: the sandbox rejected the tools LLM's code "
                         f"({error}); {then}", it.iteration, {"reason": result.reason, "error": result.error})

    async def _dispatch(self, run: RunRecord, it: IterationRecord) -> None:
        source = (await self.registry.get_artifact(it.code_artifact or "") or b"").decode()
        recipe = TrainingRecipe.from_model_config(it.model_config)
        for seed in it.seeds:
            job = EvalJob.with_recipe(recipe, job_id=f"{run.run_id}.it{it.iteration:04d}.seed{seed}", run_id=run.run_id,
                                      iteration=it.iteration, seed=seed, dataset=run.goal.dataset,
                                      class_name=it.class_name, source=source, subset_size=run.goal.subset_size)
            # the job id is the message id: a re-dispatch after a crash is dropped as a duplicate
            await self.js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})
        summary, calls = it.summary, []
        if summary is None:  # while the seeds train
            summary, calls = await self._summarise(run, it, source)
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(
            r, state="evaluating", started_at=time.time(), summary=summary, llm_calls=[*r.llm_calls, *calls]))
        await self.event(run.run_id, "evaluating", f"iteration {it.iteration}: {len(it.seeds)} seed jobs queued", it.iteration)

    async def _summarise(self, run: RunRecord, it: IterationRecord, source: str) -> tuple[ModelSummary, list[LLMCall]]:
        history = await self.registry.iterations(run.run_id, run.current_iteration)
        summary, reply = await request_summary(self.nc, run, it, source, tokens_used(history, "tools"),
                                               self.llm_step_timeout_s)
        if reply.error and reply.llm_calls:
            await self.event(run.run_id, "llm_fallback", f"iteration {it.iteration}: no model summary from the tools LLM "
                             f"({reply.error}); summary.json holds the measured facts", it.iteration)
        return summary, await store_calls(self.registry, run.run_id, it.iteration, reply.llm_calls)

    async def _collect(self, run: RunRecord, it: IterationRecord) -> None:
        wake = self._wake.setdefault(run.run_id, asyncio.Event())
        results = await self.registry.seed_results(run.run_id, it.iteration, it.seeds)
        overdue = time.time() - it.started_at > self.config.planner.eval_timeout_s
        if len(results) < len(it.seeds) and not overdue:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout=5.0)  # a result, or poll the registry again
            except asyncio.TimeoutError:
                pass
            return
        evaluation = summarise(results, it.seeds)
        evaluation.plots = await store_plots(self.registry, run, it, evaluation)
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(r, state="evaluated", evaluation=evaluation))
        acc = evaluation.summary()
        mean = "n/a" if acc.mean is None else f"{acc.mean:.4f}"
        await self.event(run.run_id, "evaluated", f"iteration {it.iteration}: val_accuracy mean {mean} over {acc.n} seeds",
                         it.iteration, {"val_accuracy": msgspec.to_builtins(acc)})

    async def _reject(self, run: RunRecord, it: IterationRecord, result: ValidationResult) -> None:
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(r, state="rejected", validation=result))
        await self.event(run.run_id, "rejected", f"iteration {it.iteration}: rejected: {result.error}", it.iteration,
                         {"reason": result.reason, "error": result.error})

    async def _decide(self, run: RunRecord, it: IterationRecord) -> None:
        history = await self.registry.iterations(run.run_id, it.iteration)
        decision, best_it, best_score = decide(run.goal, history)
        calls: list[LLMCall] = []
        if decision.action == "iterate" and self.planning:  # budget left, target not met: the LLM's call
            assert run.dataset_facts is not None
            answer = await ask_plan(self.planning, self._context(run, history, best_it), run.dataset_facts,
                                    self._max_epochs(run), iteration=it.iteration,
                                    tokens_used=tokens_used(history, "planning"))
            calls = answer.calls
            if answer.value is not None:
                decision = merge_decision(decision, answer.value)
            elif run.goal.require_llm:  # the run ends here, its iteration decided with the reason
                why = f"at iteration {it.iteration} the planning LLM's decision could not be used ({answer.error})"
                decision = Decision(action="stop", status="failed", reasoning=required_error(why))
            else:
                await self.event(run.run_id, "llm_fallback", f"iteration {it.iteration}: the planning LLM's decision could "
                                 f"not be used ({answer.error}); the built-in search proposes next", it.iteration,
                                 {"error": answer.error})
        stored = await store_calls(self.registry, run.run_id, it.iteration, calls)
        now = time.time()
        await self.registry.update_iteration(run.run_id, it.iteration, lambda r: replace(
            r, state="decided", decision=decision, finished_at=now, llm_calls=[*r.llm_calls, *stored]))
        status = decision.status or "running"
        seeds_of = {h.iteration: h.seeds for h in history}
        for superseded in {it.iteration, run.best_iteration} - {best_it, None}:  # the best's weights alone are kept
            await drop_weights(self.registry, run.run_id, superseded, seeds_of.get(superseded, []))
        await self.registry.update_run(run.run_id, unless_ended(lambda r: replace(
            r, status=status, best_iteration=best_it, best_score=best_score,
            finished_at=now if decision.status else None, error=decision.reasoning if status == "failed" else r.error)))
        if decision.disagreement:
            await self.event(run.run_id, "disagreement", f"iteration {it.iteration}: {decision.disagreement}", it.iteration)
        await self.event(run.run_id, "decided", f"iteration {it.iteration}: {decision.action}: {decision.reasoning}",
                         it.iteration, {"action": decision.action, "proposer": decision.proposer,
                                        "score": iteration_score(it, run.goal.goal_statistic)})
        if decision.status:
            await self.event(run.run_id, "run_finished", f"run finished: {status}", data={"status": status})

    # ---- helpers ----
    def _max_epochs(self, run: RunRecord) -> int:
        return min(self.config.planner.max_epochs, run.goal.max_epochs)

    def _num_train(self, run: RunRecord) -> int:
        assert run.dataset_facts is not None
        return run.dataset_facts.num_train(self.config.data.val_fraction, run.goal.subset_size)

    def _context(self, run: RunRecord, history: list[IterationRecord], best_it: int | None) -> str:
        assert run.dataset_facts is not None
        return plan_context(run.goal, run.dataset_facts, self._num_train(run), history, best_it,
                            self._max_epochs(run), self.config.llm.history_limit)

    async def event(self, run_id: str, kind: str, message: str, iteration: int | None = None, data: dict | None = None) -> None:
        log.info(kind, message=message, iteration=iteration)  # one readable line; the data is in the registry
        await publish_event(self.nc, Event(run_id=run_id, kind=kind, message=message, iteration=iteration, data=data or {}))


def _code_generations(it: IterationRecord) -> int:
    """The tools LLM's code replies for this iteration so far, failed ones included."""
    return sum(1 for c in it.llm_calls if c.role == "tools" and c.purpose == "code")
