"""The split of a job's time that `make bench-scale` prints, from results' timings, and the laps
that measure them."""

import pytest

from shared.evaluation.job_timings import CLAIMS, STEPS, TRAIN, publish_seconds, split
from shared.messaging.messages import SeedResult
from shared.runtime.laps import Laps

TRUSTED = {"queue_s": 5.0, "data_s": 0.01, "container_wait_s": 0.02, "send_s": 0.001, "in_container_s": 0.4,
           "decode_s": 0.002, "end_s": 0.003, "score_s": 0.05, "store_s": 0.01, "job_s": 0.5}
CLAIMED = {"harness.receive_s": 0.001, "harness.code_s": 0.02, "harness.setup_s": 0.004, "harness.predict_s": 0.002,
           "harness.encode_s": 0.005}


def seed(seed=0, ok=True, train=0.3, **timings):
    return SeedResult(job_id=f"j{seed}", run_id="r", iteration=1, seed=seed, ok=ok, train_time_s=train,
                      timings={**TRUSTED, **CLAIMED, **timings})


def test_the_split_names_every_step_and_the_time_outside_training():
    result = split([seed()], publish_s=[0.004])
    rows = {label: (seconds, depth) for label, seconds, depth in result.rows}
    assert rows[dict(STEPS)["in_container_s"]] == (0.4, 0)
    assert rows[dict(CLAIMS)[TRAIN]] == (0.3, 1)
    # what the container's clocks do not claim of the time the trusted side measured in it
    assert rows["unclaimed: processes starting, the report written and read"][0] == pytest.approx(0.4 - 0.3 - 0.032)
    assert rows["the replica's own (thread hand-off, handler)"][0] == pytest.approx(0.5 - 0.496)
    assert rows["queued until a replica began it (not counted)"][0] == 5.0
    assert result.outside_s == pytest.approx(0.5 + 0.004 - 0.3)  # the queue is not the job's cost


def test_the_split_is_a_mean_over_the_finished_jobs():
    result = split([seed(0, train=0.2, job_s=0.4), seed(1, train=0.4, job_s=0.8), seed(2, ok=False, job_s=9.0)])
    assert (result.train_s, result.outside_s) == (pytest.approx(0.3), pytest.approx(0.6 - 0.3))


def test_an_older_evaluators_results_cannot_be_split():
    old = SeedResult(job_id="j", run_id="r", iteration=1, seed=0, ok=True, train_time_s=0.3)
    with pytest.raises(ValueError, match="are the evaluators older than their timings"):
        split([old])


def test_publishing_is_what_is_left_of_the_way_from_queue_to_receiver():
    assert publish_seconds(seed(), 5.6) == pytest.approx(5.6 - 5.0 - 0.5)
    assert publish_seconds(seed(), 5.4) == 0.0  # clocks a moment apart never make it negative


def test_laps_name_consecutive_steps_and_add_up_repeats():
    laps = Laps()
    first = laps.lap("a")
    laps.lap("b")
    second = laps.lap("a")
    laps.skip()
    assert laps.seconds["a"] == first + second
    assert set(laps.seconds) == {"a", "b"}
    assert laps.total() >= sum(laps.seconds.values())
