"""Every goal field has a checked range, and every problem is named at once."""

import pytest

from researcher.cli import main
from researcher.goals import GoalRejected, check_locally
from shared.data.catalog import check_goal
from shared.messaging.messages import GOAL_LIMITS, Goal, goal_problems


def goal(**kw) -> Goal:
    return Goal(**({"run_id": "r1", "goal": "digits above 90%"} | kw))


def test_a_sound_goal_has_no_problem():
    assert check_goal(goal()) == []
    assert check_goal(goal(goal_statistic="ci_lower", num_seeds=2, subset_size=500, target_accuracy=1.0)) == []


@pytest.mark.parametrize("field, value, says", [
    ("target_accuracy", 95.0, "target_accuracy must be in (0, 1] (a fraction: 0.95, not 95)"),
    ("target_accuracy", 0.0, "target_accuracy must be in (0, 1]"),
    ("target_accuracy", float("nan"), "target_accuracy must be in (0, 1]"),
    ("num_seeds", 0, "num_seeds must be an integer from 1 to 100, not 0"),
    ("max_iterations", 0, "max_iterations must be an integer from 1 to 1000"),
    ("patience", -1, "patience must be an integer from 1 to 1000"),
    ("max_epochs", 0, "max_epochs must be an integer from 1 to 1000"),
    ("subset_size", 3, "subset_size must be an integer from 10 to 100000000"),
    ("run_id", "has space", "run_id must be 1-64 letters"),
    ("goal", "  ", "goal must be a description"),
    ("dataset", "cifar11", "dataset: unknown data set 'cifar11'"),
])
def test_each_field_names_itself_and_its_range(field, value, says):
    problems = check_goal(goal(**{field: value}))
    assert len(problems) == 1 and says in problems[0]


def test_ci_lower_needs_two_seeds():
    assert "needs num_seeds >= 2" in goal_problems(goal(goal_statistic="ci_lower", num_seeds=1))[0]


def test_every_problem_comes_at_once():
    problems = goal_problems(goal(num_seeds=0, target_accuracy=95.0, patience=0))
    assert [p.split(" ")[0] for p in problems] == ["target_accuracy", "num_seeds", "patience"]


def test_the_limits_cover_every_integer_field():
    ints = {name for name, kind in Goal.__annotations__.items() if "int" in str(kind) and "float" not in str(kind)}
    assert ints == set(GOAL_LIMITS)


def test_the_cli_names_the_flag_a_user_types():
    with pytest.raises(GoalRejected) as caught:
        check_locally(goal(num_seeds=0))
    assert "--num-seeds: must be an integer from 1 to 100, not 0" in str(caught.value)


@pytest.mark.parametrize("argv", [
    ["run", "x", "--dataset", "digits", "--num-seeds", "0"],
    ["run", "x", "--dataset", "digits", "--target-accuracy", "95"],
    ["submit", "x", "--dataset", "cifar11", "--nats-url", "nats://127.0.0.1:1"],
    ["run", "x", "--patience", "0", "--max-iterations", "0"],
])
def test_bad_goals_exit_2_before_any_stack_or_connection(argv, capsys):
    assert main(argv) == 2  # no stack started, no server contacted: port 1 would refuse
    err = capsys.readouterr().err
    assert err.startswith("error: the goal was rejected:") and "--" in err
