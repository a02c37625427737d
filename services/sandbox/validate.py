"""Validation logic: a static pre-check, then the container's outcome turned into a result.

No I/O here but through the injected runner, so tests call it with plain structs.
"""

from __future__ import annotations

import ast
import time
from typing import Protocol

import msgspec

from shared.containers import RunOutcome
from shared.messages import ValidateRequest, ValidationResult


class Runner(Protocol):
    limits: object

    def run(self, job: dict, blob: bytes, timeout_s: float, job_id: str = "") -> RunOutcome: ...


def precheck(source: str, class_name: str) -> ValidationResult | None:
    """A first filter only (containment never relies on it): reject what cannot be a model."""
    try:
        tree = ast.parse(source, filename="model_code.py")
    except SyntaxError as exc:
        return ValidationResult(ok=False, reason="syntax", error=f"syntax error at line {exc.lineno}: {exc.msg}")
    defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    if class_name not in defined | assigned:
        hint = f"; classes defined: {', '.join(sorted(defined))}" if defined else "; the code defines no class"
        return ValidationResult(ok=False, reason="class_not_found", error=f"class {class_name!r} not found{hint}")
    return None


def outcome_to_result(outcome: RunOutcome, timeout_s: float, memory: str) -> ValidationResult:
    """Believe only the harness: a model is valid when the supervisor's report says its harness completed."""
    report = outcome.report or {}
    tail = (report.get("output_tail") or outcome.stderr_tail or "")[-4000:]
    common = dict(duration_s=round(outcome.duration_s, 3), output_tail=tail,
                  timed_out=outcome.timed_out, oom_killed=outcome.oom_killed)
    if outcome.timed_out:
        return ValidationResult(ok=False, reason="timeout", error=f"timed out after {timeout_s:g} s; the container was killed", **common)
    if outcome.oom_killed:
        return ValidationResult(ok=False, reason="oom", error=f"out of memory: killed at the {memory} memory cap", **common)
    if not report:
        return ValidationResult(ok=False, reason="harness_failed",
                                error=f"the harness gave no result (container exit code {outcome.exit_code})", **common)
    result = report.get("result")
    if not report.get("harness_completed") or not isinstance(result, dict):
        code = report.get("exit_code")
        if report.get("result_overflow"):
            error = "the code wrote too much to the harness's result channel"
        elif isinstance(code, int) and code < 0:
            error = f"the model's process was killed by signal {-code} before the harness finished"
        else:
            error = f"the model's code ended the process (exit code {code}) before the harness finished"
        if "Resource temporarily unavailable" in tail or "can't start new thread" in tail:
            return ValidationResult(ok=False, reason="pids", error="too many processes or threads: hit the pids cap", **common)
        return ValidationResult(ok=False, reason="harness_failed", error=error, **common)
    if not result.get("ok"):
        return ValidationResult(ok=False, reason=result.get("reason") or "exception", error=result.get("error"),
                                exception_type=result.get("exception_type"), **common)
    return ValidationResult(
        ok=True,
        output_shape=[int(d) for d in result["output_shape"]],
        param_count=int(result["param_count"]),
        trainable_params=int(result["trainable_params"]),
        layers=list(result.get("layers") or [])[:200],
        **common,
    )


def validate(request: ValidateRequest, runner: Runner, timeout_s: float, memory: str) -> ValidationResult:
    started = time.monotonic()
    rejected = precheck(request.source, request.class_name)
    if rejected is not None:
        return rejected
    job = {"mode": "validate", "source": request.source, "class_name": request.class_name,
           "input_shape": list(request.input_shape)}
    outcome = runner.run(job, b"", timeout_s, job_id=f"{request.run_id}-{request.iteration}-validate")
    result = outcome_to_result(outcome, timeout_s, memory)
    expected = request.expected_output_shape
    if result.ok and expected is not None and list(result.output_shape or []) != list(expected):
        return msgspec.structs.replace(
            result, ok=False, reason="output_shape", duration_s=round(time.monotonic() - started, 3),
            error=f"output shape {tuple(result.output_shape or [])} does not match the expected {tuple(expected)}")
    return result
