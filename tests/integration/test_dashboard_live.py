"""The dashboard followed in a real headless Chromium while a real run goes on: the stack's services
and the dashboard as processes (real nats-server, real Docker), a goal submitted through the CLI.
The run page shows a candidate appear without a reload, the candidate's page its curves, and the
page's buttons pause, resume, refuse a broken config and stop the run, each recorded with who did it.
Screenshots: build/test-artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from researcher.dashboard_cmd import stack_env, with_dashboard
from researcher.stack import LocalStack, free_port
from shared.messaging.bus import connect
from shared.registry.store import Registry
from tests.browser import chromium, shoot, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BROKEN = '{"class_name": "Broken", "layers": [{"type": "NoSuchLayer"}], "epochs": 2}'


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "researcher.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NATS_URL": ""})


def said(web) -> str:
    return web.find_element("id", "said").text


def press(web, button: str, expect: str) -> str:
    """Press a steering button (the form posts, the page comes back with the planner's answer)."""
    web.find_element("id", button).click()
    wait_for(web, lambda w: w.find_elements("id", "said") and expect in said(w), f"{button}: {expect!r}")
    return said(web)


async def _record(url: str, run_id: str):
    nc = await connect(url, "tests", role="admin")
    try:
        return await (await Registry.read(nc.jetstream())).get_run(run_id)
    finally:
        await nc.close()


def test_a_run_is_followed_live_and_steered_from_the_page(docker_engine, sequential_search, tmp_path):
    port = free_port()
    with LocalStack(log_dir=tmp_path / "logs", services=with_dashboard(port), env=stack_env(port)) as stack, \
            chromium() as web:
        base = f"http://127.0.0.1:{port}"
        submitted = cli("submit", "a long search on <b>digits</b>", "--dataset", "digits", "--target-accuracy",
                        "0.999", "--max-iterations", "20", "--num-seeds", "2", "--subset-size", "600",
                        "--max-epochs", "2", "--nats-url", stack.url)
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        web.get(f"{base}/runs/{run_id}")  # at once: a page that waits for the run if no planner has taken it yet
        wait_for(web, lambda w: w.find_elements("id", "status"), "the run's page once it started", timeout=120)
        wait_for(web, lambda w: w.execute_script("return document.body.dataset.live") == "following", "live.js")
        web.execute_script("window.__samePage = true")  # gone if the page were reloaded
        # a candidate appears, then is measured, with no reload: the events refresh the live part
        wait_for(web, lambda w: w.find_elements("css selector", "#in-flight a, #leaderboard a"), "a candidate in flight",
                 timeout=120)
        wait_for(web, lambda w: w.find_elements("css selector", "#leaderboard a"), "a measured candidate", timeout=180)
        assert web.execute_script("return window.__samePage") is True
        assert web.find_elements("css selector", "#events li.ev-evaluated")  # the event list grew live too
        assert "a long search on <b>digits</b>" in web.find_element("id", "goal").text
        shoot(web, "live-run")

        web.get(wait_for(web, lambda w: w.find_element("css selector", "#leaderboard a").get_attribute("href"),
                         "the measured candidate's address"))
        wait_for(web, lambda w: w.execute_script(
            "const imgs = [...document.querySelectorAll('#plots img')];"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"), "its curves drawn")
        assert web.find_elements("id", "seeds") and web.find_elements("id", "config")
        shoot(web, "live-candidate")
        web.get(f"{base}/runs/{run_id}")

        web.find_element("css selector", "#steer-form input[name=name]").send_keys("Ada")
        assert "paused" in press(web, "pause", "paused")
        wait_for(web, lambda w: "(paused)" in w.find_element("id", "status").text, "the run shown paused")
        web.find_element("css selector", "#steer-form textarea").send_keys(BROKEN)
        refused = press(web, "queue", "refused")
        assert "NoSuchLayer" in refused, refused
        assert "resumed" in press(web, "resume", "resumed")
        press(web, "stop", "stopp")  # stopped, or stopping once its best candidate is tested
        wait_for(web, lambda w: "stopped" in w.find_element("id", "status").text, "the run shown stopped", timeout=60)
        shoot(web, "stopped")
        run = asyncio.run(_record(stack.url, run_id))
    assert run.status == "stopped" and "via the dashboard" in run.reason, run.reason
    assert [s.action for s in run.steering] == ["pause", "resume", "stop"]  # a refused config changes nothing
    assert all(s.by.startswith("Ada via the dashboard from 127.0.0.1") for s in run.steering), run.steering
