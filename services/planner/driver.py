"""Drives one run: keeps up to `parallel` candidates in flight, each on its own state machine
(steps.py), promotes the promising ones to more epochs and seeds (fidelity.py), proposes new ones
as slots free up, and ends the run on the numbers at the full budget or when its compute is spent.

The candidates' records are read once, when a replica takes the run, and kept in memory: this
driver is the only writer while it holds the run's lease, so a step costs the same at candidate 500
as at candidate 5. Each pass reads the run record alone (a command may have stopped or paused the run:
steering.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Callable

import msgspec
import structlog

from services.planner import budgets, fidelity
from services.planner.decide import best_of, budget_decision, decide
from services.planner.final_test import FinalTest
from services.planner.llm_plan import plan_context
from services.planner.proposers import Abstained, Declined, Proposal, RunView, llm_turn
from services.planner.records import drop_weights, store_calls
from services.planner.steering import queued_proposal, taken_from_queue
from services.planner.steps import CandidateSteps
from shared.messaging import subjects
from shared.messaging.bus import encode, through_outages
from shared.messaging.messages import TERMINAL_STATUSES, Goal, RunEnded, SeedResult, TrainingRecipe, meets_target
from shared.registry.records import (Decision, IterationRecord, RungResult, RungSpec, RunRecord, oriented,
                                     unless_ended)

if TYPE_CHECKING:
    from services.planner.loop import Planner

log = structlog.get_logger()
replace = msgspec.structs.replace
IDLE_POLL_S = 5.0  # with nothing to do, the run record is read again this often (a stop by command)


def trial_of(it: IterationRecord, goal: Goal) -> fidelity.Trial:
    """A candidate as successive halving sees it: its ladder, the rung it is on, its scores there
    (the goal metric's mean, turned so that higher is better: successive halving ranks by maximum)."""
    rungs = [fidelity.Rung(r.index, r.epochs, tuple(r.seeds)) for r in it.rungs]
    reached = next((i for i, r in enumerate(rungs) if r.index == it.rung), len(rungs) - 1)
    score = lambda evaluation: oriented(metric_mean(evaluation, goal), goal.lower_is_better)  # noqa: E731
    scores: dict[int | None, float | None] = {p.index: score(p.evaluation) for p in it.passed}
    if it.state in ("evaluated", "parked") or (it.state == "decided" and it.evaluation is not None):
        scores[it.rung] = score(it.evaluation)
    return fidelity.Trial(number=it.iteration, rungs=rungs, reached=reached, scores=scores,
                          in_flight=it.in_flight or it.state == "evaluated", closed=it.state in ("rejected", "decided"))


def _is_verdict(h: IterationRecord) -> bool:
    """Closed by a verdict on the run: evaluated at the full budget, or rejected (at any rung)."""
    return h.state == "decided" and (h.rung is None or (h.validation is not None and not h.validation.ok))


def _epochs(config: dict) -> int:
    """A config's full-budget epochs, as its jobs read them (the recipe's default where it says none)."""
    try:
        return max(1, TrainingRecipe.from_model_config(config).epochs)
    except msgspec.ValidationError:  # settings that do not decode: the assembler rejects it anyway
        return TrainingRecipe().epochs


def metric_mean(evaluation, goal: Goal) -> float | None:
    """The mean of the goal's metric over an evaluation's seeds (any rung)."""
    return evaluation.summary(goal.goal_metric).mean if evaluation is not None else None


class RunDriver:
    def __init__(self, planner: "Planner", run_id: str) -> None:
        self.planner, self.run_id = planner, run_id
        self.registry, self.config = planner.registry, planner.config
        self.settings = planner.config.planner
        self.candidates: dict[int, IterationRecord] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.steps = CandidateSteps(self)
        self.final_test = FinalTest(self)
        self.run: RunRecord | None = None
        self._loaded = False
        self._progress = ""
        self._wake = asyncio.Event()  # a candidate changed state, or a seed result came
        self._results = asyncio.Condition()
        self._stop_asked: str | None = None  # `researcher stop`: why, until the next pass ends the run
        self._stop_asked_at = 0.0
        # pause or resume taken by hand on this replica: it overrules the record a pass read before
        # the write (None: the record says, as after a takeover)
        self._held: bool | None = None
        self._scheduled = asyncio.Event()  # set while no promotion or proposal is under way
        self._scheduled.set()
        self.unaggregated = budgets.Unaggregated()  # costs of seed results not in an evaluation yet

    # ---- the cache, written through ----
    def history(self) -> list[IterationRecord]:
        return [self.candidates[n] for n in sorted(self.candidates)]

    async def update(self, n: int, change: Callable[[IterationRecord], IterationRecord]) -> IterationRecord:
        self.candidates[n] = record = await self.registry.update_iteration(self.run_id, n, change)
        self._wake.set()
        return record

    async def event(self, kind: str, message: str, iteration: int | None = None, data: dict | None = None) -> None:
        await self.planner.event(self.run_id, kind, message, iteration, data)

    def ask_stop(self, why: str) -> None:
        """End the run as stopped at its next pass (its own task: never beside a pass in progress)."""
        self._stop_asked, self._stop_asked_at = why, time.time()
        self._wake.set()

    def hold(self, paused: bool) -> None:
        """Paused or resumed by hand (steering.py), after the run record says so."""
        self._held = paused
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def paused(self) -> bool:
        return self._held if self._held is not None else bool(self.run and self.run.paused)

    async def scheduled(self, timeout: float) -> None:
        """Until no promotion or proposal is under way (a pause waits for the one it came during)."""
        try:
            await asyncio.wait_for(self._scheduled.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def notify(self, result: SeedResult | None = None) -> None:
        """A seed result of this run was stored (Planner.on_result)."""
        if result is not None:
            self.unaggregated.add(result)
        self._wake.set()
        asyncio.ensure_future(self._notify_results())

    async def _notify_results(self) -> None:
        async with self._results:
            self._results.notify_all()

    async def results_arrived(self, timeout: float) -> None:
        """Until a seed result of this run is stored, or `timeout` seconds."""
        async with self._results:
            try:
                await asyncio.wait_for(self._results.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # ---- the run's pass ----
    async def step(self) -> bool:
        """One pass over the run; -> False once it has ended (its candidates' tasks cancelled)."""
        self._wake.clear()
        run = self.run = await self.registry.get_run(self.run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            await self.close()
            if run is not None:
                await self.registry.forget_running(self.run_id)
            return False
        if not self._loaded:
            self.candidates = {h.iteration: h for h in await self.registry.iterations(self.run_id, run.current_iteration)}
            self._loaded = True
        if run.test is not None:  # ending: its best candidate on the test split
            await self.close()  # the candidates' own steps are over
            if self._stop_asked is not None and self._stop_asked_at < run.test.started_at:
                self._stop_asked = None  # asked as a pass was ending the run: the ending under way answers it
            await self.final_test.step(run, self._stop_asked)
            return True
        if self._stop_asked is not None:
            why, self._stop_asked = self._stop_asked, None  # a second stop, while testing, ends it untested
            await self.end("stopped", why)
            return True  # the next pass finds it ended (or testing), and closes
        if run.budget_epochs is None:  # fixed at the first step: the stack's epoch cap may change later
            budget = fidelity.budget_epochs(run.goal, self.max_epochs(run))
            run = self.run = await self.set_run(lambda r: replace(r, budget_epochs=r.budget_epochs or budget))
        guard = self.planner.guard
        if guard.pending(run):
            await guard.check(run)
            return True
        self._reap()
        for it in self.history():
            if it.in_flight and it.iteration not in self.tasks:
                self.tasks[it.iteration] = asyncio.create_task(self._candidate(it.iteration),
                                                               name=f"run-{self.run_id}-{it.iteration}")
        if self.paused():  # the candidates in flight go on; no verdict, promotion, proposal or end until resumed
            for it in self.history():
                if it.rung is not None and it.state == "evaluated":
                    await self._park(it)  # a cheap rung's result, ranked: parking decides nothing
            await self._report_progress()
            await self._idle()
            return True
        for it in self.history():
            if it.state in ("evaluated", "rejected") and not await self._verdict(self.run, it):
                return True  # the run ended: the next pass closes it
        if meets_target(self.run.best_score, run.goal.target_value, run.goal.lower_is_better):  # a verdict cut short by a crash
            await self.end("goal_achieved", f"the best full evaluation, candidate {self.run.best_iteration}, "
                                            f"met the target ({self.run.best_score:.4f})")
            return True
        if await self._over_budget(run):
            return True  # the run ended: the next pass closes it
        if await self._schedule(run):
            await self._report_progress()
            await self._idle()
        return True

    async def _idle(self) -> None:
        """Until a candidate changes or a result comes, or IDLE_POLL_S (a stop by command)."""
        try:
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()

    def _reap(self) -> None:
        for n, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[n]
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # a fault of the machinery: the run fails with it (Planner._drive)

    async def _candidate(self, n: int) -> None:
        """Advance candidate `n` until it is measured at its rung or rejected."""
        while self.candidates[n].in_flight:
            # NATS restarting: the step is redone from the latest record once it is back
            await through_outages(lambda: self.steps.advance(self.run, self.candidates[n]), "candidate step",
                                  give_up_s=math.inf)
            self._wake.set()

    # ---- verdicts ----
    async def _verdict(self, run: RunRecord, it: IterationRecord) -> bool:
        """A candidate measured at a rung, or rejected: parked, or closed with a decision on the run
        (a full evaluation, or a rejection: both count towards patience). -> False when the
        decision ended the run. The run's best is written before the candidate is closed, so a
        planner killed in between redoes the same verdict."""
        if it.rung is not None and it.state == "evaluated":
            await self._park(it)
            return True
        verdicts = sorted((h for h in self.history() if _is_verdict(h) and h.iteration != it.iteration),
                          key=lambda h: (h.finished_at or 0.0, h.iteration))
        decision, best_it, best_score = decide(run.goal, [*verdicts, it])
        before = run.best_iteration
        self.run = await self.set_run(lambda r: replace(r, best_iteration=best_it, best_score=best_score))
        now = time.time()
        await self.update(it.iteration, lambda r: replace(r, state="decided", decision=decision,
                                                          finished_at=r.finished_at or now))
        if before is not None and best_it != before:  # the best's weights alone are kept
            old = self.candidates.get(before)
            await drop_weights(self.registry, self.run_id, before, old.seeds if old else [])
        if best_it != it.iteration and it.evaluation is not None:
            await drop_weights(self.registry, self.run_id, it.iteration, it.seeds)
        await self.event("decided", f"candidate {it.iteration}: {decision.action}: {decision.reasoning}", it.iteration,
                         {"action": decision.action, "score": it.goal_score(run.goal)})
        if decision.status:
            await self.end(decision.status, decision.reasoning)
            return False
        return True

    async def _park(self, it: IterationRecord) -> None:
        goal = self.run.goal if self.run else None
        assert goal is not None
        trials = [trial_of(h, goal) for h in self.history()]
        ranked = fidelity.ranked(trials, it.rung)  # the order promotion uses
        place = next((i + 1 for i, t in enumerate(ranked) if t.number == it.iteration), None)
        await self.update(it.iteration, lambda r: replace(r, state="parked"))
        score = metric_mean(it.evaluation, goal)
        where = (f"{score:.4f}, {_ordinal(place)} of {len(ranked)} at this rung" if score is not None and place
                 else "no seed succeeded")
        await self.event("parked", f"candidate {it.iteration}: rung {it.rung} {goal.goal_metric} mean {where}; "
                         "waits to earn the next rung", it.iteration, {"rung": it.rung, "score": score, "place": place})

    # ---- what to start ----
    def max_epochs(self, run: RunRecord) -> int:
        return min(self.settings.max_epochs, run.goal.max_epochs)

    def budget(self, run: RunRecord) -> int:
        return run.budget_epochs or fidelity.budget_epochs(run.goal, self.max_epochs(run))

    def _ladder(self, run: RunRecord, epochs: int) -> list[fidelity.Rung]:
        return fidelity.ladder(epochs, run.goal.num_seeds, self.settings.lower_rungs, self.settings.reduction_factor)

    async def _schedule(self, run: RunRecord) -> bool:
        """Promote, propose, or end the run when nothing more fits its budget; -> False when it ended."""
        self._scheduled.clear()
        try:
            return await self._plan(run)
        finally:
            self._scheduled.set()

    async def _plan(self, run: RunRecord) -> bool:
        biggest = self._ladder(run, self.max_epochs(run))
        trials = [trial_of(h, run.goal) for h in self.history()]
        plan = fidelity.plan(trials, parallel=run.goal.parallel or self.settings.parallel, budget=self.budget(run),
                             new_cost=biggest[0].cost, reserve=biggest[-1].cost if len(biggest) > 1 else 0,
                             eta=self.settings.reduction_factor,
                             target=oriented(run.goal.target_value, run.goal.lower_is_better))
        for p in plan.promote:
            if self.paused():  # by hand, since this pass began
                return True
            await self._promote(self.candidates[p.trial.number], trials, p.to, plan.forced)
        for _ in range(plan.propose):
            if self.paused():
                return True
            if not await self._propose():
                return False
        if not plan.promote and not plan.propose and not any(t.in_flight for t in trials):
            used = fidelity.spent(trials)
            _, best_score = best_of(run.goal, self.history())
            decision = budget_decision(run.goal, best_score, f"the compute budget is spent: {used} of "
                                       f"{self.budget(run)} seed-epochs used, too few left for another candidate or promotion")
            await self.end(decision.status or "max_iterations", decision.reasoning)
            return False
        return True

    async def _over_budget(self, run: RunRecord) -> bool:
        """End the run as budget_spent once it has used one of its goal's own limits (CPU or GPU
        seconds, LLM tokens); -> whether it did, or waits to (nothing new may start then)."""
        goal = run.goal
        if goal.max_cpu_s is None and goal.max_gpu_s is None and goal.max_llm_tokens is None:
            return False
        used = budgets.spent(run, self.history(), self.unaggregated.spent(self.candidates))
        limit = budgets.reached(goal, used)
        if limit is None:
            return False
        if self.unaggregated.complete(self.candidates):  # judged first: its compute is spent already
            await self._idle()
            return True
        _, best_score = best_of(goal, self.history())
        await self.end("budget_spent", budget_decision(goal, best_score, limit, status="budget_spent").reasoning)
        return True

    async def _promote(self, it: IterationRecord, trials: list[fidelity.Trial], nxt: fidelity.Rung,
                       forced: bool) -> None:
        trial = next(t for t in trials if t.number == it.iteration)
        assert it.evaluation is not None and self.run is not None
        goal = self.run.goal
        score = metric_mean(it.evaluation, goal)
        ranked = fidelity.ranked(trials, it.rung)
        place = next(i + 1 for i, t in enumerate(ranked) if t.number == it.iteration)
        if forced:
            why = "the end game: the best cheap result, straight to the full budget while the budget allows it"
        elif meets_target(score, goal.target_value, goal.lower_is_better):
            why = f"its rung {it.rung} {goal.goal_metric} {score:.4f} already meets the target"
        else:
            shown = "n/a" if score is None else f"{score:.4f}"
            why = (f"its rung {it.rung} {goal.goal_metric} {shown} is {_ordinal(place)} of {len(ranked)}, in the top "
                   f"1/{self.settings.reduction_factor}")
        passed = RungResult(index=it.rung, epochs=trial.rung.epochs, seeds=it.seeds, evaluation=it.evaluation,
                            started_at=it.started_at, finished_at=it.finished_at or time.time())
        await self.update(it.iteration, lambda r: replace(r, state="validated", rung=nxt.index, seeds=list(nxt.seeds),
                                                          evaluation=None, passed=[*r.passed, passed], attempts=0,
                                                          finished_at=None))
        await self.event("promoted", f"candidate {it.iteration}: promoted to {nxt.describe()}: {why}", it.iteration,
                         {"rung": nxt.index, "epochs": nxt.epochs, "seeds": list(nxt.seeds), "forced": forced})

    async def _propose(self) -> bool:
        """One new candidate; -> False when the planning LLM stopped the run (or its failure did)."""
        run = self.run
        assert run is not None and run.dataset_facts is not None
        n = run.current_iteration + 1
        history = self.history()
        used = fidelity.spent([trial_of(h, run.goal) for h in history])
        context = plan_context(run.goal, run.dataset_facts, self.planner.num_train(run), history, run.best_iteration,
                               self.max_epochs(run), self.config.llm.history_limit, spent=used, budget=self.budget(run))
        view = RunView(run=run, history=history, number=n, max_epochs=self.max_epochs(run),
                       num_train=self.planner.num_train(run), context=context)
        answer, queued = None, queued_proposal(run)  # a config queued by hand goes first
        if queued is not None:
            answer = queued[0]
        elif self.planner.planning_llm is not None and llm_turn(n, self.settings.llm_share):
            answer = await self.planner.planning_llm.propose(view)
        own_calls = []
        if isinstance(answer, Declined):
            if await self.planner.guard.refuse(run, f"at candidate {n} {answer.why}"):
                return False
            await self.event("llm_fallback", f"candidate {n}: {answer.why}; the built-in search proposes instead", n,
                             {"error": answer.why})
            own_calls = answer.calls
        if isinstance(answer, (Abstained, Proposal)) and answer.decided_after is not None:
            await self._record_decision(answer.decided_after, answer.decision, answer.calls)
            if isinstance(answer, Abstained) and answer.decision.status:
                await self.end(answer.decision.status, answer.decision.reasoning)
                return False
        elif isinstance(answer, Proposal):
            own_calls = answer.calls
        proposal = answer if isinstance(answer, Proposal) else await self.planner.builtin.propose(view)
        rungs = self._ladder(run, _epochs(proposal.model_config))
        first = rungs[0]
        left = self.budget(run) - used
        if first is not rungs[-1] and first.cost + rungs[-1].cost > left >= rungs[-1].cost:
            first = rungs[-1]  # a budget too small for a cheap rung and the full one: the full one alone
        record = IterationRecord(run_id=run.run_id, iteration=n, model_config=proposal.model_config,
                                 search_params=proposal.search_params, proposer=proposal.proposer,
                                 seeds=list(first.seeds), rung=first.index, reasoning=proposal.reasoning,
                                 ladder=[RungSpec(index=r.index, epochs=r.epochs, seeds=list(r.seeds)) for r in rungs],
                                 llm_calls=await store_calls(self.registry, run.run_id, n, own_calls))
        # the number first: a planner that dies before the record is written never reuses it
        taken = queued[1] if queued else None
        self.run = await self.set_run(lambda r: replace(r, current_iteration=max(r.current_iteration, n),
                                                        queued=taken_from_queue(r, taken)))
        await self.registry.put_iteration(record)
        self.candidates[n] = record
        by = {"llm": "the planning LLM", "user": "the user"}.get(proposal.proposer, "the built-in search")
        why = f": {proposal.reasoning}" if proposal.reasoning else ""
        await self.event("proposed", f"candidate {n}: {by} proposed {proposal.describe()}, first at "
                         f"{first.describe()}{why}", n,
                         {"model_config": proposal.model_config, "proposer": proposal.proposer, "rung": first.index})
        return True

    async def _record_decision(self, n: int, decision: Decision | None, calls: list) -> None:
        stored = await store_calls(self.registry, self.run_id, n, calls)
        if n in self.candidates and decision is not None:
            await self.update(n, lambda r: replace(r, decision=decision, llm_calls=[*r.llm_calls, *stored]))
        if decision is not None and decision.disagreement:
            await self.event("disagreement", f"candidate {n}: {decision.disagreement}", n)

    # ---- the run ----
    async def set_run(self, change: Callable[[RunRecord], RunRecord]) -> RunRecord:
        return await self.registry.update_run(self.run_id, unless_ended(change))

    async def end(self, status: str, reason: str) -> None:
        """End the run with `status`: first its best candidate is tested on the test split (the run
        stays running meanwhile: final_test.py), unless it failed or nothing was evaluated."""
        assert self.run is not None
        if self.paused() and status not in ("stopped", "failed"):
            return  # paused by hand during this pass: held; once resumed, the search's next pass decides again
        if not await self.final_test.start(self.run, status, reason):
            await self.finish(status, reason)

    async def finish(self, status: str, reason: str) -> None:
        now = time.time()
        await self.set_run(lambda r: replace(r, status=status, reason=reason, finished_at=now,
                                              error=reason if status == "failed" else r.error))
        await self.event("run_finished", f"run finished: {status}: {reason}", data={"status": status})
        # the jobs of candidates still in flight need no evaluator now
        await self.planner.nc.publish(subjects.RUN_ENDED_SUBJECT, encode(RunEnded(run_id=self.run_id, status=status)))

    async def _report_progress(self) -> None:
        """An event when the candidates in flight or the compute used change."""
        run = self.run
        assert run is not None
        flying = [h for h in self.history() if h.in_flight]
        used = fidelity.spent([trial_of(h, run.goal) for h in self.history()])
        parts = [f"#{h.iteration} {'full' if h.rung is None else f'rung {h.rung}'}" for h in flying]
        paused = self.paused()
        line = (f"{'paused by hand; ' if paused else ''}in flight: {', '.join(parts) or 'none'}; "
                f"compute {used}/{self.budget(run)} seed-epochs")
        if line != self._progress:
            self._progress = line
            await self.event("progress", line, data={"in_flight": [h.iteration for h in flying], "spent": used,
                                                      "budget": self.budget(run), "paused": paused})


def _ordinal(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
