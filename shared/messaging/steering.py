"""Steering a run by hand: the one client call for stop, pause, resume and queue a config, which
the CLI (`researcher stop|pause|resume|queue`) and the dashboard both make. The planner replica
driving the run answers (services/planner/steering.py); everything that keeps it from answering
is a SteerError whose message says what to do."""

from __future__ import annotations

from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from shared.errors import MessageError, SteerError
from shared.messaging import subjects
from shared.messaging.bus import decode, encode
from shared.messaging.messages import STOP_WAIT_S, TERMINAL_STATUSES, ErrorReply, SteerAnswer, SteerRequest
from shared.registry.store import Registry

STEER_TIMEOUT_S = STOP_WAIT_S + 5  # a stop is answered once the run has ended, within STOP_WAIT_S


async def steer(nc, request: SteerRequest, timeout: float = STEER_TIMEOUT_S) -> SteerAnswer:
    """Ask the planner driving `request.run_id` to take `request.action`; -> its answer (ok=False:
    not taken, with why: a paused run paused again, a config that cannot be built). The registry
    is read first, so an unknown or ended run is answered without asking anyone."""
    run_id, action = request.run_id, request.action
    run = await (await Registry.read(nc.jetstream())).get_run(run_id)
    if run is None:
        raise SteerError(run_id, action, f"no run {run_id!r} in the registry; `researcher runs` lists those there")
    if run.status in TERMINAL_STATUSES:
        raise SteerError(run_id, action, f"run {run_id} had already ended: {run.status}")
    try:
        reply = await nc.request(subjects.STEER_SUBJECT, encode(request), timeout=timeout)
    except (NoRespondersError, NatsTimeoutError):  # running, and no replica drives it
        raise SteerError(run_id, action, f"no planner answered for run {run_id}, which is still running: is the "
                         "stack's planner up (make ps)? A planner takes over a running run within seconds of "
                         "starting") from None
    try:
        return decode(reply.data, SteerAnswer, subjects.STEER_SUBJECT)
    except MessageError as exc:
        try:
            error = decode(reply.data, ErrorReply, subjects.STEER_SUBJECT).error
        except MessageError:
            error = f"the planner's answer could not be read ({exc})"
        raise SteerError(run_id, action, f"run {run_id}: {error}") from None
