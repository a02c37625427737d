"""The commands that do not train start without the heavy libraries. Deterministic, not timed:
each case runs in a fresh interpreter and reports which of the heavy modules it imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Seconds and hundreds of MB each on import: torch 1.4 s, sklearn+scipy 1.2 s, openai 0.8 s.
HEAVY = ("torch", "numpy", "sklearn", "scipy", "matplotlib", "optuna", "openai", "docker", "pandas")

# Parses the arguments as `researcher` does and runs main() up to the point where it would need
# a stack (no --nats-url: submit, report and export stop with their usage message), then prints
# the heavy modules that were imported.
PROBE = """
import json, sys
from researcher import cli
argv = json.loads(sys.argv[1])
try:
    cli.main(argv)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def heavy_imports(argv: list[str], **extra_env: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"} | extra_env  # submit, report, export: no stack
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["submit", "--help"],
    ["submit", "a small CNN", "--dataset", "digits"],
    ["submit", "a small CNN", "--dataset", "cifar11"],  # the name check answers without numpy
    ["report", "0123456789abcdef"],
    ["report", "0123456789abcdef", "--json"],
    ["export", "0123456789abcdef", "out"],
    ["runs"],
    ["--version"],
    ["validate", "--help"],
    ["evaluate", "--help"],
], ids=lambda argv: " ".join(argv))
def test_light_commands_import_nothing_heavy(argv):
    assert heavy_imports(argv) == []


def test_run_on_missing_data_stops_before_the_data_libraries(tmp_path):
    """`researcher run` checks the data set's files without numpy, first: not even the LLM
    flags' check (openai) has been imported when it refuses."""
    assert heavy_imports(["run", "a small CNN", "--dataset", "cifar10"], RESEARCHER_DATA__DIR=str(tmp_path)) == []


def test_validate_imports_no_torch():
    """`researcher validate` runs the model in a container: the CLI itself needs the Docker client
    (validating directly) but never torch, numpy or the evaluation stack."""
    probe = ("import json, sys; from researcher import validate_cmd; "
             "from shared.sandboxing import runners, validate; "
             f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["docker"]
