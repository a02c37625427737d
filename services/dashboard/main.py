"""The dashboard service: the registry and every run's events, served as live web pages.

    python -m services.dashboard.main     (compose's `dashboard`; `researcher run --dashboard`)

It connects as the "dashboard" role: it reads the registry and the events, and may ask a planner
to steer a run (the same request as `researcher stop/pause/resume/queue`), nothing else. The web
server (uvicorn) runs in the service's own event loop, on dashboard.host:dashboard.port; the
service's lifecycle (shared/runtime/service.py) stops it on SIGTERM like any other service.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
import uvicorn

from services.dashboard.app import make_app
from services.dashboard.live import Hub
from services.dashboard.records import Records
from shared.messaging.messages import SteerRequest
from shared.errors import MessageError
from shared.messaging.steering import SteerError, steer
from shared.registry.store import Registry
from shared.runtime.config import Config
from shared.runtime.service import Service

log = structlog.get_logger()
SHUTDOWN_S = 3.0  # open pages (event streams) are cut after this on the way out


class _Server(uvicorn.Server):
    """uvicorn in a service: the service's own signal handlers stop it, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def steering(nc):
    async def ask(run_id: str, action: str, by: str, config: dict[str, Any] | None) -> tuple[bool, str]:
        try:
            answer = await steer(nc, SteerRequest(run_id=run_id, action=action, by=by, config=config))
        except (SteerError, MessageError) as exc:  # MessageError: a request over its size limit, say
            return False, str(exc)
        return answer.ok, answer.message or f"{action}: {answer.status}"
    return ask


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    async with Service("dashboard", config, stop=stop) as service:
        await service.connect(nc, jetstream=True)
        settings = service.config.dashboard
        records = Records(await Registry.read(service.js, weights=False))
        hub = Hub(settings.events_kept, settings.runs_kept)
        hub.on_event(records.forget)
        await hub.subscribe(service.nc)
        app = make_app(records, hub, steering(service.nc), settings.hosts)
        server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                                        access_log=False, lifespan="off", timeout_graceful_shutdown=SHUTDOWN_S))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if serving.done():  # the port is taken, say: the service fails with uvicorn's reason
            await serving
            raise RuntimeError(f"the dashboard could not listen on {settings.host}:{settings.port}")

        async def stop_serving() -> None:
            server.should_exit = True
            await asyncio.wait_for(serving, SHUTDOWN_S + 5)

        service.on_stop(stop_serving)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
        await service.run(url=f"http://{settings.host}:{port}/", port=port)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
