"""The full stack from compose.yaml, brought up with testcontainers' compose support: every
service healthy, a goal run to its report over the published NATS port, a second evaluator
replica added, and the stack brought down with its volume."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from testcontainers.compose import DockerCompose

from researcher.stack import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_IMAGE = "pytorch-researcher/service:latest"
SERVICES = ("nats", "dockerproxy", "planner", "assembler", "sandbox", "evaluator", "dashboard")


def compose_binary(tmp: Path) -> str | None:
    """testcontainers runs `<binary> compose ...`: docker itself where the v2 plugin exists, else
    a two-line adapter onto docker-compose 1.29 (what Debian ships), whose CLI takes the same
    `-f`, `up --detach`, `down --volumes` and `logs` that testcontainers uses."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return None
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("neither `docker compose` v2 nor docker-compose 1.29 is installed (apt-get install docker-compose)")
    shim = tmp / "docker-compose-v1"
    shim.write_text(f'#!/bin/sh\n[ "$1" = compose ] && shift\nexec {legacy} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return str(shim)


def health(client, project: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
        state = c.attrs["State"]
        out.setdefault(c.labels["com.docker.compose.service"], []).append(
            (state.get("Health") or {}).get("Status") or state["Status"])
    return out


def wait_healthy(client, project: str, counts: dict[str, int], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = health(client, project)
        if all(now.get(s, []).count("healthy") >= n for s, n in counts.items()):
            return
        time.sleep(2)
    raise AssertionError(f"not healthy after {timeout:.0f} s: {health(client, project)}")


def test_the_compose_stack_runs_a_goal_to_its_report(docker_engine, credentials, tmp_path, monkeypatch):
    try:
        docker_engine.images.get(SERVICE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{SERVICE_IMAGE} is missing: `make service-image` (make test builds it)")
    project, port = f"prtest{uuid.uuid4().hex[:8]}", free_port()
    # compose reads these from the environment of the commands testcontainers runs
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", project)
    monkeypatch.setenv("NATS_PORT", str(port))
    dashboard = free_port()
    monkeypatch.setenv("DASHBOARD_PORT", str(dashboard))
    monkeypatch.setenv("RESEARCHER_DATA_DIR", str(tmp_path / "data"))
    # every service on its own role's credential (make up's RESEARCHER_CREDENTIALS); the CLI below
    # finds the client's in the tests' home
    monkeypatch.setenv("RESEARCHER_CREDENTIALS", str(credentials.root))
    (tmp_path / "data").mkdir()
    stack = DockerCompose(context=str(ROOT), compose_file_name="compose.yaml", wait=False,
                          docker_command_path=compose_binary(tmp_path))
    with stack:
        wait_healthy(docker_engine, project, {name: 1 for name in SERVICES})
        proc = subprocess.run(
            [sys.executable, "-m", "researcher.cli", "run", "small CNN for digits", "--dataset", "digits",
             "--target-accuracy", "0.999", "--max-iterations", "1", "--num-seeds", "2", "--subset-size", "600",
             "--max-epochs", "2", "--json", "--nats-url", f"tls://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "NATS_URL": ""})
        assert proc.returncode == 0, proc.stderr[-3000:] + stack.get_logs()[0][-3000:]
        report = json.loads(proc.stdout)
        # the dashboard, from the same image, on its published port: the run, as the registry has it
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/runs/{report['run_id']}", timeout=30) as page:
            run_page = page.read().decode()

        # `make scale EVALUATORS=2`: a second replica joins the same work queue
        scale = [*stack.compose_command_property, "up", "-d", "--no-recreate", "--scale", "evaluator=2", "evaluator"]
        subprocess.run(scale, cwd=ROOT, check=True, capture_output=True)
        wait_healthy(docker_engine, project, {"evaluator": 2}, timeout=120)
        logs, _ = stack.get_logs("planner")
        # each replica is named by its compose slot, which a recreated container keeps
        evaluators = {f"{project}-evaluator-{c.labels['com.docker.compose.container-number']}"
                      for c in docker_engine.containers.list(filters={"label": [
                          f"com.docker.compose.project={project}", "com.docker.compose.service=evaluator"]})}
    assert report["status"] == "max_iterations"
    # the product's default runtime: gVisor wherever the engine has it, through the Docker socket proxy
    has_runsc = "runsc" in (docker_engine.info().get("Runtimes") or {})
    assert set(report["container_runtimes"]) == ({"runsc"} if has_runsc else {"runc"}), report["container_runtimes"]
    [it] = report["iterations"]
    assert it["validation"]["ok"] is True and it["evaluation"]["aggregated"]["val_accuracy"]["n"] == 2
    assert {s["evaluator"] for s in it["evaluation"]["seed_results"]} == {f"{project}-evaluator-1"}  # the stack's replica
    assert evaluators == {f"{project}-evaluator-1", f"{project}-evaluator-2"}
    assert "planner_ready" in logs
    assert report["goal"] in run_page and "max_iterations" in run_page
    # down --volumes: nothing of the project is left
    assert health(docker_engine, project) == {}
    assert not docker_engine.volumes.list(filters={"label": f"com.docker.compose.project={project}"})
