"""The sandbox's trusted-side logic: the AST pre-check, and container outcomes turned into reasons."""

import ast
import json

import pytest

from researcher.validate_cmd import UsageError, describe, parse_shape
from shared.sandboxing.validate import flag_constructs, outcome_to_result, precheck
from shared.runtime.config import load_config
from shared.errors import ConfigFileError
from shared.sandboxing.containers import RunOutcome
from shared.sandboxing.protocol import ValidateJob, decode_report
from shared.messaging.messages import ValidationResult

JOB = ValidateJob(source="", class_name="Net", input_shape=[2, 3])
MODEL = "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n"


def outcome(report=None, **kw):
    """A container's outcome whose report went through the real strict decoder."""
    decoded = None if report is None else decode_report(json.dumps(report).encode(), JOB)
    base = dict(report=decoded, exit_code=0, timed_out=False, oom_killed=False, duration_s=0.5)
    return RunOutcome(**{**base, **kw})


def completed(result, **extra):
    return {"harness_completed": True, "result": result, "process": {"stage": "forward", "exit_code": 0, "signal": None},
            "output_tail": "", **extra}


def test_a_plain_model_passes_without_flags():
    assert precheck(MODEL, "Net") == (None, [])


@pytest.mark.parametrize("line, fragment", [
    ("import socket", "line 1: imports 'socket' (network access)"),
    ("from subprocess import run", "line 1: imports 'subprocess' (runs programs)"),
    ("x = eval('1')", "line 1: calls eval() (evaluates a string as code)"),
    ("y = ().__class__.__mro__", "line 1: uses .__mro__ (sandbox-escape idiom)"),
    ("z = __import__('o' + 's')", "line 1: calls __import__() (dynamic import)"),
    ("torch.hub.load('a', 'b')", "line 1: uses .hub (downloads code (torch.hub))"),
])
def test_dangerous_constructs_are_flagged_with_line_and_reason(line, fragment):
    flags = flag_constructs(ast.parse(line))
    assert fragment in flags


def test_flag_policy_runs_the_code_and_reject_policy_refuses_it():
    source = "import os\n" + MODEL
    rejected, flags = precheck(source, "Net", "reject")
    assert rejected.reason == "flagged" and "line 1: imports 'os'" in rejected.error and rejected.flags == flags
    assert precheck(source, "Net", "flag") == (None, flags)


def test_syntax_and_missing_class_come_before_flags():
    assert precheck("import os\nclass Net(:\n", "Net")[0].error == "syntax error at line 2: invalid syntax"
    rejected, _ = precheck("import os\nclass Other: pass\n", "Net")
    assert rejected.reason == "class_not_found" and "classes defined: Other" in rejected.error


def test_a_valid_report_becomes_the_measured_facts():
    result = outcome_to_result(outcome(completed({"ok": True, "output_shape": [2, 10], "param_count": 7,
                                                  "trainable_params": 7, "layers": []})), 60, "2g")
    assert result.ok and result.output_shape == [2, 10] and result.param_count == 7


@pytest.mark.parametrize("flops, kept", [(2560, 2560), (0, 0), (-1, None), (2.5, None), (2**63, None), (None, None)])
def test_flops_are_kept_only_as_a_non_negative_int(flops, kept):
    report = {"ok": True, "output_shape": [2, 10], "param_count": 650, "trainable_params": 650, "layers": [], "flops": flops}
    result = outcome_to_result(outcome(completed(report)), 60, "2g")
    assert result.ok and result.flops == kept


def test_describe_prints_the_flops_beside_the_parameters():
    result = ValidationResult(ok=True, output_shape=[2, 10], param_count=650, trainable_params=650, flops=1_234_567)
    assert "650 parameters (650 trainable), 0 layers, 1.2 MFLOPs per forward pass" in describe(result, "local sandbox", 1.0)


@pytest.mark.parametrize("kw, report, reason, fragment", [
    ({"timed_out": True}, None, "timeout", "timed out after 60 s (during start)"),
    ({"oom_killed": True}, None, "oom", "killed at the 2g memory cap"),
    ({}, completed(None, oom_kills=1, process={"stage": "init", "signal": 9}), "oom", "(during init)"),
    ({}, None, "harness_failed", "the harness gave no result"),
    ({}, completed(None, output_too_large=True, output_bytes=8 << 20), "output_too_large", "more than 8192 KiB"),
    ({}, {"harness_completed": False, "exit_code": -9}, "harness_failed", "exit code -9"),
    ({}, completed({"ok": False, "error": "BlockingIOError ..."}, pids_cap_hits=3), "pids", "hit the pids cap of 128 during forward"),
    ({}, completed(None, process={"stage": "import", "exit_code": 7}), "exited", "(exit code 7) during import"),
    ({}, completed(None, process={"stage": "init", "signal": 11}), "exited", "killed by SIGSEGV during init"),
    ({}, completed({"ok": False, "reason": "exception", "error": "ValueError in forward"}), "exception", "ValueError in forward"),
    ({}, completed({"ok": True, "output_shape": [2, 10]}), "bad_report", "no param_count, trainable_params"),
])
def test_each_outcome_has_its_specific_reason(kw, report, reason, fragment):
    result = outcome_to_result(outcome(report, **kw), 60, "2g", pids=128)
    assert not result.ok and result.reason == reason
    assert fragment in result.error


def test_input_shapes_parse_or_say_why():
    assert parse_shape("1,3,32,32", "--input-shape") == [1, 3, 32, 32]
    with pytest.raises(UsageError, match="comma-separated integers"):
        parse_shape("1,a", "--input-shape")
    with pytest.raises(UsageError, match="all positive"):
        parse_shape("1,0", "--input-shape")


def test_sandbox_config_rejects_an_unknown_precheck_policy():
    with pytest.raises(ConfigFileError, match="sandbox.precheck must be 'reject' or 'flag'"):
        load_config(environ={"RESEARCHER_SANDBOX__PRECHECK": "maybe"})
