"""Assembler service: model_config -> nn.Module source, answered over request/reply."""

from __future__ import annotations

import asyncio

import structlog

from shared.assemble import ConfigError, assemble
from shared import subjects
from shared.bus import connect, decode_request, encode, stop_event
from shared.config import Config, load_config
from shared.log import bind_run, configure_logging
from shared.messages import AssembleReply, AssembleRequest

log = structlog.get_logger()


def assemble_reply(request: AssembleRequest) -> AssembleReply:
    try:
        model = assemble(request.model_config)
    except ConfigError as exc:
        return AssembleReply(ok=False, error=str(exc))
    return AssembleReply(ok=True, class_name=model.class_name, source=model.source)


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("assembler", config.log_level)
    nc = nc or await connect(config.nats_url, "assembler")

    async def on_message(msg) -> None:
        request = await decode_request(msg, AssembleRequest)
        if request is None:
            return
        bind_run(request.run_id, iteration=request.iteration)
        reply = await asyncio.to_thread(assemble_reply, request)
        log.info("assembled", ok=reply.ok, error=reply.error, class_name=reply.class_name)
        await msg.respond(encode(reply))

    sub = await nc.subscribe(subjects.ASSEMBLE_SUBJECT, queue=subjects.ASSEMBLER_QUEUE, cb=on_message)
    log.info("assembler_ready")
    await (stop or stop_event()).wait()
    await sub.unsubscribe()
    await nc.drain()


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
