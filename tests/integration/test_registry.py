"""The registry on a real JetStream: compare-and-set updates, idempotent seed results, artifacts, and the
index of running runs."""

import asyncio

import msgspec

from shared.messaging import subjects
from shared.messaging.bus import key_value
from shared.messaging.messages import Goal, SeedResult
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.store import Registry


async def test_create_run_is_idempotent_and_updates_compare_and_set(nc):
    registry = await Registry.open(nc.jetstream())
    goal = Goal(run_id="run-cas", goal="g")
    assert await registry.create_run(RunRecord(run_id="run-cas", goal=goal))
    assert not await registry.create_run(RunRecord(run_id="run-cas", goal=goal))  # a redelivered goal

    async def bump(_):
        await registry.update_run("run-cas", lambda r: msgspec.structs.replace(r, current_iteration=r.current_iteration + 1))

    await asyncio.gather(*(bump(i) for i in range(10)))  # ten concurrent writers, no lost update
    assert (await registry.get_run("run-cas")).current_iteration == 10


async def test_seed_results_count_once_and_artifacts_round_trip(nc):
    registry = await Registry.open(nc.jetstream())
    await registry.put_iteration(IterationRecord(run_id="r1", iteration=1, seeds=[0, 1]))
    result = SeedResult(job_id="r1.it0001.seed0", run_id="r1", iteration=1, seed=0, ok=True, metrics={"val_accuracy": 0.5})
    await registry.put_seed_result(result)
    await registry.put_seed_result(result)  # redelivered
    found = await registry.seed_results("r1", 1, [0, 1])
    assert list(found) == [0] and found[0].metrics == {"val_accuracy": 0.5}
    await registry.put_artifact("r1/it0001/model_code.py", b"class A: pass\n")
    assert await registry.get_artifact("r1/it0001/model_code.py") == b"class A: pass\n"
    assert await registry.get_artifact("missing") is None
    assert [r.run_id for r in await registry.list_runs()] == []


# ---- the index of running runs (what the lease scan lists instead of every record) ----
def run(run_id: str, status: str = "running") -> RunRecord:
    return RunRecord(run_id=run_id, goal=Goal(run_id=run_id, goal="g"), status=status)


def ended(status: str):
    return lambda r: msgspec.structs.replace(r, status=status)


async def test_a_run_is_indexed_while_it_runs_and_leaves_when_it_ends(nc):
    registry = await Registry.open(nc.jetstream())
    assert await registry.running_run_ids() == []
    for run_id in ("b-run", "a-run", "c-run"):
        assert await registry.create_run(run(run_id))
    assert await registry.create_run(run("refused", status="failed"))  # a goal refused at intake: never running
    assert await registry.running_run_ids() == ["a-run", "b-run", "c-run"]
    await registry.update_run("b-run", lambda r: msgspec.structs.replace(r, current_iteration=1))  # still running
    await registry.update_run("a-run", ended("goal_achieved"))
    await registry.update_run("c-run", ended("stopped"))
    assert await registry.running_run_ids() == ["b-run"]
    await registry.update_run("b-run", ended("failed"))
    assert await registry.running_run_ids() == []
    assert await (await Registry.open(nc.jetstream())).running_run_ids() == []  # another replica's view


async def test_runs_stored_before_the_index_enter_it_once_when_a_registry_first_opens(nc):
    js = nc.jetstream()
    runs = await key_value(js, subjects.RUNS_BUCKET)
    for record in (run("old-running"), run("old-done", status="max_iterations"), run("old-too")):
        await runs.create(record.run_id, msgspec.json.encode(record))  # as the code before the index wrote them
    registry = await Registry.open(js)
    assert await registry.running_run_ids() == ["old-running", "old-too"]
    # once: a later open reads the marker, not every run (this record, written behind the registry's
    # back, is not picked up by a full scan that never happens)
    await runs.create("behind-its-back", msgspec.json.encode(run("behind-its-back")))
    assert await (await Registry.open(js)).running_run_ids() == ["old-running", "old-too"]


async def test_a_redelivered_goal_indexes_a_run_whose_first_delivery_died_before_indexing_it(nc):
    js = nc.jetstream()
    registry = await Registry.open(js)
    await (await key_value(js, subjects.RUNS_BUCKET)).create("half-made", msgspec.json.encode(run("half-made")))
    assert await registry.running_run_ids() == []  # the planner died between the record and the index
    assert not await registry.create_run(run("half-made"))  # its goal, delivered again
    assert await registry.running_run_ids() == ["half-made"]


async def test_an_ended_run_left_in_the_index_by_a_crash_leaves_at_its_next_update(nc):
    js = nc.jetstream()
    registry = await Registry.open(js)
    await registry.create_run(run("crashed"))
    await registry.update_run("crashed", ended("failed"))
    await (await key_value(js, subjects.RUNNING_BUCKET)).put("crashed", b"running")  # the delete never happened
    assert await registry.running_run_ids() == ["crashed"]
    await registry.update_run("crashed", lambda r: r)  # e.g. a stop that finds it ended already
    assert await registry.running_run_ids() == []
