"""Assembler service: model_config -> nn.Module source, and the tools LLM's model summaries,
answered over request/reply (several at once: an LLM call may take a while)."""

from __future__ import annotations

import asyncio

import structlog

from services.assembler.codegen import assemble_code, summarise_code
from shared.messaging import subjects
from shared.messaging.bus import Responder, connect, stop_event
from shared.runtime.config import Config, load_config
from shared.llm.client import LLMClient, llm_settings
from shared.runtime.health import beat
from shared.runtime.log import configure_logging
from shared.messaging.messages import AssembleRequest, SummaryRequest

log = structlog.get_logger()
CONCURRENCY = 8  # requests in progress per replica


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("assembler", config.log_level)
    nc = nc or await connect(config.nats_url, "assembler")
    settings = llm_settings(config, "tools")
    tools = LLMClient(settings) if settings else None

    def with_tools(work):
        async def answer(request):
            reply = await work(request, tools)
            log.info("answered", request=type(request).__name__, ok=reply.ok, error=reply.error,
                     llm_calls=[c.outcome for c in reply.llm_calls])
            return reply
        return answer

    responder = Responder(nc, CONCURRENCY)
    await responder.serve(subjects.ASSEMBLE_SUBJECT, subjects.ASSEMBLER_QUEUE, AssembleRequest, with_tools(assemble_code))
    await responder.serve(subjects.SUMMARY_SUBJECT, subjects.ASSEMBLER_QUEUE, SummaryRequest, with_tools(summarise_code))
    log.info("assembler_ready", tools_llm=settings.model if settings else None)
    stop = stop or stop_event()
    health = asyncio.create_task(beat(nc, stop))
    await stop.wait()
    await responder.close()
    await health
    if tools:
        await tools.close()
    await nc.drain()


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
