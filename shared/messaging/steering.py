"""Steering a run by hand: the one client call for stop, pause, resume and queue a config, which
the CLI (`researcher stop|pause|resume|queue`) and the dashboard both make. The planner replica
driving the run answers (services/planner/steering.py); everything that keeps it from answering
is a SteerError whose message says what to do."""

from __future__ import annotations

import msgspec
import yaml
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from shared.errors import MessageError, SteerError
from shared.messaging import subjects
from shared.messaging.bus import decode, encode
from shared.messaging.limits import MAX_CONFIG_BYTES
from shared.messaging.messages import STOP_WAIT_S, TERMINAL_STATUSES, ErrorReply, SteerAnswer, SteerRequest
from shared.registry.store import Registry

STEER_TIMEOUT_S = STOP_WAIT_S + 5  # a stop is answered once the run has ended, within STOP_WAIT_S


async def steer(nc, request: SteerRequest, timeout: float = STEER_TIMEOUT_S) -> SteerAnswer:
    """Ask the planner driving `request.run_id` to take `request.action`; -> its answer (ok=False:
    not taken, with why: a paused run paused again, a config that cannot be built). The registry
    is read first, so an unknown or ended run is answered without asking anyone."""
    run_id, action = request.run_id, request.action
    run = await (await Registry.read(nc.jetstream(), weights=False)).get_run(run_id)  # the run record alone
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


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors' aliases: a few hundred characters of nested aliases expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not allowed in a model_config")
        return super().compose_node(parent, index)


def parse_config(text: str, where: str) -> dict:
    """A model_config queued by hand, from JSON or YAML text (`researcher queue`, the dashboard's form;
    a file that wraps it under "model_config", as a report's best does, is unwrapped); ValueError
    saying what is wrong. At most MAX_CONFIG_BYTES as JSON, as any proposal."""
    if len(text.encode()) > 4 * MAX_CONFIG_BYTES:
        raise ValueError(f"the config {where} is {len(text.encode()):,} bytes; a model_config is at most "
                         f"{MAX_CONFIG_BYTES:,} as JSON")
    try:
        config = yaml.load(text, Loader=_NoAliases)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ValueError(f"the config {where} is neither JSON nor YAML: {' '.join(str(exc).split())}") from None
    if isinstance(config, dict) and isinstance(config.get("model_config"), dict):
        config = config["model_config"]
    if not isinstance(config, dict) or not config:
        raise ValueError(f"the config {where} must be a model_config object (layers and recipe: README, the "
                         f"model_config format), not {type(config).__name__}")
    try:
        size = len(msgspec.json.encode(config))
    except (TypeError, msgspec.EncodeError) as exc:  # YAML dates, sets: not JSON
        raise ValueError(f"the config {where} holds values JSON cannot carry: {exc}") from None
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"the config {where} is {size:,} bytes as JSON; a model_config is at most {MAX_CONFIG_BYTES:,}")
    return config
