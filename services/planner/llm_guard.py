"""LLM trouble is never silent: each configured endpoint is checked when a run starts (an event
either way, the outcome kept in the run's record), and a goal with `require_llm` fails its run,
naming the LLM's failure, wherever a proposal, a decision or code would fall back."""

from __future__ import annotations

import time
from typing import Awaitable, Callable

import msgspec
import structlog

from shared.llm.check import check_endpoints, describe_check, required_error
from shared.llm.client import LLMSettings
from shared.registry.records import RunRecord, unless_ended
from shared.registry.store import Registry

log = structlog.get_logger()
Emit = Callable[..., Awaitable[None]]  # Planner.event


class LLMGuard:
    def __init__(self, registry: Registry, emit: Emit, roles: list[LLMSettings], check_timeout_s: float) -> None:
        self.registry, self.emit, self.roles, self.check_timeout_s = registry, emit, roles, check_timeout_s

    def pending(self, run: RunRecord) -> bool:
        """The check comes before the first proposal, once per run (a restarted planner repeats an
        unfinished one: it is cheap)."""
        return bool(self.roles) and run.current_iteration == 0 and run.llm_check is None

    async def check(self, run: RunRecord) -> None:
        calls = await check_endpoints(self.roles, self.check_timeout_s)
        await self.registry.update_run(run.run_id, lambda r: msgspec.structs.replace(r, llm_check=calls))
        failed = []
        for call, settings in zip(calls, self.roles):
            line = describe_check(call, settings, run.goal.require_llm)
            await self.emit(run.run_id, "llm_check", line, data={"role": call.role, "model": call.model,
                                                                 "base_url": settings.base_url, "outcome": call.outcome,
                                                                 "error": call.error})
            if call.outcome != "ok":
                failed.append(f"the {call.role} LLM {call.model} at {settings.base_url} failed its check "
                              f"({call.outcome}: {call.error})")
        if failed and run.goal.require_llm:
            await self.fail(run.run_id, required_error("; ".join(failed)))

    async def refuse(self, run: RunRecord, why: str) -> bool:
        """A fallback is about to happen for `why`: -> True (the run failed) when the goal requires the LLM."""
        if not run.goal.require_llm:
            return False
        await self.fail(run.run_id, required_error(why))
        return True

    async def fail(self, run_id: str, error: str) -> None:
        log.warning("run_failed", error=error)
        await self.registry.update_run(run_id, unless_ended(lambda r: msgspec.structs.replace(
            r, status="failed", error=error, finished_at=time.time())))
        await self.emit(run_id, "run_finished", f"run failed: {error}", data={"status": "failed"})
