"""Validation logic: a static pre-check, then the container's outcome turned into a result.

No I/O here but through the injected runner, so tests call it with plain structs.
"""

from __future__ import annotations

import ast
import signal
import threading
import time
from typing import Literal, Protocol

import msgspec

from shared.sandboxing.containers import RunOutcome
from shared.sandboxing.protocol import ContainerJob, ValidateJob, ValidateOutcome
from shared.messaging.messages import ValidateRequest, ValidationResult

PrecheckPolicy = Literal["reject", "flag"]
# Who states a valid model's figures (output shape, parameters, layers, FLOPs): the generated
# code runs in that process and can forge them, so every place that shows them says so.
REPORTED_BY = "model_process"
# CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth mismatch" under
# concurrent validations, seen in the bench's burst): one parse at a time.
_PARSE_LOCK = threading.Lock()

# Modules a model has no business importing, and why a reader should care.
RISKY_MODULES = {
    "os": "operating-system access", "sys": "interpreter internals", "subprocess": "runs programs",
    "socket": "network access", "ssl": "network access", "http": "network access", "urllib": "network access",
    "requests": "network access", "ftplib": "network access", "smtplib": "network access",
    "ctypes": "native code", "cffi": "native code", "mmap": "raw memory", "shutil": "file-system changes",
    "signal": "signal handling", "resource": "process limits", "pty": "terminals", "fcntl": "file descriptors",
    "multiprocessing": "starts processes", "threading": "starts threads", "_thread": "starts threads",
    "importlib": "dynamic imports", "builtins": "interpreter internals", "pickle": "arbitrary code on load",
    "marshal": "code objects", "gc": "interpreter internals", "inspect": "interpreter internals",
    "code": "interactive interpreter", "pathlib": "file-system access", "tempfile": "file-system access",
    "glob": "file-system access", "io": "file access",
}
RISKY_CALLS = {
    "eval": "evaluates a string as code", "exec": "executes a string as code", "compile": "compiles code",
    "__import__": "dynamic import", "open": "opens files", "breakpoint": "debugger", "input": "reads stdin",
    "globals": "interpreter internals", "vars": "interpreter internals", "memoryview": "raw memory",
}
RISKY_ATTRIBUTES = {
    "__subclasses__": "sandbox-escape idiom", "__globals__": "sandbox-escape idiom", "__builtins__": "interpreter internals",
    "__code__": "code objects", "__mro__": "sandbox-escape idiom", "__bases__": "sandbox-escape idiom",
    "__loader__": "dynamic imports", "system": "runs a shell command", "popen": "runs a program",
    "load_library": "loads native code", "hub": "downloads code (torch.hub)", "cpp_extension": "compiles native code",
}


class Runner(Protocol):
    limits: object

    def run(self, job: ContainerJob, blob: bytes, timeout_s: float, job_id: str = "") -> RunOutcome: ...


def flag_constructs(tree: ast.AST) -> list[str]:
    """Constructs a model does not need, each with its line and a reason. A first filter only:
    code written to get past it (imports built from strings, say) is contained by the container."""
    flags: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                if root in RISKY_MODULES:
                    flags.append(f"line {node.lineno}: imports {name!r} ({RISKY_MODULES[root]})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RISKY_CALLS:
            flags.append(f"line {node.lineno}: calls {node.func.id}() ({RISKY_CALLS[node.func.id]})")
        elif isinstance(node, ast.Attribute) and node.attr in RISKY_ATTRIBUTES:
            flags.append(f"line {node.lineno}: uses .{node.attr} ({RISKY_ATTRIBUTES[node.attr]})")
        elif isinstance(node, ast.Name) and node.id == "__builtins__":
            flags.append(f"line {node.lineno}: uses __builtins__ (interpreter internals)")
    return flags


def precheck(source: str, class_name: str, policy: PrecheckPolicy = "reject") -> tuple[ValidationResult | None, list[str]]:
    """-> (a rejection or None, the flags). Rejects what cannot be a model; with policy
    "reject" also code that uses constructs a model has no business with."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source, filename="model_code.py")
    except SyntaxError as exc:
        return ValidationResult(ok=False, reason="syntax", error=f"syntax error at line {exc.lineno}: {exc.msg}"), []
    defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    if class_name not in defined | assigned:
        hint = f"; classes defined: {', '.join(sorted(defined))}" if defined else "; the code defines no class"
        return ValidationResult(ok=False, reason="class_not_found", error=f"class {class_name!r} not found{hint}"), []
    flags = flag_constructs(tree)
    if flags and policy == "reject":
        return ValidationResult(ok=False, reason="flagged", flags=flags,
                                error="the pre-check rejected constructs a model does not need: " + "; ".join(flags[:5])), flags
    return None, flags


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _count(value: object) -> int | None:
    """A non-negative int64 from the model process's report, else None: the process runs the
    generated code, so a figure it cannot stand behind is dropped rather than failing the model."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why a container job failed, in the fields both ValidationResult and SeedResult carry."""

    reason: str
    error: str
    exception_type: str | None = None


def common_fields(outcome: RunOutcome) -> dict:
    """What every result of a container says about how it ran: time, tail, timeout, OOM kill."""
    report = outcome.report
    tail = ((report.output_tail if report else "") or outcome.stderr_tail or "")[-4000:]
    return dict(duration_s=round(outcome.duration_s, 3), output_tail=tail, timed_out=outcome.timed_out,
                oom_killed=outcome.oom_killed or bool(report and report.oom_kills))


def failure_of(outcome: RunOutcome, timeout_s: float, memory: str, pids: int | None = None) -> Failure | None:
    """Believe only the harness: None when the supervisor reports that the harness completed and
    the model process delivered an ok result. Causes the trusted side can see (timeout, OOM kill,
    a report larger than the job implies or malformed, pids cap, output flood) come before
    whatever the code said."""
    report = outcome.report
    process = (report.process if report else None)
    stage = process.stage if process and process.stage != "start" else outcome.stage
    if outcome.timed_out:
        return Failure(reason="timeout", error=f"timed out after {timeout_s:g} s (during {stage}); the container was killed")
    if outcome.oom_killed or (report and report.oom_kills):
        return Failure(reason="oom", error=f"out of memory: killed at the {memory} memory cap (during {stage})")
    if outcome.bad_report:
        return Failure(reason="bad_report", error=outcome.bad_report)
    if report is None:
        return Failure(reason="harness_failed", error="the harness gave no result (container exit code "
                       f"{outcome.exit_code}); the code may have killed the harness's processes")
    if report.output_too_large:
        return Failure(reason="output_too_large", error=f"the code wrote more than {report.output_bytes // 1024} KiB "
                       "to stdout/stderr; its processes were killed")
    if not report.harness_completed:
        error = ("the harness's result was too large" if report.result_overflow
                 else f"the harness's worker ended with exit code {report.exit_code} before it reported; the code may have killed it")
        return Failure(reason="harness_failed", error=error)
    result = report.result
    if report.pids_cap_hits and not (result and result.ok):
        detail = f" ({result.error})" if result and result.error else ""
        cap = f" of {pids}" if pids else ""
        return Failure(reason="pids", error=f"too many processes or threads: hit the pids cap{cap} during {stage}{detail}")
    if result is None:
        if process and process.report_overflow:
            error = "the model process wrote too much to the harness's report channel"
        elif process and process.signal:
            error = f"the model's process was killed by {_signal_name(process.signal)} during {stage}"
        else:
            code = process.exit_code if process else None
            error = f"the model's code ended its process (exit code {code}) during {stage}, before the harness finished"
        return Failure(reason="exited", error=error)
    if not result.ok:
        return Failure(reason=result.reason or "exception", error=result.error or "the model's process reported a failure",
                       exception_type=result.exception_type)
    return None


def outcome_to_result(outcome: RunOutcome, timeout_s: float, memory: str, pids: int | None = None) -> ValidationResult:
    """The container's outcome as a validation: a rejection with its reason, or the figures the
    model's process reported (its own claims: the code runs in that process and can forge them)."""
    common = common_fields(outcome)
    failure = failure_of(outcome, timeout_s, memory, pids)
    if failure is not None:
        return ValidationResult(ok=False, reason=failure.reason, error=failure.error,
                                exception_type=failure.exception_type, **common)
    result = outcome.report.result  # type: ignore[union-attr]  # failure_of checked it
    missing = [name for name in ("output_shape", "param_count", "trainable_params") if getattr(result, name) is None]
    if missing or not isinstance(result, ValidateOutcome):
        return ValidationResult(ok=False, reason="bad_report", error="the model process's report is malformed: "
                                f"no {', '.join(missing) or 'validation result'}", **common)
    return ValidationResult(
        ok=True, output_shape=list(result.output_shape), param_count=result.param_count,
        trainable_params=result.trainable_params, layers=[msgspec.to_builtins(layer) for layer in result.layers],
        flops=_count(result.flops), reported_by=REPORTED_BY, **common)


def validate(request: ValidateRequest, runner: Runner, timeout_s: float, memory: str,
             policy: PrecheckPolicy = "reject") -> ValidationResult:
    started = time.monotonic()
    rejected, flags = precheck(request.source, request.class_name, policy)
    if rejected is not None:
        return msgspec.structs.replace(rejected, duration_s=round(time.monotonic() - started, 3))
    job = ValidateJob(source=request.source, class_name=request.class_name, input_shape=list(request.input_shape),
                      input_dtype=request.input_dtype, vocab_size=request.vocab_size)
    outcome = runner.run(job, b"", timeout_s, job_id=f"{request.run_id}-{request.iteration}-validate")
    result = outcome_to_result(outcome, timeout_s, memory, getattr(runner.limits, "pids", None))
    boundary = getattr(runner, "boundary", None)  # a container runner's: runsc or runc
    if boundary is not None:
        result = msgspec.structs.replace(result, runtime=boundary.runtime)
    if flags:
        result = msgspec.structs.replace(result, flags=flags)
    expected = request.expected_output_shape
    if result.ok and expected is not None and list(result.output_shape or []) != list(expected):
        return msgspec.structs.replace(
            result, ok=False, reason="output_shape", duration_s=round(time.monotonic() - started, 3),
            error=f"output shape {tuple(result.output_shape or [])} does not match the expected {tuple(expected)}")
    return result
