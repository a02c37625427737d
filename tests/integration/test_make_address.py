"""The stack's address is one setting: NATS_PORT (and NATS_BIND), where `make up` publishes NATS,
is where the Makefile's goal, submit, report, export and runs look for it, unless NATS_URL is
given; and a command pointed where no server answers says so within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from researcher.stack import free_port
from shared.messaging.bus import COMMAND_CONNECT_S

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]  # the venv running the tests: `make venv` is not redone


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT", "NATS_BIND", "MAKEFLAGS")}
    return subprocess.run(["make", "--no-print-directory", "-o", "venv", f"VENV={VENV}", *args], cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120)


def test_make_report_reaches_the_stack_on_nats_port(nats_url):
    port = urlparse(nats_url).port
    done = make("report", "RUN=nope", f"NATS_PORT={port}")
    assert done.returncode != 0
    assert f"no run 'nope' in the registry at tls://127.0.0.1:{port}" in done.stderr, done.stderr


@pytest.mark.parametrize(("settings", "url"), [
    ((), "tls://127.0.0.1:4222"),
    (("NATS_PORT=4333",), "tls://127.0.0.1:4333"),
    (("NATS_PORT=4333", "NATS_BIND=0.0.0.0"), "tls://127.0.0.1:4333"),  # every interface: this machine's too
    (("NATS_BIND=10.0.0.5",), "tls://10.0.0.5:4222"),
    (("NATS_PORT=4333", "NATS_URL=nats://head:4999"), "nats://head:4999"),  # given: it wins
])
def test_every_target_that_talks_to_the_stack_derives_one_url(settings, url):
    for target in ("goal", "submit", "report RUN=r1", "export RUN=r1", "runs"):
        done = make("-n", *target.split(), *settings)
        assert done.returncode == 0, done.stderr
        assert f"--nats-url {url}" in done.stdout, (target, done.stdout)


def test_make_help_shows_the_url_the_targets_use():
    printed = make("help", "NATS_PORT=4333").stdout
    assert "NATS_PORT=4333" in printed and "NATS_URL=tls://127.0.0.1:4333" in printed


def test_a_command_pointed_where_no_server_answers_says_so_within_seconds():
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "report", "r1", "--nats-url",
                           f"nats://127.0.0.1:{free_port()}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 1
    assert "no NATS server answered at nats://127.0.0.1:" in done.stderr and "NATS_PORT" in done.stderr, done.stderr
    assert took < COMMAND_CONNECT_S + 5, took


def test_make_evaluator_down_needs_no_address_or_credential():
    """Stopping a machine's evaluators takes no NATS_URL or NATS_CREDENTIALS (compose still reads
    the file, so the defaults must parse); a project of the test's own, so no real one is touched."""
    done = make("evaluator-down", f"EVALUATOR_PROJECT=prtest-down-{os.getpid()}")
    assert done.returncode == 0, done.stderr
