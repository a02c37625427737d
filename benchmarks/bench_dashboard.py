"""bench-dashboard: how fast the dashboard's pages load on a run of many candidates.

A run of --candidates candidates (benchmarks/dashboard_run.py: the registry's own records, measured
ones with three seeds, curves and confusion matrices, rejected and failed ones, LLM exchanges) is
written into a real nats-server (TLS, the stack's roles); the dashboard service runs as its own
process on it. Printed: each page's time over HTTP (the first load, whose records are all read from
the registry, and the median of the loads after it, which read only what can still change), its
size, and the ratio against /healthz in the same process (the server's floor); then, where Debian's
chromium is installed, the run page's load in a real browser (navigation to the load event).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.dashboard_run import serve_dashboard, write_run
from researcher.stack import free_port, start_nats_server
from shared.messaging.bus import connect
from shared.registry.store import Registry
from shared.security.credentials import Credentials, default_root

RUN = "bench-dashboard"


def fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


async def _write(url: str, candidates: int) -> None:
    nc = await connect(url, "bench", role="admin")
    try:
        await write_run(await Registry.open(nc.jetstream()), RUN, candidates)
    finally:
        await nc.close()


def browser_load(base: str, rounds: int) -> list[float] | None:
    import shutil

    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        return None
    from tests.browser import chromium

    loads = []
    with chromium() as web:
        for _ in range(rounds):
            web.get(f"{base}/runs/{RUN}")
            loads.append(web.execute_script(
                "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime") / 1000)
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="warm loads per page; the median is printed")
    args = parser.parse_args()
    credentials = Credentials(default_root())
    credentials.ensure()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        port = free_port()
        server = start_nats_server(port, str(Path(tmp) / "js"), subprocess.DEVNULL, credentials=credentials)
        try:
            url = f"tls://127.0.0.1:{port}"
            started = time.perf_counter()
            asyncio.run(_write(url, args.candidates))
            written = time.perf_counter() - started
            with serve_dashboard(url, credentials, Path(tmp) / "dashboard.log") as base:
                pages = {"/healthz (floor)": "/healthz", "runs": "/", "run (leaderboard of all)": f"/runs/{RUN}",
                         "run's live part": f"/runs/{RUN}/live", "a candidate": f"/runs/{RUN}/candidates/150",
                         "score vs compute plot": f"/runs/{RUN}/plots/compute.png"}
                rows = {}
                for name, path in pages.items():
                    cold, size = fetch(base + path)
                    warm = statistics.median(fetch(base + path)[0] for _ in range(args.rounds))
                    rows[name] = (cold, warm, size)
                browser = browser_load(base, 5)
        finally:
            server.terminate()
            server.wait(10)
    floor = rows["/healthz (floor)"][1]
    print(f"bench-dashboard: a run of {args.candidates} candidates (written in {written:.1f} s); the dashboard as "
          f"its own process; loopback HTTP; warm = the median of {args.rounds} loads after the first")
    print(f"{'page':<28}{'first s':>9}{'warm s':>9}{'KiB':>8}{'warm/floor':>12}")
    for name, (cold, warm, size) in rows.items():
        print(f"{name:<28}{cold:>9.3f}{warm:>9.3f}{size / 1024:>8.0f}{warm / floor:>12.1f}")
    if browser is None:
        print("browser: chromium or chromedriver not installed (scripts/setup-host.sh installs them)")
    else:
        print(f"browser (headless chromium): the run page to its load event, median of {len(browser)}: "
              f"{statistics.median(browser):.3f} s (first {browser[0]:.3f} s)")


if __name__ == "__main__":
    main()
