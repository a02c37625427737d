"""Assembler service: model_config -> nn.Module source, and the tools LLM's model summaries,
answered over request/reply (several at once: an LLM call may take a while)."""

from __future__ import annotations

import asyncio

import structlog

from services.assembler.codegen import assemble_code, summarise_code
from shared import subjects
from shared.bus import connect, decode_request, encode, stop_event
from shared.config import Config, load_config
from shared.llm import LLMClient, llm_settings
from shared.health import beat
from shared.log import bind_run, configure_logging
from shared.messages import AssembleRequest, SummaryRequest

log = structlog.get_logger()
CONCURRENCY = 8  # requests in progress per replica


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("assembler", config.log_level)
    nc = nc or await connect(config.nats_url, "assembler")
    settings = llm_settings(config, "tools")
    tools = LLMClient(settings) if settings else None
    slots = asyncio.Semaphore(CONCURRENCY)
    running: set[asyncio.Task] = set()

    async def answer(msg, type_, work) -> None:
        async with slots:
            request = await decode_request(msg, type_)
            if request is None:
                return
            bind_run(request.run_id, iteration=request.iteration)
            reply = await work(request, tools)
            log.info("answered", subject=msg.subject, ok=reply.ok, error=reply.error,
                     llm_calls=[c.outcome for c in reply.llm_calls])
            await msg.respond(encode(reply))

    def spawn(type_, work):
        async def on_message(msg) -> None:
            task = asyncio.create_task(answer(msg, type_, work))
            running.add(task)
            task.add_done_callback(running.discard)
        return on_message

    subs = [await nc.subscribe(subjects.ASSEMBLE_SUBJECT, queue=subjects.ASSEMBLER_QUEUE, cb=spawn(AssembleRequest, assemble_code)),
            await nc.subscribe(subjects.SUMMARY_SUBJECT, queue=subjects.ASSEMBLER_QUEUE, cb=spawn(SummaryRequest, summarise_code))]
    log.info("assembler_ready", tools_llm=settings.model if settings else None)
    stop = stop or stop_event()
    health = asyncio.create_task(beat(nc, stop))
    await stop.wait()
    for sub in subs:
        await sub.unsubscribe()
    await health
    await asyncio.gather(*running, return_exceptions=True)  # finish what was asked
    if tools:
        await tools.close()
    await nc.drain()


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
