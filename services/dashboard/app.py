"""The dashboard's web application (Starlette): pages rendered on the server, live by server-sent events.

Pages are plain HTML from Jinja2 templates with autoescaping, so a goal text, an LLM reply or
generated code shows as text and never runs. One small script (static/live.js, no build step)
follows a page's events and refreshes its live part; without JavaScript every page still works,
a reload away. The Content-Security-Policy allows scripts from the dashboard itself only.

Steering (stop, pause, resume, queue a config) goes through shared.messaging.steering, as the CLI's
does; `by` names the person (the name given on the page), the dashboard and the address it came from.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode, urlsplit

import jinja2
import msgspec
import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.dashboard import views
from services.dashboard.figures import Figures
from services.dashboard.live import ALL, Hub
from services.dashboard.records import Records
from shared.messaging.messages import RUN_ID
from shared.messaging.steering import parse_config

log = structlog.get_logger()
HERE = Path(__file__).parent
NAME_COOKIE = "researcher_name"
RUNS_SHOWN = 100  # runs on the runs page, the newest
MAX_FOLLOWERS = 256  # open event streams (a page each)
STEER_ACTIONS = ("stop", "pause", "resume", "queue")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
Steer = Callable[[str, str, str, dict[str, Any] | None], Awaitable[tuple[bool, str]]]


def make_app(records: Records, hub: Hub, steer: Steer | None, hosts: list[str] | None = None) -> Starlette:
    """`steer(run_id, action, by, config) -> (ok, message)`; None: a read-only dashboard. `hosts`: the
    names a request may give in its Host header (dashboard.allowed_hosts)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    figures = Figures(records)

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        started = time.perf_counter()
        body = env.get_template(template).render(steering=steer is not None, **context)
        rendered_ms = (time.perf_counter() - started) * 1000
        return HTMLResponse(body, status, headers={**SECURITY_HEADERS, "Server-Timing": f"render;dur={rendered_ms:.1f}"})

    async def loaded(request: Request):
        run_id = request.path_params["run_id"]
        found = await records.run(run_id) if RUN_ID.match(run_id) else None
        if found is None:
            raise HTTPException(404, f"no run {run_id!r} in the registry")
        return found

    async def listed() -> dict[str, Any]:
        """The newest RUNS_SHOWN runs, each with what it spent (finished candidates come from the cache)."""
        runs = list(reversed(await records.runs()))
        shown = runs[:RUNS_SHOWN]
        candidates = await asyncio.gather(*(records.iterations(run) for run in shown))
        return {"runs": [views.run_row(run, its) for run, its in zip(shown, candidates)],
                "older": max(0, len(runs) - RUNS_SHOWN)}

    async def runs_page(request: Request) -> Response:
        return page("runs.html", title="runs", **await listed())

    async def runs_fragment(request: Request) -> Response:
        return page("_runs.html", **await listed())

    async def run_page(request: Request) -> Response:
        """A run not in the registry yet may be a goal just submitted: its page says so and waits for
        the run's first event (live.js reloads it then)."""
        run_id = request.path_params["run_id"]
        found = await records.run(run_id) if RUN_ID.match(run_id) else None
        if found is None and RUN_ID.match(run_id):
            return page("error.html", 404, title="404", waiting=run_id, message=(
                f"no run {run_id!r} in the registry (yet: a goal just submitted appears once a planner takes "
                "it; this page follows it and shows the run when it starts)"))
        if found is None:
            raise HTTPException(404, f"no run {run_id!r} in the registry")
        run, iterations = found
        return page("run.html", title=f"run {run.run_id}", run=views.run_view(run, iterations),
                    events=[views.event_row(e) for e in reversed(hub.recent(run.run_id))],
                    said=request.query_params.get("said"), ok=request.query_params.get("ok") == "1",
                    name=request.cookies.get(NAME_COOKIE, ""))

    async def run_live(request: Request) -> Response:
        run, iterations = await loaded(request)
        return page("_live.html", run=views.run_view(run, iterations))

    async def stream(request: Request) -> Response:
        run_id = request.path_params.get("run_id", ALL)
        if run_id != ALL and not RUN_ID.match(run_id):
            raise HTTPException(404, f"no run {run_id!r} in the registry")
        if hub.followers >= MAX_FOLLOWERS:
            raise HTTPException(503, f"{hub.followers} pages follow the events already, the most this dashboard "
                                     "serves; reload later")

        async def events():
            async for event in hub.follow(run_id):
                yield {"event": "event", "data": views.event_json(event)}

        return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})

    async def run_plot(request: Request) -> Response:
        run, iterations = await loaded(request)
        which = request.path_params["which"]
        if which not in Figures.RUN_PLOTS:
            raise HTTPException(404, f"no plot {which!r}: there are {', '.join(Figures.RUN_PLOTS)}")
        return _png(await figures.run_figure(which, run, iterations))

    def candidate_of(request: Request, run, iterations):
        n = request.path_params["n"]
        it = next((it for it in iterations if it.iteration == n), None)
        if it is None:
            raise HTTPException(404, f"run {run.run_id} has no candidate {n} (it has {len(iterations)})")
        return it

    async def candidate_page(request: Request) -> Response:
        run, iterations = await loaded(request)
        it = candidate_of(request, run, iterations)
        code = await _text(records, it.code_artifact)
        base = views.incumbent(iterations, it, run)
        base_code = await _text(records, base.code_artifact) if base is not None else None
        diff = (views.diff_lines(base_code, code, f"candidate {base.iteration}", f"candidate {it.iteration}")
                if base is not None and base_code is not None and code is not None else [])
        return page("candidate.html", title=f"candidate {it.iteration} of {run.run_id}", run=views.run_row(run),
                    c=views.candidate_view(run, iterations, it), code=code, base=base.iteration if base else None,
                    diff=diff)

    async def candidate_plot(request: Request) -> Response:
        run, iterations = await loaded(request)
        it = candidate_of(request, run, iterations)
        data = await figures.candidate_plot(request.path_params["name"], run, it)
        if data is None:
            raise HTTPException(404, f"candidate {it.iteration} has no plot {request.path_params['name']!r} (yet)")
        return _png(data)

    async def exchange_page(request: Request) -> Response:
        run, iterations = await loaded(request)
        it = candidate_of(request, run, iterations)
        k = request.path_params["k"]
        if not 0 <= k < len(it.llm_calls):
            raise HTTPException(404, f"candidate {it.iteration} has no LLM exchange {k} (it has {len(it.llm_calls)})")
        call = it.llm_calls[k]
        raw = await records.artifact(call.exchange) if call.exchange else None
        exchange = _exchange(raw)
        return page("exchange.html", title=f"LLM exchange {k} of candidate {it.iteration}", run=views.run_row(run),
                    iteration=it.iteration, call=msgspec.to_builtins(call), exchange=exchange)

    async def steer_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if steer is None:
            raise HTTPException(403, "this dashboard is read-only")
        if not _same_origin(request):
            raise HTTPException(403, "a steering request from another site's page is refused")
        form = await request.form()
        action, name = str(form.get("action", "")), " ".join(str(form.get("name", "")).split())[:80]
        if action not in STEER_ACTIONS:
            raise HTTPException(400, f"unknown action {action!r}: one of {', '.join(STEER_ACTIONS)}")
        if not RUN_ID.match(run_id):
            raise HTTPException(404, f"no run {run_id!r} in the registry")
        config = None
        if action == "queue":
            config, problem = _config(str(form.get("config", "")))
            if problem:
                return _back(run_id, False, problem, name)
        by = f"{name or 'someone'} via the dashboard from {request.client.host if request.client else 'unknown'}"
        ok, message = await steer(run_id, action, by, config)
        log.info("steered", run_id=run_id, action=action, by=by, ok=ok)
        return _back(run_id, ok, message, name)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return page("error.html", exc.status_code, title=str(exc.status_code), message=exc.detail)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("page_failed", path=request.url.path, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return page("error.html", 500, title="500", message=f"this page failed: {type(exc).__name__}: {exc} "
                                                              "(the dashboard's log has the details)")

    routes = [
        Route("/", runs_page), Route("/fragments/runs", runs_fragment), Route("/stream", stream),
        Route("/healthz", health), Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/runs/{run_id}", run_page), Route("/runs/{run_id}/live", run_live),
        Route("/runs/{run_id}/stream", stream), Route("/runs/{run_id}/steer", steer_run, methods=["POST"]),
        Route("/runs/{run_id}/plots/{which}.png", run_plot),
        Route("/runs/{run_id}/candidates/{n:int}", candidate_page),
        Route("/runs/{run_id}/candidates/{n:int}/plots/{name}", candidate_plot),
        Route("/runs/{run_id}/candidates/{n:int}/llm/{k:int}", exchange_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["127.0.0.1", "localhost"])])


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def _text(records: Records, name: str | None) -> str | None:
    data = await records.artifact(name) if name else None
    return data.decode("utf-8", errors="replace") if data is not None else None


def _exchange(raw: bytes | None) -> dict[str, Any]:
    """An exchange artifact's messages and reply; what cannot be read is said, not hidden."""
    if raw is None:
        return {"messages": [], "reply": None, "problem": "the exchange's artifact is not in the registry"}
    try:
        data = json.loads(raw)
        return {"messages": list(data.get("messages") or []), "reply": data.get("reply"), "problem": None}
    except (ValueError, AttributeError) as exc:
        return {"messages": [], "reply": raw.decode("utf-8", errors="replace"), "problem": f"not JSON: {exc}"}


def _config(text: str) -> tuple[dict[str, Any] | None, str | None]:
    if not text.strip():
        return None, "paste a model config (JSON or YAML) to queue"
    try:
        return parse_config(text, "typed in"), None
    except ValueError as exc:
        return None, str(exc)


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on a cross-site form post: it must name this dashboard (host and port)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _back(run_id: str, ok: bool, message: str, name: str) -> Response:
    response = RedirectResponse(f"/runs/{run_id}?{urlencode({'said': message, 'ok': int(ok)})}", status_code=303)
    if name:
        response.set_cookie(NAME_COOKIE, name, max_age=365 * 86400, samesite="strict", httponly=True)
    return response
