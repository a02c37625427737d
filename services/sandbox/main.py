"""Sandbox service: answers validation requests by running the code in locked-down containers."""

from __future__ import annotations

import asyncio

import structlog

from services.sandbox.validate import validate
from shared import subjects
from shared.bus import connect, decode_request, encode, stop_event
from shared.config import Config, load_config
from shared.containers import ContainerRunner, Limits, stable_replica_name
from shared.health import beat
from shared.log import bind_run, configure_logging
from shared.messages import ValidateRequest

log = structlog.get_logger()


def sandbox_limits(config: Config) -> Limits:
    s = config.sandbox
    return Limits(image=s.image, memory=s.memory, cpus=s.cpus, pids=s.pids, tmpfs_size=s.tmpfs_size,
                  tmpfs_inodes=s.tmpfs_inodes, nofile=s.nofile, fsize_bytes=s.fsize_bytes,
                  max_output_bytes=s.max_output_bytes, max_total_output_bytes=s.max_total_output_bytes,
                  runtime=s.runtime)


def make_runner(config: Config, owner: str) -> ContainerRunner:
    s = config.sandbox
    return ContainerRunner(sandbox_limits(config), owner=owner, pool_size=s.pool_size,
                           max_idle_s=s.pool_max_idle_s, max_job_s=s.validate_timeout_s, warm_flops=True)


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
    slots = asyncio.Semaphore(config.sandbox.concurrency)
    tasks: set[asyncio.Task] = set()

    async def answer(msg) -> None:
        async with slots:
            request = await decode_request(msg, ValidateRequest)
            if request is None:
                return
            bind_run(request.run_id, iteration=request.iteration)
            result = await asyncio.to_thread(
                validate, request, runner, config.sandbox.validate_timeout_s, config.sandbox.memory, config.sandbox.precheck)
            log.info("validated", ok=result.ok, reason=result.reason, duration_s=result.duration_s, flags=len(result.flags))
            await msg.respond(encode(result))

    async def on_message(msg) -> None:  # one task per request, bounded by `slots`
        task = asyncio.create_task(answer(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sub = await nc.subscribe(subjects.VALIDATE_SUBJECT, queue=subjects.SANDBOX_QUEUE, cb=on_message)
    log.info("sandbox_ready", image=config.sandbox.image, pool_size=config.sandbox.pool_size,
             concurrency=config.sandbox.concurrency, precheck=config.sandbox.precheck, **ready_info)
    health = asyncio.create_task(beat(nc, stop))
    await stop.wait()
    await sub.unsubscribe()
    await health
    if tasks:
        await asyncio.wait(tasks)  # finish the validations in flight before leaving
    await nc.drain()


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
