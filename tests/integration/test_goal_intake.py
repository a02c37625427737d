"""Bad goals get answers, never silence: submitted ones are answered at once with every problem,
published ones (no reply subject) become a failed run that says why. A real nats-server and a
real planner process; no Docker is needed to reject a goal."""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from researcher.goals import GoalRejected, submit_goal
from researcher.stack import LocalStack
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import Event, Goal, GoalAnswer
from shared.registry.store import Registry

pytestmark = [pytest.mark.usefixtures("sequential_search")]


def goal(**kw) -> Goal:
    return Goal(**({"run_id": f"intake-{uuid.uuid4().hex[:8]}", "goal": "digits above 90%"} | kw))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The planner's data.dir: no torchvision set, one CSV file; a secret beside it, outside."""
    root = tmp_path_factory.mktemp("intake-data")
    (root / "data").mkdir()
    (root / "data" / "plants.csv").write_text("height,width,kind\n" + "".join(
        f"{i},{i % 7},{'ab'[i % 2]}\n" for i in range(60)))
    (root / "secret.csv").write_text("a,kind\n1,x\n")
    return root / "data"


@pytest.fixture(scope="module")
def planner_stack(tmp_path_factory, data_dir):
    """One planner for the module: every test uses run ids of its own."""
    with LocalStack(log_dir=tmp_path_factory.mktemp("intake") / "logs", services=("planner",),
                    env={"RESEARCHER_DATA__DIR": str(data_dir)}) as stack:
        yield stack


@pytest.fixture
async def nc(planner_stack):
    """A connection of the test's own to the module's stack (not conftest's server of its own)."""
    client = await connect(planner_stack.url, "test", role="admin")
    try:
        yield client
    finally:
        await client.close()


async def wait_run(registry: Registry, run_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await registry.get_run(run_id)
        if run is not None:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"no run record for {run_id} after {timeout} s")


async def test_a_submitted_goal_is_answered_with_every_problem(nc):
    bad = goal(num_seeds=0, target_accuracy=95.0, dataset="cifar11")
    answer = decode((await nc.request(subjects.GOAL_SUBMIT_SUBJECT, encode(bad), timeout=5)).data, GoalAnswer)
    assert answer.accepted is False and answer.run_id == bad.run_id
    text = answer.error
    assert "num_seeds must be an integer from 1 to 100, not 0" in text
    assert "target_accuracy must be in (0, 1]" in text and "unknown data set 'cifar11'" in text
    with pytest.raises(GoalRejected, match="--num-seeds"):  # the CLI's path, past its own checks
        await submit_goal(nc, bad)
    garbage = json.loads((await nc.request(subjects.GOAL_SUBMIT_SUBJECT, b'{"run_id": 5}', timeout=5)).data)
    assert garbage["ok"] is False and "malformed Goal" in garbage["error"] and "$.run_id" in garbage["error"]
    registry = await Registry.open(nc.jetstream())
    assert await registry.get_run(bad.run_id) is None  # answered, not recorded
    unanswerable = goal(patience=0)  # sent with no reply subject: nobody to tell, so it is recorded
    await nc.publish(subjects.GOAL_SUBMIT_SUBJECT, encode(unanswerable))
    run = await wait_run(registry, unanswerable.run_id)
    assert run.status == "failed" and "patience must be an integer from 1 to 1000, not 0" in run.error


async def test_an_accepted_goal_is_queued_and_becomes_a_run(nc):
    good = goal(max_iterations=1, num_seeds=1)
    assert await submit_goal(nc, good) == "accepted"
    run = await wait_run(await Registry.open(nc.jetstream()), good.run_id)
    assert run.status == "running" and run.dataset_facts.name == "digits" and run.dataset_facts.num_classes == 10


async def test_a_subset_too_small_for_the_data_set_fails_the_run_naming_the_least(nc):
    """Only the planner, with the data set's facts, can tell: digits has 10 classes, so a stratified
    split with a validation share of 0.2 needs at least 46 samples."""
    small = goal(subset_size=20)
    assert await submit_goal(nc, small) == "accepted"
    run = await wait_run(await Registry.open(nc.jetstream()), small.run_id)
    assert run.status == "failed" and "subset_size must be at least 46" in run.error


async def test_goals_published_without_a_reply_leave_a_failed_run_that_says_why(nc, planner_stack):
    js = nc.jetstream()
    await ensure_streams(js)
    registry = await Registry.open(js)
    events: list[Event] = []
    out_of_range, malformed = goal(patience=0, target_accuracy=95.0), f"intake-{uuid.uuid4().hex[:8]}"

    async def on_event(msg) -> None:
        events.append(decode(msg.data, Event))

    for run_id in (out_of_range.run_id, malformed):
        await nc.subscribe(subjects.events_subject(run_id), cb=on_event)
    await js.publish(subjects.GOALS_SUBJECT, encode(out_of_range))
    await js.publish(subjects.GOALS_SUBJECT, json.dumps({"run_id": malformed, "goal": "x", "num_seeds": "two"}).encode())
    await js.publish(subjects.GOALS_SUBJECT, b"not json at all")  # nothing to attach it to: logged, dropped
    first, second = await wait_run(registry, out_of_range.run_id), await wait_run(registry, malformed)
    assert first.status == "failed" and "patience must be an integer from 1 to 1000, not 0" in first.error
    assert "target_accuracy must be in (0, 1]" in first.error and first.finished_at is not None
    assert second.status == "failed" and "malformed Goal" in second.error and "$.num_seeds" in second.error
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sorted(e.kind for e in events) == ["run_finished", "run_finished"]
    log = (planner_stack.log_dir / "planner.log").read_text()
    assert "malformed Goal" in log  # the bytes that named no run


def test_researcher_submit_exits_2_naming_the_field_a_stack_rejects(planner_stack):
    """A check only the stack can make, seen through the CLI: here the planner's own range check
    (the CLI checks the same locally first, so a goal it passes must get the same answer)."""
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "submit", "x", "--num-seeds", "0",
                           "--nats-url", planner_stack.url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--num-seeds: must be an integer from 1 to 100" in done.stderr


# ---- goals over the stack's caps (limits), and messages over their size limit ----
async def test_a_goal_over_the_stacks_caps_is_rejected_naming_field_value_and_cap(nc):
    started = time.monotonic()
    with pytest.raises(GoalRejected) as rejected:  # within the CLI's ranges (1 to 100 seeds), over the stack's cap
        await submit_goal(nc, goal(num_seeds=50, max_epochs=500))
    said = str(rejected.value)
    assert "--num-seeds: 50 is over the cap of 10 (this stack's limits.max_seeds, RESEARCHER_LIMITS__MAX_SEEDS)" in said
    assert "--max-epochs: 500 is over the cap of 100 (this stack's limits.max_epochs" in said
    assert time.monotonic() - started < 5
    answer = await answer_to(nc, goal(max_iterations=100, num_seeds=11))  # 100 x 11 x 20 (planner.max_epochs)
    assert answer.accepted is False and answer.problems == [
        "num_seeds 11 is over the cap of 10 (this stack's limits.max_seeds, RESEARCHER_LIMITS__MAX_SEEDS)",
        "epoch_budget: none given, so max_iterations x num_seeds x max_epochs = 100 x 11 x 20 = 22000 seed-epochs, "
        "over the cap of 20000 (this stack's limits.max_epoch_budget, RESEARCHER_LIMITS__MAX_EPOCH_BUDGET); ask for "
        "fewer iterations or seeds, or give a smaller epoch_budget"]


def test_researcher_submit_names_the_cap_a_stack_puts_on_a_goal(planner_stack):
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "submit", "x", "--parallel", "20",
                           "--nats-url", planner_stack.url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--parallel: 20 is over the cap of 8 (this stack's limits.max_parallel, RESEARCHER_LIMITS__MAX_PARALLEL)" \
        in done.stderr


async def test_a_goal_over_its_size_limit_is_answered_unread_with_the_size_and_limit(nc):
    reply = json.loads((await nc.request(subjects.GOAL_SUBMIT_SUBJECT, b"{" + b" " * 70_000, timeout=5)).data)
    assert reply["ok"] is False
    assert reply["error"].startswith("Goal on 'research.submit' refused: 70,001 bytes, over the limit of ")


def test_researcher_run_over_a_cap_exits_2_before_any_stack_starts(tmp_path):
    env = {**os.environ, "RESEARCHER_LIMITS__MAX_SEEDS": "3", "RESEARCHER_HOME": str(tmp_path / "home")}
    env.pop("NATS_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "run", "x", "--num-seeds", "5",
                           "--log-dir", str(tmp_path / "logs")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 20
    assert "--num-seeds: 5 is over the cap of 3 (this stack's limits.max_seeds, RESEARCHER_LIMITS__MAX_SEEDS)" \
        in done.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / "home").exists()


# ---- data the stack cannot read: refused at submission, saying where it looked ----
async def answer_to(nc, bad: Goal) -> GoalAnswer:
    return decode((await nc.request(subjects.GOAL_SUBMIT_SUBJECT, encode(bad), timeout=5)).data, GoalAnswer)


async def test_a_torchvision_set_without_its_files_is_refused_naming_them_and_make_up(nc, data_dir):
    answer = await answer_to(nc, goal(dataset="cifar10"))
    assert answer.accepted is False and len(answer.problems) == 1
    problem = answer.problems[0]
    assert f"expected {data_dir / 'cifar-10-batches-py/data_batch_1'}" in problem
    assert f"extract it into {data_dir}" in problem and "cifar-10-python.tar.gz" in problem
    assert "./data" in problem and "RESEARCHER_DATA_DIR" in problem  # where `make up` reads it
    registry = await Registry.open(nc.jetstream())
    assert await registry.get_run(answer.run_id) is None  # refused, not accepted and failed later


@pytest.mark.parametrize("dataset, says", [
    ("csv:{outside}:kind", "lies outside the data directory {root}"),
    ("csv:../secret.csv:kind", "lies outside the data directory {root}"),
    ("csv:absent.csv:kind", "expected {root}/absent.csv"),
    ("csv:plants.csv:species", "no target column 'species'; columns: height, width, kind"),
])
async def test_a_csv_the_stack_cannot_read_is_refused(nc, data_dir, dataset, says):
    spec = dataset.format(outside=data_dir.parent / "secret.csv")
    answer = await answer_to(nc, goal(dataset=spec))
    assert answer.accepted is False and says.format(root=data_dir) in answer.error


async def test_a_csv_in_the_data_directory_named_relative_to_it_becomes_a_run(nc):
    good = goal(dataset="csv:plants.csv:kind", max_iterations=1, num_seeds=1)
    assert await submit_goal(nc, good) == "accepted"
    run = await wait_run(await Registry.open(nc.jetstream()), good.run_id)
    facts = run.dataset_facts
    assert run.status == "running" and facts.class_names == ["a", "b"]
    assert (facts.num_samples, facts.num_test, facts.test_source) == (48, 12, "held_out")  # 60 rows, 20% held out


async def test_a_published_goal_on_missing_data_becomes_a_failed_run_saying_where(nc, data_dir):
    js = nc.jetstream()
    await ensure_streams(js)
    missing = goal(dataset="mnist")
    await js.publish(subjects.GOALS_SUBJECT, encode(missing))
    run = await wait_run(await Registry.open(js), missing.run_id)
    assert run.status == "failed" and str(data_dir / "MNIST/raw/train-images-idx3-ubyte[.gz]") in run.error
    assert "RESEARCHER_DATA_DIR" in run.error


def test_researcher_submit_names_the_flag_for_a_csv_outside_the_stacks_data(planner_stack, data_dir):
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "submit", "x", "--dataset", "csv:/etc/hostname:x",
                           "--nats-url", planner_stack.url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"--dataset: CSV file '/etc/hostname' lies outside the data directory {data_dir}" in done.stderr


def test_researcher_run_on_a_missing_set_exits_2_before_any_stack_starts(tmp_path):
    """The embedded stack would read this data.dir: the CLI checks it first, in seconds."""
    env = {**os.environ, "RESEARCHER_DATA__DIR": str(tmp_path / "data"), "RESEARCHER_HOME": str(tmp_path / "home")}
    env.pop("NATS_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "run", "x", "--dataset", "svhn",
                           "--log-dir", str(tmp_path / "logs")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 20  # an interpreter and the openai import on a busy machine, no stack
    assert f"--dataset: data set 'svhn' not found: expected {tmp_path / 'data' / 'train_32x32.mat'}" in done.stderr
    assert "RESEARCHER_DATA__DIR=DIR" in done.stderr  # what to set on this machine
    assert "starting an embedded stack" not in done.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / "home").exists()
