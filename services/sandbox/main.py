"""Sandbox service: answers validation requests by running the code in locked-down containers."""

from __future__ import annotations

import asyncio

import structlog

from shared.messaging import subjects
from shared.messaging.messages import ValidateRequest, ValidationResult
from shared.runtime.config import Config
from shared.runtime.service import Service
from shared.sandboxing.containers import stable_replica_name
from shared.sandboxing.runners import make_runner
from shared.sandboxing.validate import validate

log = structlog.get_logger()


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    async with Service("sandbox", config, stop=stop) as service:
        settings = service.config.sandbox
        runner = make_runner(service.config, owner=f"sandbox-{stable_replica_name()}")
        service.on_stop(runner.close)  # the warm containers go with the service
        removed = runner.remove_strays()
        boundary = runner.boundary  # runsc probed once, before the pool starts containers under it
        service.health_note = f"containers: {boundary.describe()}"
        runner.start_pool()

        async def check(request: ValidateRequest) -> ValidationResult:
            result = await asyncio.to_thread(
                validate, request, runner, settings.validate_timeout_s, settings.memory, settings.precheck)
            log.info("validated", ok=result.ok, reason=result.reason, duration_s=result.duration_s, flags=len(result.flags))
            return result

        await service.connect(nc)
        responder = service.responder(settings.concurrency)
        await responder.serve(subjects.VALIDATE_SUBJECT, subjects.SANDBOX_QUEUE, ValidateRequest, check)
        await service.run(image=settings.image, pool_size=settings.pool_size, concurrency=settings.concurrency,
                          precheck=settings.precheck, strays_removed=removed,
                          runtime=boundary.runtime, runtime_why=boundary.why)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
