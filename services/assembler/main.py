"""Assembler service: model_config -> nn.Module source, and the tools LLM's model summaries,
answered over request/reply (several at once: an LLM call may take a while)."""

from __future__ import annotations

import asyncio

import structlog

from services.assembler.codegen import assemble_code, summarise_code
from shared.llm.client import LLMClient, llm_settings
from shared.messaging import subjects
from shared.messaging.messages import AssembleRequest, SummaryRequest
from shared.runtime.config import Config
from shared.runtime.service import Service

log = structlog.get_logger()


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    async with Service("assembler", config, stop=stop) as service:
        settings = llm_settings(service.config, "tools")
        tools = LLMClient(settings) if settings else None
        if tools:
            service.on_stop(tools.close)

        def with_tools(work):
            async def answer(request):
                reply = await work(request, tools)
                log.info("answered", request=type(request).__name__, ok=reply.ok, error=reply.error,
                         llm_calls=[c.outcome for c in reply.llm_calls])
                return reply
            return answer

        await service.connect(nc)
        responder = service.responder(service.config.assembler.concurrency)  # both subjects share the slots
        await responder.serve(subjects.ASSEMBLE_SUBJECT, subjects.ASSEMBLER_QUEUE, AssembleRequest, with_tools(assemble_code))
        await responder.serve(subjects.SUMMARY_SUBJECT, subjects.ASSEMBLER_QUEUE, SummaryRequest, with_tools(summarise_code))
        await service.run(tools_llm=settings.model if settings else None)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
