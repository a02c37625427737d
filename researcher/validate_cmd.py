"""`researcher validate FILE --class-name NAME --input-shape 1,3,32,32`: one model file through
the sandbox's own code path: the sandbox service when a stack is reachable, directly otherwise.

Exit status: 0 the model is valid, 1 it was rejected, 2 a usage error, 3 the sandbox could not
run at all (no Docker engine or image).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import nats
from nats.errors import Error as NatsError

from researcher.goals import DefaultsHelp
from shared.messaging import subjects
from shared.messaging.bus import encode, secured
from shared.runtime.config import Config, load_config
from shared.errors import ConfigFileError, SandboxUnavailableError
from shared.messaging.messages import ErrorReply, ValidateRequest, ValidationResult


class UsageError(Exception):
    pass


def add_parser(sub) -> None:
    p = sub.add_parser("validate", formatter_class=DefaultsHelp, help="validate one model file in the locked-down sandbox",
                       description="Validate one model file in the locked-down sandbox: exit 0 valid, 1 rejected, "
                                   "2 usage error, 3 sandbox unavailable.")
    p.add_argument("file", type=Path, help="Python source defining an nn.Module")
    p.add_argument("--class-name", required=True, help="the nn.Module class to instantiate")
    p.add_argument("--input-shape", required=True, help="comma-separated, batch first, e.g. 1,3,32,32")
    p.add_argument("--expected-output-shape", default=None, help="comma-separated; a different shape is a rejection")
    p.add_argument("--vocab-size", type=int, default=0,
                   help="the input is token ids (B, L) int64 in [1, N) with trailing padding 0 (a text model)")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: sandbox.validate_timeout_s)")
    p.add_argument("--precheck", choices=["reject", "flag"], default=None,
                   help="what the pre-check does with dangerous constructs when validating directly")
    p.add_argument("--direct", action="store_true", help="never use a running stack's sandbox service")
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL"), help="a running stack (default: $NATS_URL)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_shape(text: str, flag: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers such as 1,3,32,32, not {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"{flag} needs at least one dimension, all positive: {text!r}")
    return dims


def build_request(args: argparse.Namespace) -> ValidateRequest:
    try:
        source = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from exc
    expected = parse_shape(args.expected_output_shape, "--expected-output-shape") if args.expected_output_shape else None
    if args.vocab_size < 0 or args.vocab_size == 1:  # 0: float inputs; ids need [PAD] and at least one more
        raise UsageError(f"--vocab-size must be 0 (float inputs) or at least 2 (token ids 0..N-1, 0 the padding), "
                         f"not {args.vocab_size}")
    return ValidateRequest(run_id="cli", iteration=0, source=source, class_name=args.class_name,
                           input_shape=parse_shape(args.input_shape, "--input-shape"), expected_output_shape=expected,
                           input_dtype="int64" if args.vocab_size > 0 else "float32", vocab_size=max(args.vocab_size, 0))


async def via_service(url: str, request: ValidateRequest, timeout_s: float) -> ValidationResult | None:
    """-> the service's result, or None when no stack or no sandbox service answers."""
    async def quiet(exc: Exception) -> None:  # the caller says what happened, once
        pass

    parsed = urlsplit(url if "://" in url else f"nats://{url}")
    try:  # nats-py retries a refused first connection for a while: ask the port once first
        _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), 2)
        writer.close()
    except (OSError, asyncio.TimeoutError, ValueError):
        return None
    try:
        nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0,
                                                 error_cb=quiet, **secured()), timeout=5)
    except (NatsError, OSError, asyncio.TimeoutError):
        return None
    try:
        reply = await nc.request(subjects.VALIDATE_SUBJECT, encode(request), timeout=timeout_s + 30)
    except (NatsError, asyncio.TimeoutError):  # no responders, or none in time
        return None
    finally:
        await nc.close()
    try:
        return msgspec.json.decode(reply.data, type=ValidationResult)
    except msgspec.ValidationError:
        error = msgspec.json.decode(reply.data, type=ErrorReply)
        return ValidationResult(ok=False, reason="bad_request", error=error.error)


def direct(config: Config, request: ValidateRequest, timeout_s: float, policy: str) -> tuple[ValidationResult, str]:
    """-> the verdict, and the runtime its container ran under (runsc | runc)."""
    # The Docker client, imported only when this process starts the container itself.
    from shared.sandboxing.runners import make_runner
    from shared.sandboxing.validate import validate

    runner = make_runner(config, owner=f"cli-{os.getpid()}")  # no start_pool(): one cold container
    try:
        result = validate(request, runner, timeout_s, config.sandbox.memory, policy)  # type: ignore[arg-type]
        return result, runner.boundary.runtime
    finally:
        runner.remove_strays()


def format_flops(flops: int) -> str:
    """2560 -> "2.6 kFLOPs", 1_234_567 -> "1.2 MFLOPs" (an int64 count ends in the E range)."""
    if flops < 1000:
        return f"{flops} FLOPs"
    value = float(flops)
    for prefix in ("k", "M", "G", "T", "P", "E"):
        value /= 1000
        if value < 999.95 or prefix == "E":
            break
    return f"{value:.1f} {prefix}FLOPs"


def describe(result: ValidationResult, via: str, wall_s: float) -> str:
    lines = []
    if result.ok:
        flops = f", {format_flops(result.flops)} per forward pass" if result.flops is not None else ""
        lines.append(f"valid: output shape {tuple(result.output_shape or [])}, {result.param_count:,} parameters "
                     f"({result.trainable_params:,} trainable), {len(result.layers)} layers{flops}")
        lines.append("  (figures reported by the model's process, which runs the code: its own claims)")
    else:
        lines.append(f"rejected ({result.reason}): {result.error}")
    lines += [f"  flag: {flag}" for flag in result.flags]
    lines.append(f"  validated by the {via} in {result.duration_s:.2f} s ({wall_s:.2f} s in all)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config()
        request = build_request(args)
    except (UsageError, ConfigFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    timeout_s = args.timeout or config.sandbox.validate_timeout_s
    started = time.monotonic()
    # the container's runtime: known here for a local one; a sandbox service's result carries its own
    result, via, runtime = None, "sandbox service", None
    if args.nats_url and not args.direct:
        result = asyncio.run(via_service(args.nats_url, request, timeout_s))
        if result is None:
            print(f"no sandbox service answered at {args.nats_url}; validating directly", file=sys.stderr)
    if result is None:
        via = "local sandbox"
        try:
            result, runtime = direct(config, request, timeout_s, args.precheck or config.sandbox.precheck)
        except SandboxUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    wall_s = time.monotonic() - started
    runtime = runtime or result.runtime
    if args.json:
        print(json.dumps({**msgspec.to_builtins(result), "via": via, "runtime": runtime, "wall_s": round(wall_s, 3)},
                         indent=2, allow_nan=False))
    else:
        print(describe(result, f"{via} ({runtime})" if runtime else via, wall_s))
    return 0 if result.ok else 1
