"""Steering by hand, the parts without I/O: the queue taken in order as proposer "user", the
steering records kept and shown in the report, old records read as never steered, the CLI's
config file."""

from __future__ import annotations

import io
import json

import msgspec
import pytest

from researcher.runs_cmd import read_config
from services.planner.steering import _steered, queued_proposal, taken_from_queue
from shared.messaging.messages import Goal
from shared.registry.records import MAX_STEERING, QueuedConfig, RunRecord, SteerRecord
from shared.registry.report import build_report, format_report

RUN = "run-steer"
GOAL = Goal(run_id=RUN, goal="digits by hand", dataset="digits")
MLP = {"class_name": "HandMLP", "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}
CNN = {"class_name": "HandCNN", "layers": [{"type": "Conv2d", "out_channels": 4}, {"type": "Flatten"}]}


def test_the_oldest_queued_config_is_the_next_candidate_by_the_user_and_leaves_the_queue():
    first, second = (QueuedConfig(model_config=MLP, by="ana@lab with researcher queue", at=100.0),
                     QueuedConfig(model_config=CNN, by="bo via dashboard", at=200.0))
    run = RunRecord(run_id=RUN, goal=GOAL, queued=[first, second])
    proposal, taken = queued_proposal(run)
    assert (proposal.model_config, proposal.proposer, taken) == (MLP, "user", first)
    assert proposal.reasoning == "queued by hand by ana@lab with researcher queue at 1970-01-01 00:01:40 UTC"
    # one queued meanwhile (the planner's write merges with it) stays, in order
    later = QueuedConfig(model_config=MLP, by="cy", at=300.0)
    assert taken_from_queue(msgspec.structs.replace(run, queued=[*run.queued, later]), taken) == [second, later]
    assert queued_proposal(RunRecord(run_id=RUN, goal=GOAL)) is None


def test_steering_records_keep_the_latest_and_a_record_from_before_steering_reads_unsteered():
    run = RunRecord(run_id=RUN, goal=GOAL, steering=[SteerRecord(action="pause", by="a", at=float(i))
                                                     for i in range(MAX_STEERING)])
    kept = _steered(run, "resume", "b", "resumed")
    assert len(kept) == MAX_STEERING and (kept[-1].action, kept[-1].by, kept[0].at) == ("resume", "b", 1.0)
    old = msgspec.json.encode({"run_id": RUN, "goal": msgspec.to_builtins(GOAL), "status": "running"})
    decoded = msgspec.json.decode(old, type=RunRecord)
    assert (decoded.paused, decoded.queued, decoded.steering) == (False, [], [])


def test_the_report_lists_who_steered_the_run_and_says_it_is_paused():
    run = RunRecord(run_id=RUN, goal=GOAL, paused=True,
                    queued=[QueuedConfig(model_config=MLP, by="bo via dashboard", at=160.0)],
                    steering=[SteerRecord(action="pause", by="ana@lab with researcher pause", at=100.0, detail="paused"),
                              SteerRecord(action="queue", by="bo via dashboard", at=160.0,
                                          detail="queued HandMLP as a next candidate")])
    text = format_report(run, [])
    assert "status: running (paused by hand)" in text
    assert "  1970-01-01 00:01:40 pause by ana@lab with researcher pause: paused" in text
    assert "  1970-01-01 00:02:40 queue by bo via dashboard: queued HandMLP as a next candidate" in text
    assert "queued, not started yet: 1 config(s)" in text
    report = json.loads(json.dumps(build_report(run, [])))
    assert report["paused"] is True and [s["action"] for s in report["steering"]] == ["pause", "queue"]
    assert report["queued"][0]["model_config"] == MLP


def test_a_config_file_is_json_or_yaml_or_stdin_and_a_wrong_one_says_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "mlp.json").write_text(json.dumps(MLP))
    (tmp_path / "mlp.yaml").write_text("class_name: HandMLP\nlayers:\n- {type: Flatten}\n- {type: Linear, out_features: 10}\n")
    (tmp_path / "wrapped.json").write_text(json.dumps({"model_config": MLP, "score": 0.9}))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("layers: [unclosed\n")
    for name in ("mlp.json", "mlp.yaml", "wrapped.json"):
        assert read_config(str(tmp_path / name)) == MLP
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(MLP)))
    assert read_config("-") == MLP
    with pytest.raises(ValueError, match=r"must be a model_config object .* not list"):
        read_config(str(tmp_path / "list.yaml"))
    with pytest.raises(ValueError, match="is neither JSON nor YAML"):
        read_config(str(tmp_path / "broken.yaml"))
    with pytest.raises(ValueError, match="cannot read the config .*missing.json: No such file"):
        read_config(str(tmp_path / "missing.json"))
