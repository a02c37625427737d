"""No work lost when anything dies: the services as processes, a real nats-server, real Docker.
SIGKILL an evaluator mid-job, SIGKILL the planner mid-run, restart nats-server mid-run; a job no
evaluator ever finishes goes to the dead letters; malformed messages on every subject are
rejected while the services keep serving."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from researcher.stack import SERVICES, LocalStack
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.sandboxing.containers import OWNER_LABEL
from shared.messaging.messages import TERMINAL_STATUSES, Event, Goal
from shared.registry.store import Registry
from shared.registry.report import load_report
from tests.integration.test_end_to_end import _wait_terminal

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("sequential_search")]

# Short claims so a dead evaluator's job comes back in seconds; quick seeds (2 epochs, 600 samples).
FAST = {"RESEARCHER_EVALUATOR__ACK_WAIT_S": "3", "RESEARCHER_EVALUATOR__DRAIN_TIMEOUT_S": "5"}


def goal(run_id: str, **over) -> Goal:
    fields = dict(run_id=run_id, goal="digits", dataset="digits", target_accuracy=0.999, max_iterations=2,
                  num_seeds=2, subset_size=600, max_epochs=2, submitted_at=time.time())
    return Goal(**{**fields, **over})


async def wait_for_text(path: Path, text: str, timeout: float = 120.0, after: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace")[after:]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s")


class Follower:
    """The run's events, as a CLI would see them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def on_event(self, msg) -> None:
        self.events.append(decode(msg.data, Event, msg.subject))

    def seed_results(self) -> collections.Counter:
        """(candidate, seed) -> its results during the search (the final test's are apart: `tested_seeds`)."""
        return collections.Counter((e.iteration, e.data["seed"]) for e in self.events
                                   if e.kind == "seed_done" and e.data.get("split", "val") == "val")


async def start_run(stack: LocalStack, g: Goal):
    nc = await connect(stack.url, "test", role="admin")
    js = nc.jetstream()
    await ensure_streams(js)
    follower = Follower()
    await nc.subscribe(subjects.events_subject(g.run_id), cb=follower.on_event)
    await js.publish(subjects.GOALS_SUBJECT, encode(g), headers={"Nats-Msg-Id": g.run_id})
    return nc, js, await Registry.open(js), follower


def assert_every_iteration_evaluated(report: dict, seeds: int) -> None:
    assert report["status"] in ("goal_achieved", "max_iterations", "no_progress"), report["error"]
    for it in report["iterations"]:
        evaluation = it["evaluation"]
        assert evaluation["failed_seeds"] == [], evaluation["failed_seeds"]
        assert sorted(s["seed"] for s in evaluation["seed_results"]) == list(range(seeds))
        assert evaluation["aggregated"]["val_accuracy"]["n"] == seeds


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_an_evaluator_dying_mid_job_loses_nothing_and_counts_nothing_twice(docker_engine, tmp_path, sig):
    """SIGKILL: the job comes back after its ack wait. SIGTERM: the evaluator drains for
    drain_timeout_s, then hands the job back at once (nak) and exits."""
    with LocalStack(log_dir=tmp_path / "logs", env={**FAST, "RESEARCHER_EVALUATOR__DRAIN_TIMEOUT_S": "0.3"}) as stack:
        # jobs of a few seconds (10 epochs, all of digits), so the signal lands mid-training
        g = goal(f"kill-ev-{uuid.uuid4().hex[:6]}", max_epochs=10, subset_size=None)
        nc, js, registry, follower = await start_run(stack, g)
        log = stack.log_dir / "evaluator.log"
        await wait_for_text(log, '"job_started"')
        owner = f"{OWNER_LABEL}=evaluator-evaluator-{os.getpid()}"  # LocalStack's replica name
        deadline = time.monotonic() + 60
        while not docker_engine.containers.list(filters={"label": owner}, ignore_removed=True):  # its training container is up
            assert time.monotonic() < deadline, "no training container started"
            await asyncio.sleep(0.1)
        stack.procs["evaluator"].send_signal(sig)  # mid-training
        assert stack.procs["evaluator"].wait(timeout=30) is not None
        size = log.stat().st_size
        if sig == signal.SIGTERM:
            assert '"job_handed_back"' in log.read_text()
        stack.start_service("evaluator")  # a replacement replica (same owner: it removes the dead one's container)
        run = await _wait_terminal(registry, g.run_id, timeout=300)
        report = await load_report(registry, g.run_id)
        await nc.close()
    assert_every_iteration_evaluated(report, seeds=2)
    assert len(report["iterations"]) == 2 and run.status == "max_iterations"
    # the killed job came back to the new replica, and every seed of every iteration counted once
    restarted = log.read_text()[size:]
    assert '"delivery": 2' in restarted
    removed = int(re.search(r'"strays_removed": (\d+)', restarted).group(1))
    # a killed one leaves its training container (and its warm one); a stopping one cleans up
    assert removed >= 1 if sig == signal.SIGKILL else removed == 0
    assert set(follower.seed_results().values()) == {1} and len(follower.seed_results()) == 4


async def test_a_planner_killed_mid_run_continues_it_when_started_again(docker_engine, tmp_path):
    with LocalStack(log_dir=tmp_path / "logs", env=FAST) as stack:
        g = goal(f"kill-pl-{uuid.uuid4().hex[:6]}")
        nc, js, registry, follower = await start_run(stack, g)
        await wait_for_text(stack.log_dir / "planner.log", "seed job(s) queued")
        stack.procs["planner"].send_signal(signal.SIGKILL)
        stack.procs["planner"].wait()
        await asyncio.sleep(2)  # results arrive meanwhile: they wait in the RESULTS stream
        stack.start_service("planner")
        # and again once the run's best candidate is being tested: the next planner continues the test
        await wait_for_text(stack.log_dir / "planner.log", "on the held-out test split", timeout=300)
        stack.procs["planner"].send_signal(signal.SIGKILL)
        stack.procs["planner"].wait()
        stack.start_service("planner")
        run = await _wait_terminal(registry, g.run_id, timeout=300)
        report = await load_report(registry, g.run_id)
        kept = {i: [seed for seed, result in (await registry.seed_results(g.run_id, i, [0, 1])).items()
                    if result.weights and await registry.get_artifact(result.weights)] for i in (1, 2)}
        await nc.close()
    # the best iteration's trained weights are kept for its export, the other's let go
    assert kept[run.best_iteration] == [0, 1] and kept[3 - run.best_iteration] == [], kept
    assert run.status == "max_iterations"
    assert [it["iteration"] for it in report["iterations"]] == [1, 2]
    assert_every_iteration_evaluated(report, seeds=2)
    assert '"resumed_runs": 1' in (stack.log_dir / "planner.log").read_text()
    # tested once, over both seeds, on the candidate chosen on validation
    assert run.test.iteration == run.best_iteration and run.test.error is None, run.test
    assert run.test.evaluation.summary("test_accuracy").n == 2 and report["test"]["state"] == "tested"
    assert [e.kind for e in follower.events].count("testing") == 1


async def test_a_nats_server_restart_mid_run_loses_no_run(docker_engine, tmp_path):
    with LocalStack(log_dir=tmp_path / "logs", env=FAST) as stack:
        g = goal(f"nats-{uuid.uuid4().hex[:6]}")
        nc, js, registry, follower = await start_run(stack, g)
        await wait_for_text(stack.log_dir / "planner.log", "seed job(s) queued")
        port = int(stack.url.rsplit(":", 1)[1])
        stack.procs["nats"].send_signal(signal.SIGKILL)
        stack.procs["nats"].wait()
        await asyncio.sleep(2)  # the services notice, and keep retrying
        stack.start_nats(port)  # same port, same JetStream store
        run = await _wait_terminal(registry, g.run_id, timeout=300)
        report = await load_report(registry, g.run_id)
        await nc.close()
    assert run.status == "max_iterations"
    assert_every_iteration_evaluated(report, seeds=2)
    for name in SERVICES:
        assert '"nats_reconnected"' in (stack.log_dir / f"{name}.log").read_text(), name


async def test_a_job_no_evaluator_finishes_is_dead_lettered_and_its_seed_fails(docker_engine, tmp_path):
    """The test is the evaluator that dies each time: it takes the job and never acks it."""
    with LocalStack(log_dir=tmp_path / "logs", services=("planner", "assembler", "sandbox"), env=FAST) as stack:
        nc = await connect(stack.url, "test", role="admin")
        js = nc.jetstream()
        await ensure_streams(js)
        dying = await js.pull_subscribe(subjects.EVAL_SUBJECT, durable=subjects.EVAL_CONSUMER, stream=subjects.EVAL_STREAM,
                                        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0, max_deliver=2))
        g = goal(f"dead-{uuid.uuid4().hex[:6]}", max_iterations=1, num_seeds=1)
        await js.publish(subjects.GOALS_SUBJECT, encode(g))
        registry = await Registry.open(js)
        taken = []
        deadline = time.monotonic() + 120
        while len(taken) < 2 and time.monotonic() < deadline:
            try:
                taken += await dying.fetch(1, timeout=1.0)  # and then "dies": no ack
            except NatsTimeoutError:  # nothing to fetch yet
                pass
        assert len(taken) == 2 and taken[1].metadata.num_delivered == 2
        # JetStream gives up on the job when it would deliver it a third time: while workers still pull
        run = None
        while run is None or run.status not in TERMINAL_STATUSES:
            assert time.monotonic() < deadline, "the run did not finish"
            try:
                again = await dying.fetch(1, timeout=1.0)
            except NatsTimeoutError:
                again = []
            assert not again, "a job past max_deliver was delivered again"
            run = await registry.get_run(g.run_id)
        report = await load_report(registry, g.run_id)
        dead = await js.get_last_msg(subjects.DEAD_STREAM, subjects.dead_job_subject(g.run_id))
        eval_left = (await js.stream_info(subjects.EVAL_STREAM)).state.messages
        await nc.close()
        server_log = (stack.log_dir / "nats-server.log").read_text()
    [failed] = report["iterations"][0]["evaluation"]["failed_seeds"]
    assert "dead-lettered after 2 deliveries" in failed["error"] and subjects.dead_job_subject(g.run_id) in failed["error"]
    assert run.status == "max_iterations"
    assert json.loads(dead.data)["job_id"] == f"{g.run_id}.it0001.seed0" and dead.headers["Researcher-Deliveries"] == "2"
    assert eval_left == 0  # taken off the work queue
    assert "Violation" not in server_log  # the planner's credential allows all of it (the delete included)


async def test_malformed_messages_on_every_subject_are_rejected_and_the_services_keep_serving(docker_engine, tmp_path):
    with LocalStack(log_dir=tmp_path / "logs", env=FAST) as stack:
        nc = await connect(stack.url, "test", role="admin")
        js = nc.jetstream()
        await ensure_streams(js)
        await js.publish(subjects.EVAL_SUBJECT, b'{"job_id": 7}')
        await js.publish(subjects.results_subject("nobody"), b"not json")
        await js.publish(subjects.EVAL_MAX_DELIVERIES_ADVISORY, b'{"stream": "EVAL"}')
        answers = {}
        for subject in (subjects.ASSEMBLE_SUBJECT, subjects.VALIDATE_SUBJECT, subjects.SUMMARY_SUBJECT):
            answers[subject] = json.loads((await nc.request(subject, b"[1, 2", timeout=10)).data)
        g = goal(f"after-{uuid.uuid4().hex[:6]}", max_iterations=1, num_seeds=1)
        await js.publish(subjects.GOALS_SUBJECT, encode(g))
        run = await _wait_terminal(await Registry.open(js), g.run_id, timeout=200)
        await nc.close()
        logs = {name: (stack.log_dir / f"{name}.log").read_text() for name in SERVICES}
    for subject, answer in answers.items():
        assert answer["ok"] is False and "malformed" in answer["error"], subject
    assert "malformed EvalJob" in logs["evaluator"]
    assert "malformed SeedResult" in logs["planner"] and "malformed MaxDeliveriesAdvisory" in logs["planner"]
    assert run.status == "max_iterations"  # and the next goal ran to its end


async def test_a_second_planner_replica_takes_over_the_runs_of_one_that_died(docker_engine, tmp_path):
    """Two planners share the goals; each run is driven by the one holding its lease. SIGKILL that
    one mid-run: its lease expires and the other replica carries the run to its end."""
    with LocalStack(log_dir=tmp_path / "logs", env=FAST) as stack:
        stack.start_service("planner", replica="planner-2")
        stack.wait_ready(["planner-2"])
        g = goal(f"two-pl-{uuid.uuid4().hex[:6]}")
        nc, js, registry, follower = await start_run(stack, g)
        leases = await js.key_value(subjects.LEASES_BUCKET)
        deadline = time.monotonic() + 60
        while not any(e.kind == "evaluating" for e in follower.events):
            assert time.monotonic() < deadline, "the run did not reach its first evaluation"
            await asyncio.sleep(0.1)
        holder = (await leases.get(g.run_id)).value.decode()  # "planner-<replica>"
        key = "planner-2" if holder.startswith("planner-planner-2-") else "planner"
        other = "planner" if key == "planner-2" else "planner-2"
        stack.procs[key].send_signal(signal.SIGKILL)
        stack.procs[key].wait()
        run = await _wait_terminal(registry, g.run_id, timeout=300)
        report = await load_report(registry, g.run_id)
        await nc.close()
    assert run.status == "max_iterations", report["error"]
    assert [it["iteration"] for it in report["iterations"]] == [1, 2]  # neither lost nor proposed twice
    assert_every_iteration_evaluated(report, seeds=2)
    survivor_log = (stack.log_dir / f"{other}.log").read_text()
    assert "candidate 2:" in survivor_log
