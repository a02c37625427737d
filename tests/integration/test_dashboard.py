"""The dashboard service on a registry written by the registry's own code: its pages over HTTP and in
a real headless Chromium. Real nats-server (TLS, the dashboard's own role), the service as its own
process; the records are a generated run (benchmarks/dashboard_run.py) with markup and script in
its goal, an LLM reply, an error and its code, which the pages must show as text and never run."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request

import pytest

from benchmarks.dashboard_run import HOSTILE, serve_dashboard, write_run
from shared.messaging.bus import connect
from shared.registry.store import Registry
from tests.browser import chromium, shoot, wait_for

pytestmark = [pytest.mark.slow]


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode(errors="replace"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


async def _write(nats_url: str) -> None:
    nc = await connect(nats_url, "tests", role="admin")
    try:
        registry = await Registry.open(nc.jetstream())
        await write_run(registry, "hostile-run", 30, hostile=True)
        await write_run(registry, "live-run", 12, status="running", seed=1)
    finally:
        await nc.close()


def test_the_dashboard_serves_a_registry_and_shows_hostile_text_as_text(nats_url, credentials, tmp_path):
    asyncio.run(_write(nats_url))
    with serve_dashboard(nats_url, credentials, tmp_path / "dashboard.log") as base:
        # a foreign page that rebinds its own name to this address reaches nothing (DNS rebinding)
        rebound = urllib.request.Request(base + "/runs/hostile-run", headers={"Host": "evil.example:8088"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=30)
        assert refused.value.code == 400
        forged = urllib.request.Request(base + "/runs/live-run/steer", data=b"action=stop", method="POST",
                                        headers={"Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=30)
        assert refused.value.code == 403 and b"another site" in refused.value.read()
        status, runs, headers = get(base + "/")
        assert status == 200 and "hostile-run" in runs and "live-run" in runs
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "<script>window.__pwned" not in runs and "&lt;script&gt;window.__pwned" in runs  # escaped
        status, page, _ = get(base + "/runs/hostile-run")
        assert status == 200 and 'id="leaderboard"' in page and 'id="failed"' in page
        assert "rejected by the sandbox (exception): RuntimeError: mat1 and mat2" in page  # a failure says why
        assert "every seed failed: seed 0: oom the container ran out of memory" in page
        status, candidate, _ = get(base + "/runs/hostile-run/candidates/11")
        assert status == 200 and 'id="diff"' in candidate and 'id="config"' in candidate
        assert re.search(r'<img src="/runs/hostile-run/candidates/11/plots/learning_curves.png"', candidate)
        status, png, headers = get(base + "/runs/hostile-run/candidates/11/plots/learning_curves.png")
        assert status == 200 and headers["content-type"] == "image/png"
        for plot in ("compute", "timeline"):
            assert get(f"{base}/runs/hostile-run/plots/{plot}.png")[0] == 200
        status, exchange, _ = get(base + "/runs/hostile-run/candidates/11/llm/0")
        assert status == 200 and "&lt;script&gt;" in exchange and "<script>window" not in exchange
        # bad addresses: a clear 404 that names what is missing, never a blank or a traceback
        for path, said in (("/runs/no-such-run", "no run &#39;no-such-run&#39; in the registry"),
                           ("/runs/hostile-run/candidates/99", "run hostile-run has no candidate 99 (it has 30)"),
                           ("/runs/a.b%3E", "in the registry"),
                           ("/runs/hostile-run/candidates/11/llm/5", "has no LLM exchange 5"),
                           ("/runs/hostile-run/plots/nope.png", "no plot &#39;nope&#39;")):
            status, body, _ = get(base + path)
            assert status == 404 and said in body, (path, body[-500:])

        with chromium() as web:
            web.get(base + "/runs/hostile-run")
            wait_for(web, lambda w: w.find_element("id", "leaderboard"), "the leaderboard")
            assert web.execute_script("return window.__pwned") is None  # nothing of the goal text ran
            assert HOSTILE in web.find_element("id", "goal").text  # shown as the text it is
            shoot(web, "run")
            web.get(base + "/runs/hostile-run/candidates/11")
            wait_for(web, lambda w: w.execute_script(
                "return [...document.querySelectorAll('#plots img')].every(i => i.complete && i.naturalWidth > 0)"),
                "the candidate's plots drawn")
            assert web.execute_script("return window.__pwned") is None
            shoot(web, "candidate")
            web.get(base + "/runs/hostile-run/candidates/11/llm/0")
            reply = web.find_element("id", "reply").text  # the reply as JSON: its quotes escaped
            assert "<script>window.__pwned = 1</script>" in reply and web.execute_script("return window.__pwned") is None
            web.get(base + "/runs/no-such-run")
            assert "no run 'no-such-run' in the registry" in web.find_element("id", "problem").text
            web.get(base + "/")
            shoot(web, "runs")
