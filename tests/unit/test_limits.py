"""The table of message size limits holds the largest content each message can carry, built here
by the code that writes it (scikit-learn's metrics, the aggregation), and the edge refuses what
is larger, unread; the goal caps name the field, the value and the cap."""

import functools
import math

import msgspec
import numpy as np
import pytest

from researcher.goals import flagged
from services.assembler.codegen import code_problem
from shared.errors import MessageError, MessageTooLargeError
from shared.evaluation.aggregate import summarise
from shared.evaluation.metrics import score
from shared.messaging import limits, subjects
from shared.messaging.bus import decode, encode
from shared.messaging.messages import (AssembleRequest, CodeFeedback, EpochStats, EvalJob, Goal, SeedResult,
                                       ValidateRequest, ValidationResult)
from shared.registry.records import IterationRecord, RungResult
from shared.runtime.config import Config, LimitsConfig, load_config

WORST = -1.2345678901234567e-300  # the longest a float prints
HOSTILE_TAIL = "\x01" * limits.MAX_OUTPUT_TAIL_BYTES  # each byte becomes "\u0001" in JSON: the most it can grow


def source_of(size: int) -> str:
    """Module source whose JSON is exactly `size` bytes."""
    return "#" * (size - 2)


@functools.cache
def scores() -> tuple[dict, dict]:
    """The metrics of the most classes, every one present and confused with every other, each
    with the longest name (once: scikit-learn takes seconds over them)."""
    names = [f"{k:03d}".ljust(limits.MAX_CLASS_NAME_CHARS, "x") for k in range(limits.MAX_CLASSES)]
    y = np.repeat(np.arange(limits.MAX_CLASSES), 7)  # fractions of 7 print longest (0.14285714285714285)
    probs = np.random.default_rng(0).random((len(y), limits.MAX_CLASSES))
    return score(y, probs / probs.sum(axis=1, keepdims=True), names)


def seed_result(seed: int, epochs: int) -> SeedResult:
    """A seed as large as it gets: the most classes, the longest curve and output tail, the largest error."""
    metrics, details = scores()
    curve = [EpochStats(epoch=e, train_loss=WORST, train_accuracy=WORST, val_loss=WORST, val_accuracy=WORST,
                        grad_norm=WORST) for e in range(1, epochs + 1)]
    return SeedResult(job_id=f"r.it0001.seed{seed}", run_id="r", iteration=1, seed=seed, ok=True, metrics=metrics,
                      details=details, learning_curve=curve, output_tail=HOSTILE_TAIL,
                      error="\x02" * (limits.MAX_ERROR_BYTES // 6), timings={f"t{i}": WORST for i in range(16)})


def test_a_seed_result_of_the_most_classes_epochs_and_output_fits_its_limit():
    size = len(msgspec.json.encode(seed_result(0, limits.MAX_EPOCHS)))
    assert size <= limits.LIMITS[SeedResult] <= 3 * size  # bounded by its content, not a round guess


def test_the_largest_iteration_record_fits_its_bucket():
    """The full evaluation of MAX_SEEDS seeds and its cheaper rungs at the reduction factor that
    keeps most (2), each with the best seed's details; the validation with its output tail."""
    def evaluation(seeds: int, epochs: int):
        return summarise({s: seed_result(s, epochs) for s in range(seeds)}, list(range(seeds)))

    passed = [RungResult(index=k, epochs=math.ceil(limits.MAX_EPOCHS / 2 ** (limits.MAX_LOWER_RUNGS - k)),
                         seeds=list(range(math.ceil(limits.MAX_SEEDS / 2 ** (limits.MAX_LOWER_RUNGS - k)))),
                         evaluation=evaluation(math.ceil(limits.MAX_SEEDS / 2 ** (limits.MAX_LOWER_RUNGS - k)),
                                               math.ceil(limits.MAX_EPOCHS / 2 ** (limits.MAX_LOWER_RUNGS - k))))
              for k in range(limits.MAX_LOWER_RUNGS)]
    layers = [{"name": "block." * 20 + str(i), "type": "Conv2d", "params": 2**40, "output_shape": [2**30] * 4}
              for i in range(limits.MAX_LAYERS)]
    record = IterationRecord(run_id="r", iteration=1, evaluation=evaluation(limits.MAX_SEEDS, limits.MAX_EPOCHS),
                             passed=passed, seeds=list(range(limits.MAX_SEEDS)),
                             validation=ValidationResult(ok=True, layers=layers, output_tail=HOSTILE_TAIL))
    size = len(msgspec.json.encode(record))
    assert size <= limits.BUCKET_LIMITS[subjects.ITERATIONS_BUCKET] <= 3 * size
    assert limits.BUCKET_LIMITS[subjects.ITERATIONS_BUCKET] <= limits.MAX_PAYLOAD


def test_code_up_to_the_cap_travels_in_every_message_that_carries_it():
    source, error = source_of(limits.MAX_SOURCE_BYTES), "\x03" * (limits.MAX_ERROR_BYTES // 6)
    config = {"layers": [{"type": "Conv2d", "name": "x" * 64, "kernel_size": [3] * 16} for _ in range(200)]}
    assert len(msgspec.json.encode(config)) <= limits.MAX_CONFIG_BYTES
    request = AssembleRequest(run_id="r", iteration=1, model_config=config,
                              feedback=[CodeFeedback(source=source, error=error)] * limits.MAX_CODE_ATTEMPTS)
    job = EvalJob(job_id="j", run_id="r", iteration=1, seed=0, dataset="csv:" + "d" * 4000 + ":t", class_name="M",
                  source=source)
    for message in (request, job, ValidateRequest(source=source, class_name="M", input_shape=[2, 3, 32, 32])):
        assert decode(encode(message), type(message)) == message
    assert code_problem(source_of(limits.MAX_SOURCE_BYTES + 1), "M") == (
        f"the module is {limits.MAX_SOURCE_BYTES + 1:,} bytes as JSON, over the limit of {limits.MAX_SOURCE_BYTES:,}: "
        "write a shorter one")


def test_max_payload_is_the_largest_limit_in_whole_mib_within_what_nats_allows():
    largest = max(*limits.LIMITS.values(), *limits.BUCKET_LIMITS.values())
    assert largest <= limits.MAX_PAYLOAD < largest + limits.MiB and limits.MAX_PAYLOAD % limits.MiB == 0
    assert limits.MAX_PAYLOAD <= 8 * limits.MiB  # NATS warns above 8 MB (and refuses above 64 MB)
    assert set(limits.STREAM_LIMITS) == {subjects.GOALS_STREAM, subjects.EVAL_STREAM, subjects.RESULTS_STREAM,
                                         subjects.DEAD_STREAM, subjects.ADVISORIES_STREAM}
    assert limits.stream_of(subjects.results_subject("run-1")) == (subjects.RESULTS_STREAM, limits.LIMITS[SeedResult])
    assert limits.stream_of(subjects.dead_job_subject("run-1"))[0] == subjects.DEAD_STREAM
    assert limits.stream_of("research.elsewhere") == ("?", limits.MAX_PAYLOAD)


# ---- the edge ----
def test_decode_refuses_an_oversized_message_unread_saying_size_limit_and_type():
    limit = limits.LIMITS[Goal]
    with pytest.raises(MessageTooLargeError) as refused:
        decode(b"\xff" * (limit + 1), Goal, subjects.GOAL_SUBMIT_SUBJECT)  # not JSON: it was never parsed
    assert str(refused.value).startswith(f"Goal on 'research.submit' refused: {limit + 1:,} bytes, over the limit "
                                         f"of {limit:,} bytes (shared/messaging/limits.py")
    assert isinstance(refused.value, MessageError)  # every edge that answers malformed input answers this too
    with pytest.raises(MessageError, match="malformed Goal"):  # at the limit it is read (and is not JSON)
        decode(b"\xff" * limit, Goal)


def test_encode_refuses_to_send_what_no_receiver_would_read():
    with pytest.raises(MessageTooLargeError, match=r"^Goal refused: [\d,]+ bytes, over the limit of "):
        encode(Goal(run_id="r", goal="x" * limits.LIMITS[Goal]))


# ---- the data a stack takes ----
def test_a_data_set_over_the_classes_a_result_can_carry_is_named():
    assert limits.facts_problem(limits.MAX_CLASSES, ["a"] * limits.MAX_CLASSES) is None
    assert limits.facts_problem(101, []).startswith("it has 101 classes, more than the 100 a stack takes")
    assert "is 65 characters, more than the 64" in limits.facts_problem(2, ["a", "b" * 65])


# ---- goal caps ----
CAPS = LimitsConfig(max_goal_chars=100, max_iterations=10, max_seeds=5, max_epochs=30, max_parallel=4,
                    max_epoch_budget=1000)


def test_a_goal_within_the_caps_has_no_problem():
    assert limits.cap_problems(Goal(run_id="r", goal="digits", max_iterations=10, num_seeds=5, max_epochs=20),
                               CAPS, max_epochs=20) == []


def test_each_field_over_its_cap_names_the_value_the_cap_and_the_setting():
    goal = Goal(run_id="r", goal="x" * 101, max_iterations=11, num_seeds=6, max_epochs=31, parallel=5,
                epoch_budget=1001)
    assert limits.cap_problems(goal, CAPS, max_epochs=20) == [
        "goal: its text of 101 characters is over the cap of 100 (this stack's limits.max_goal_chars, "
        "RESEARCHER_LIMITS__MAX_GOAL_CHARS)",
        "max_iterations 11 is over the cap of 10 (this stack's limits.max_iterations, RESEARCHER_LIMITS__MAX_ITERATIONS)",
        "num_seeds 6 is over the cap of 5 (this stack's limits.max_seeds, RESEARCHER_LIMITS__MAX_SEEDS)",
        "max_epochs 31 is over the cap of 30 (this stack's limits.max_epochs, RESEARCHER_LIMITS__MAX_EPOCHS)",
        "parallel 5 is over the cap of 4 (this stack's limits.max_parallel, RESEARCHER_LIMITS__MAX_PARALLEL)",
        "epoch_budget 1001 (seed-epochs) is over the cap of 1000 (this stack's limits.max_epoch_budget, "
        "RESEARCHER_LIMITS__MAX_EPOCH_BUDGET)",
    ]


def test_the_default_budget_is_counted_at_the_stacks_longest_training_and_named_by_its_flags():
    goal = Goal(run_id="r", goal="x", max_iterations=10, num_seeds=5, max_epochs=30)
    assert limits.cap_problems(goal, CAPS, max_epochs=20) == [  # 10 x 5 x 20 = 1000: within
    ] and limits.cap_problems(goal, CAPS, max_epochs=25) == [
        "epoch_budget: none given, so max_iterations x num_seeds x max_epochs = 10 x 5 x 25 = 1250 seed-epochs, "
        "over the cap of 1000 (this stack's limits.max_epoch_budget, RESEARCHER_LIMITS__MAX_EPOCH_BUDGET); ask for "
        "fewer iterations or seeds, or give a smaller epoch_budget"]
    said = flagged(limits.cap_problems(goal, CAPS, max_epochs=25)[0])
    assert said.startswith("--epoch-budget: none given, so --max-iterations x --num-seeds x --max-epochs = ")
    assert "limits.max_epoch_budget" in said and said.endswith("give a smaller --epoch-budget")
    assert flagged(limits.cap_problems(Goal(run_id="r", goal="x", max_epochs=31), CAPS, 20)[0]) == (
        "--max-epochs: 31 is over the cap of 30 (this stack's limits.max_epochs, RESEARCHER_LIMITS__MAX_EPOCHS)")


def test_the_caps_are_configured_and_bounded_by_their_ceilings(tmp_path):
    assert Config().limits.max_seeds == 10
    (tmp_path / "r.yaml").write_text("limits:\n  max_epochs: 150\n")
    assert load_config(tmp_path / "r.yaml", environ={"RESEARCHER_LIMITS__MAX_SEEDS": "20"}).limits.max_seeds == 20
    assert load_config(tmp_path / "r.yaml", environ={}).limits.max_epochs == 150
    with pytest.raises(Exception, match=r"limits.max_seeds must be from 1 to 20, not 21 \(the message size limits"):
        load_config(tmp_path / "r.yaml", environ={"RESEARCHER_LIMITS__MAX_SEEDS": "21"})
    with pytest.raises(Exception, match="sandbox.max_output_bytes must be from 1 to 65536, not 65537"):
        load_config(tmp_path / "r.yaml", environ={"RESEARCHER_SANDBOX__MAX_OUTPUT_BYTES": "65537"})
    with pytest.raises(Exception, match="llm.code_attempts must be at most 5, not 6"):
        load_config(tmp_path / "r.yaml", environ={"RESEARCHER_LLM__CODE_ATTEMPTS": "6"})
