"""Where a seed job's time goes: the name of every measured step, in a job's order, and the split
of a batch of results that `make bench-scale` prints.

Each step is timed where it happens (SeedResult.timings, seconds). The trusted side's clocks are
the ones that count; the container's own clocks ("harness." keys) only divide the time the trusted
side measured in the container, and what they leave unclaimed is shown as such.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple, Sequence

from shared.messaging.messages import SeedResult

TRAIN = "train_time_s"  # SeedResult.train_time_s: the container's claim, the one figure subtracted

# (key in SeedResult.timings, what it is), by the trusted side's clocks, in a job's order
STEPS = (
    ("data_s", "data set loaded, split, encoded (npz)"),
    ("container_wait_s", "a warm container taken (or a cold one started)"),
    ("send_s", "job and data written to the container"),
    ("in_container_s", "in the container, until its report line was read"),
    ("decode_s", "the report found and decoded"),
    ("end_s", "the container's end, where it is on the job's path"),
    ("score_s", "predictions checked, scored, learning curve, weights checked"),
    ("store_s", "weights into the registry's object store"),
)
# inside in_container_s, by the container's own clocks: its claims
CLAIMS = (
    ("harness.receive_s", "the supervisor reads the data"),
    ("harness.code_s", "data decoded, the code run, the model built"),
    ("harness.setup_s", "tensors and model to the device, the optimizer"),
    (TRAIN, "training"),
    ("harness.predict_s", "the final predictions"),
    ("harness.encode_s", "predictions and weights encoded"),
)
QUEUE = "queue_s"  # queued until a replica began it: the queue's length over the replicas, not the job's cost
JOB = "job_s"  # the replica's whole time on the job, until its result was published
PUBLISH = "publish_s"  # the result's way out, by the receiver's clock (not in the result it times)


class Row(NamedTuple):
    label: str
    seconds: float  # mean over the results that have the key
    depth: int = 0  # 1: part of the row above (the container's claims)


class Split(NamedTuple):
    rows: list[Row]
    outside_s: float  # mean seconds of a job outside training: its replica time and publishing, less training
    train_s: float


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def split(results: Sequence[SeedResult], publish_s: Sequence[float] = ()) -> Split:
    """The mean split of `results` (ok ones; ValueError when there are none), with the seconds
    each result took to reach its receiver after its replica was done (`publish_s`), when known."""
    done = [r for r in results if r.ok and JOB in r.timings]
    if not done:
        raise ValueError("no finished job with timings to split: are the evaluators older than their timings?")
    per = lambda key: _mean([r.timings[key] for r in done if key in r.timings])  # noqa: E731
    train = _mean([r.train_time_s for r in done])
    rows = [Row("queued until a replica began it (not counted)", per(QUEUE))]
    for key, label in STEPS:
        rows.append(Row(label, per(key)))
        if key == "in_container_s":
            claims = [(label, train if key == TRAIN else per(key)) for key, label in CLAIMS]
            rows += [Row(label, s, 1) for label, s in claims]
            rows.append(Row("unclaimed: processes starting, the report written and read", per(key) - sum(s for _, s in claims), 1))
    job = per(JOB)
    rows.append(Row("the replica's own (thread hand-off, handler)", job - sum(per(key) for key, _ in STEPS)))
    publish = _mean(list(publish_s))
    if publish_s:
        rows.append(Row("the result published and received", publish))
    return Split(rows, job + publish - train, train)


def publish_seconds(result: SeedResult, queued_to_received_s: float) -> float:
    """A result's way out: from its job's queueing to its result's arrival, less the queue and the
    replica's time (both in the result); never below zero (clocks a millisecond apart)."""
    return max(0.0, queued_to_received_s - result.timings.get(QUEUE, 0.0) - result.timings.get(JOB, 0.0))
