"""`make bench-cli`: how fast the `researcher` CLI starts, against baselines measured in the same run.

Each command runs as its own process (`python -m researcher.cli ...`, this tree's code), a few
times in turn: the wall time as this process sees it, the peak RSS as the command's own process
reports it at exit (VmHWM). Rows:
  python -c pass       the interpreter alone: the floor every command pays
  researcher --help    the parser: what every command pays before doing anything
  researcher report    an unknown run against a real nats-server (started as researcher/stack.py
                       does): connect, open the registry, answer "no run"
  researcher validate  a small CNN, --direct (one cold container), against the same validation
                       run in this process through the same runner (`validate` with pool size 0):
                       the ratio is what the CLI adds to the cold container
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.security.credentials import Credentials, default_root
from researcher.stack import free_port, start_nats_server
from shared.runtime.log import configure_logging

ROOT = Path(__file__).resolve().parents[1]


# Runs the command in this interpreter the way `python -m` does and, at exit, writes the peak
# RSS of its own memory since exec (VmHWM) to $BENCH_HWM. wait4's ru_maxrss would not do: Linux
# carries the spawning process's RSS across fork and exec into it, so every child of this process
# would look at least as big as the benchmark itself (300 MB once the sandbox code is imported).
WRAPPER = """
import atexit, os, runpy, sys
def hwm():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_HWM"], "w") as out:
        out.write(kb)
atexit.register(hwm)
if len(sys.argv) > 1:
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def timed_process(args: list[str], expect: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """`python -m MODULE ARGS...` (nothing at all when args is empty) -> (seconds, peak RSS in MB)."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        hwm, err_path = Path(tmp) / "hwm", Path(tmp) / "stderr"
        with open(err_path, "wb") as err:  # a file, not a pipe: a chatty child never blocks
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=err, env={**os.environ, "BENCH_HWM": str(hwm)})
            wall = time.perf_counter() - started
        if done.returncode not in expect:
            tail = err_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(args)} exited {done.returncode}, not {expect}:\n{tail}")
        return wall, int(hwm.read_text()) / 1024  # kB -> MB


def row(name: str, samples: list[tuple[float, float]], base: tuple[float, float] | None, unit: str = "") -> str:
    wall = statistics.median(s for s, _ in samples)
    rss = max(m for _, m in samples)
    text = f"{name:<22} n={len(samples)}  median {wall:6.3f} s  peak RSS {rss:6.1f} MB"
    if base:
        text += f"   {wall / base[0]:5.1f}x the time, {rss / base[1]:4.1f}x the memory of {unit}"
    return text


def cli(*args: str) -> list[str]:
    return ["researcher.cli", *args]


def bench_validate(runs: int) -> None:
    """The CLI's `validate --direct` against the cold container alone, interleaved so that a
    busy machine weighs on both alike."""
    from benchmarks.bench_sandbox import SMALL_CNN
    from shared.errors import SandboxUnavailableError
    from shared.messaging.messages import ValidateRequest
    from shared.modelspec.assemble import assemble
    from shared.runtime.config import load_config
    from shared.sandboxing.runners import make_runner
    from shared.sandboxing.validate import validate

    config = load_config()
    s = config.sandbox
    model = assemble(SMALL_CNN)
    request = ValidateRequest(run_id="bench-cli", source=model.source, class_name=model.class_name,
                              input_shape=[1, 3, 32, 32], expected_output_shape=[1, 10])
    try:
        runner = make_runner(config, owner=f"bench-cli-{os.getpid()}")
    except SandboxUnavailableError as exc:
        print(f"researcher validate     skipped: {exc} (make images)")
        return
    runner.pool_size = 0  # one cold container per validation, as the CLI starts it
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        path = Path(tmp) / "small_cnn.py"
        path.write_text(model.source, encoding="utf-8")
        argv = cli("validate", str(path), "--class-name", model.class_name, "--input-shape", "1,3,32,32", "--direct")
        timed_process(argv)  # the page cache and the engine warm, as after any first use
        command, container = [], []
        try:
            for _ in range(runs):
                command.append(timed_process(argv))
                started = time.perf_counter()
                result = validate(request, runner, s.validate_timeout_s, s.memory, s.precheck)
                if not result.ok:
                    raise SystemExit(f"benchmark model rejected: {result.error}")
                container.append((time.perf_counter() - started, 0.0))
        finally:
            runner.remove_strays()
    cold = statistics.median(t for t, _ in container)
    print(f"{'cold container alone':<22} n={len(container)}  median {cold:6.3f} s  (validate() in this process, pool size 0)")
    print(row("researcher validate", command, None)
          + f"   {statistics.median(t for t, _ in command) / cold:4.2f}x the cold container")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each command")
    parser.add_argument("--no-validate", action="store_true", help="skip validate (needs Docker and make images)")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    base_argv, help_argv = [], cli("--help")
    base, helps = [], []
    for _ in range(args.runs):  # interleaved: a busy machine weighs on both alike
        base.append(timed_process(base_argv))
        helps.append(timed_process(help_argv))
    floor = (statistics.median(t for t, _ in base), max(m for _, m in base))
    print(row("python -c pass", base, None))
    print(row("researcher --help", helps, floor, "python -c pass"))

    store = tempfile.TemporaryDirectory(prefix="bench-cli-js-")
    port = free_port()
    # the stack's configuration (TLS, the roles): the command connects as a client, as a user's does
    nats = start_nats_server(port, store.name, subprocess.DEVNULL, credentials=Credentials(default_root()))
    try:
        report_argv = cli("report", "0000000000000000", "--nats-url", f"tls://127.0.0.1:{port}")
        timed_process(report_argv, expect=(1,))  # the first one warms the page cache
        reports = [timed_process(report_argv, expect=(1,)) for _ in range(args.runs)]
        print(row("researcher report", reports, floor, "python -c pass"))
    finally:
        nats.terminate()
        nats.wait(timeout=10)
        store.cleanup()

    if not args.no_validate:
        bench_validate(args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
