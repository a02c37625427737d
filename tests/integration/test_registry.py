"""The registry on a real JetStream: compare-and-set updates, idempotent seed results, artifacts."""

import asyncio

import msgspec

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
