"""Sandbox service: answers validation requests by running the code in locked-down containers."""

from __future__ import annotations

import asyncio

import structlog

from shared.sandboxing.validate import validate
from shared.messaging import subjects
from shared.messaging.bus import Responder, connect, stop_event
from shared.runtime.config import Config, load_config
from shared.sandboxing.containers import ContainerRunner, stable_replica_name
from shared.sandboxing.runners import make_runner
from shared.runtime.health import beat
from shared.runtime.log import configure_logging
from shared.messaging.messages import ValidateRequest, ValidationResult

log = structlog.get_logger()


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("sandbox", config.log_level)
    runner = make_runner(config, owner=f"sandbox-{stable_replica_name()}")
    removed = runner.remove_strays()
    runner.start_pool()
    try:
        await serve(runner, config, nc, stop, strays_removed=removed)
    finally:
        await asyncio.to_thread(runner.close)


async def serve(runner: ContainerRunner, config: Config, nc, stop: asyncio.Event | None, **ready_info) -> None:
    nc = nc or await connect(config.nats_url, "sandbox")
    stop = stop or stop_event()

    async def check(request: ValidateRequest) -> ValidationResult:
        result = await asyncio.to_thread(
            validate, request, runner, config.sandbox.validate_timeout_s, config.sandbox.memory, config.sandbox.precheck)
        log.info("validated", ok=result.ok, reason=result.reason, duration_s=result.duration_s, flags=len(result.flags))
        return result

    responder = Responder(nc, config.sandbox.concurrency)
    await responder.serve(subjects.VALIDATE_SUBJECT, subjects.SANDBOX_QUEUE, ValidateRequest, check)
    log.info("sandbox_ready", image=config.sandbox.image, pool_size=config.sandbox.pool_size,
             concurrency=config.sandbox.concurrency, precheck=config.sandbox.precheck, **ready_info)
    health = asyncio.create_task(beat(nc, stop))
    await stop.wait()
    await responder.close()  # the validations in flight finish before leaving
    await health
    await nc.drain()


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
