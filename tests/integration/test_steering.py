"""Steering a run by hand with the CLI (`researcher pause`, `queue`, `resume`) on a running stack:
paused, it proposes nothing while its candidate in flight finishes; a broken config is refused at
once with its reason; a good one becomes the next candidate, exactly, by "user"; resumed, the run
goes on to its end, and its record, events and report say who did what. Real nats-server, real
services as processes, real Docker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from researcher.stack import LocalStack
from tests.integration.test_end_to_end import _wait_terminal
from tests.integration.test_resilience import goal, start_run
from tests.integration.test_stop import cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HAND_MLP = {"class_name": "HandMLP", "epochs": 2, "lr": 0.01, "optimizer": "adam",
            "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 32}, {"type": "ReLU"},
                       {"type": "Linear", "out_features": 10}]}
BROKEN = "class_name: Broken\nlayers:\n- {type: Flatten}\n- {type: Warp, out_features: 32}\n"


async def until(condition, what: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not (found := await condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)
    return found


async def test_a_run_is_paused_given_a_config_by_hand_and_resumed_to_its_end(docker_engine, sequential_search,
                                                                              tmp_path):
    (tmp_path / "broken.yaml").write_text(BROKEN)
    with LocalStack(log_dir=tmp_path / "logs") as stack:
        # one seed, two candidates of up to 2 epochs: the search's first, then the one queued by hand
        g = goal(f"steer-{uuid.uuid4().hex[:6]}", num_seeds=1, max_iterations=2)
        nc, _, registry, follower = await start_run(stack, g)
        events = lambda kind: [e for e in follower.events if e.kind == kind]  # noqa: E731

        async def proposed():
            return events("proposed")

        await until(proposed, "candidate 1 proposed")
        paused = cli("pause", g.run_id, "--nats-url", stack.url)
        again = cli("pause", g.run_id, "--nats-url", stack.url)

        async def idle_while_paused():  # candidate 1 finished, and the driver's pass after it found nothing to start
            return [e for e in events("progress") if e.data.get("paused") and not e.data["in_flight"]]

        await until(idle_while_paused, "candidate 1 finished while paused")
        held = await registry.get_run(g.run_id)
        first = await registry.get_iteration(g.run_id, 1)
        started = time.monotonic()
        refused = cli("queue", g.run_id, str(tmp_path / "broken.yaml"), "--nats-url", stack.url)
        refused_s = time.monotonic() - started
        queued = cli("queue", g.run_id, "-", "--nats-url", stack.url, input=json.dumps(HAND_MLP))
        resumed = cli("resume", g.run_id, "--nats-url", stack.url)
        run = await _wait_terminal(registry, g.run_id, timeout=300)
        second = await registry.get_iteration(g.run_id, 2)
        report = cli("report", g.run_id, "--nats-url", stack.url)
        await nc.close()

    assert paused.returncode == 0 and f"run {g.run_id}: running: paused: " in paused.stderr, paused.stderr
    assert again.returncode == 1 and f"run {g.run_id} is already paused" in again.stderr, again.stderr
    # paused: candidate 1 finished and was measured, its verdict waits, nothing new was proposed
    assert held.paused and held.current_iteration == 1 and len(events("proposed")) >= 1
    assert first.state == "evaluated" and first.evaluation is not None
    assert refused.returncode == 1 and "config refused: model_config cannot be built: layer 1: unknown layer type " \
                                       "'Warp'" in refused.stderr, refused.stderr
    assert refused_s < 15, refused_s  # answered at once (the CLI's own start included), not in the sandbox
    assert queued.returncode == 0 and "queued HandMLP: it becomes a candidate once the run is resumed" in queued.stderr
    assert resumed.returncode == 0 and "resumed: the search carries on, 1 config(s) queued by hand first" \
        in resumed.stderr, resumed.stderr
    # the queued config is candidate 2, exactly, by the user, and it trained like any candidate
    assert second.proposer == "user" and "with researcher queue" in second.reasoning
    assert second.model_config["layers"] == HAND_MLP["layers"] and second.model_config["lr"] == 0.01
    assert second.validation is not None and second.validation.ok and second.evaluation is not None
    assert run.status in ("max_iterations", "no_progress", "goal_achieved"), (run.status, run.reason)
    assert not run.paused and run.queued == [] and run.current_iteration == 2
    # every action taken is in the record and the events with who; refused ones change nothing
    assert [s.action for s in run.steering] == ["pause", "queue", "resume"]
    assert all(s.by.endswith(f"with researcher {s.action}") for s in run.steering)
    steered = [(e.data["action"], e.data["by"].rsplit(" ", 1)[-1]) for e in events("steered")]
    assert steered == [("pause", "pause"), ("queue", "queue"), ("resume", "resume")]
    kinds = [(e.kind, e.data.get("action")) for e in follower.events if e.kind in ("proposed", "steered")]
    assert kinds.index(("steered", "resume")) < kinds.index(("proposed", None), 1)  # none proposed while paused
    assert report.returncode == 0 and "steered by hand (3):" in report.stdout and " queue by " in report.stdout
