"""`researcher run`'s records of runs that end with their command, in a real JetStream registry:
a killed command's runs are recorded stopped by the next embedded stack, an interrupted one's
goal is recorded stopped even before a planner took it, and a stopped run stays stopped."""

from msgspec.structs import replace

from researcher.run_cmd import _mark_stopped, _stop_orphans
from shared.messaging.messages import Goal
from shared.registry.records import RunRecord, unless_ended
from shared.registry.store import Registry


def goal(run_id: str) -> Goal:
    return Goal(run_id=run_id, goal="digits", dataset="digits")


async def test_runs_a_killed_command_left_running_are_recorded_stopped(nc, capsys):
    registry = await Registry.open(nc.jetstream())
    await registry.create_run(RunRecord(run_id="orphan", goal=goal("orphan"), current_iteration=2))
    await registry.create_run(RunRecord(run_id="done", goal=goal("done"), status="goal_achieved"))
    await _stop_orphans(nc)
    orphan, done = await registry.get_run("orphan"), await registry.get_run("done")
    assert orphan.status == "stopped" and "was killed before it finished" in orphan.error and orphan.finished_at
    assert done.status == "goal_achieved" and done.error is None
    told = capsys.readouterr().err
    assert "run orphan ('digits') was left unfinished by a command that was killed" in told and "done" not in told


async def test_an_interrupted_goal_not_taken_yet_is_recorded_stopped(nc, capsys):
    registry = await Registry.open(nc.jetstream())
    await _mark_stopped(nc, goal("early"))
    early = await registry.get_run("early")
    assert early.status == "stopped" and "interrupted" in early.error
    assert await registry.create_run(RunRecord(run_id="early", goal=goal("early"))) is False  # a planner finds it over
    assert "run early stopped" in capsys.readouterr().err


async def test_a_stopped_run_stays_stopped_when_a_step_under_way_ends(nc):
    registry = await Registry.open(nc.jetstream())
    await registry.create_run(RunRecord(run_id="r", goal=goal("r")))
    await _mark_stopped(nc, goal("r"))
    # the planner's decision, written after the command stopped the run
    after = await registry.update_run("r", unless_ended(lambda r: replace(r, status="running", best_iteration=1)))
    assert after.status == "stopped" and after.best_iteration is None
