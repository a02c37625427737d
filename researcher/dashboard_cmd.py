"""The dashboard from the CLI: `researcher run --dashboard [PORT]` serves it beside an embedded run,
and `researcher dashboard [--port PORT]` serves a home's runs (the embedded stack's registry) until
Ctrl-C. The stack started with `make up` serves its own (compose's `dashboard` service)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import subprocess
import sys
from contextlib import ExitStack

from researcher import runs_cmd
from researcher.stack import SERVICES, LocalStack, spawn, stop

DEFAULT_PORT = 8088  # as compose.yaml publishes it


def add_run_arg(run: argparse.ArgumentParser) -> None:
    run.add_argument("--dashboard", nargs="?", type=int, const=DEFAULT_PORT, default=None, metavar="PORT",
                     help=f"serve the live dashboard on http://127.0.0.1:PORT/ (default {DEFAULT_PORT}) while the "
                          "run goes on (an embedded stack only: a stack from `make up` serves its own)")


def add_parser(sub) -> None:
    p = sub.add_parser("dashboard", help="serve the live dashboard of this home's runs until Ctrl-C")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"on http://127.0.0.1:PORT/ (default {DEFAULT_PORT})")
    runs_cmd.add_home_arg(p)


def port_problem(port: int) -> str | None:
    """Why the dashboard cannot listen on 127.0.0.1:`port`, said before anything starts; None: it can."""
    if not 1 <= port <= 65535:
        return f"--dashboard/--port {port} is not a TCP port (1-65535)"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} is in use (another dashboard? `make up` serves one on 8088): pick another, "
                        f"e.g. --dashboard {port + 1}")
            return f"the dashboard cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
    return None


def stack_env(port: int) -> dict[str, str]:
    return {"RESEARCHER_DASHBOARD__HOST": "127.0.0.1", "RESEARCHER_DASHBOARD__PORT": str(port)}


def with_dashboard(port: int | None) -> tuple[str, ...]:
    return SERVICES + ("dashboard",) if port is not None else SERVICES


def serve(args: argparse.Namespace) -> int:
    problem = port_problem(args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    home = runs_cmd.home_of(args)
    with ExitStack() as stack:
        running = home.running_stack()
        if running:  # a `researcher run` holds the home: its NATS server serves this dashboard too
            env = {**stack_env(args.port), "NATS_URL": running,
                   "NATS_CREDENTIALS": str(home.credentials.role("dashboard").path)}
            proc = spawn([sys.executable, "-m", "services.dashboard.main"], env={**os.environ, **env},
                         stdout=subprocess.DEVNULL, stderr=None)
            stack.callback(stop, proc, 10.0)
        else:
            local = stack.enter_context(LocalStack(services=("dashboard",), env=stack_env(args.port), home=home))
            proc = local.procs["dashboard"]
        print(f"the dashboard of the runs in {home.path}: http://127.0.0.1:{args.port}/ (Ctrl-C ends it)", file=sys.stderr)
        print("it ends with the `researcher run` it joined" if running else
              "it holds this home meanwhile: a `researcher run` here waits for it (use `researcher run --dashboard`)",
              file=sys.stderr)
        proc.wait()
    return 0 if proc.returncode == 0 else 1

