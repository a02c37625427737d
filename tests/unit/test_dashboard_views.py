"""The dashboard's logic apart from its server: what a page says of a failure, the candidate a
diff is taken against, the event hub, a config typed into the page, the origin check, the CLI's
port check."""

from __future__ import annotations

import asyncio
import socket

from services.dashboard import views
from services.dashboard.app import _config, _same_origin
from services.dashboard.live import ALL, Hub
from shared.evaluation.aggregate import summarise
from shared.messaging.messages import Event, Goal, SeedResult, ValidationResult
from shared.registry.records import IterationRecord, RunRecord
from researcher.dashboard_cmd import port_problem

RUN = "views"
GOAL = Goal(run_id=RUN, goal="digits", dataset="digits", target_accuracy=0.9, num_seeds=2)


def measured(n: int, accuracy: float, started: float, finished: float) -> IterationRecord:
    seeds = {s: SeedResult(job_id=f"{RUN}.{n}.{s}", run_id=RUN, iteration=n, seed=s, ok=True,
                           metrics={"val_accuracy": accuracy}) for s in (0, 1)}
    return IterationRecord(run_id=RUN, iteration=n, state="decided", seeds=[0, 1], evaluation=summarise(seeds, [0, 1]),
                           started_at=started, finished_at=finished)


def test_a_failure_always_says_why():
    rejected = IterationRecord(run_id=RUN, iteration=1, state="rejected",
                               validation=ValidationResult(ok=False, reason="timeout", error="over 60 s"))
    assert views.why_failed(rejected) == "rejected by the sandbox (timeout): over 60 s"
    silent = IterationRecord(run_id=RUN, iteration=2, state="rejected")
    assert views.why_failed(silent) == "rejected: no reason recorded"
    lost = {s: SeedResult(job_id=f"{RUN}.3.{s}", run_id=RUN, iteration=3, seed=s, ok=False, reason="oom",
                          error="out of memory") for s in (0, 1)}
    failed = IterationRecord(run_id=RUN, iteration=3, state="decided", evaluation=summarise(lost, [0, 1]))
    assert views.why_failed(failed) == "every seed failed: seed 0: oom out of memory; seed 1: oom out of memory"
    assert views.why_failed(measured(4, 0.9, 0, 1)) is None


def test_a_diff_is_taken_against_the_best_finished_before_it_was_proposed():
    run = RunRecord(run_id=RUN, goal=GOAL)
    first, better, late = measured(1, 0.80, 0, 10), measured(2, 0.95, 1, 20), measured(3, 0.99, 2, 100)
    new = IterationRecord(run_id=RUN, iteration=4, started_at=50)
    assert views.incumbent([first, better, late, new], new, run).iteration == 2  # 3 had not finished at 50
    assert views.incumbent([first], first, run) is None
    lines = views.diff_lines("a\nb\n", "a\nc\n", "candidate 2", "candidate 4")
    assert ("del", "-b") in lines and ("add", "+c") in lines and lines[0] == ("head", "--- candidate 2")


def test_the_hub_keeps_each_runs_latest_events_and_feeds_its_followers():
    async def scenario():
        hub = Hub(events_kept=2, runs_kept=2)
        seen = []
        hub.on_event(seen.append)
        follower = hub.follow("a").__aiter__()
        everything = hub.follow(ALL).__aiter__()
        waiting = asyncio.ensure_future(follower.__anext__())
        all_waiting = asyncio.ensure_future(everything.__anext__())
        await asyncio.sleep(0)
        for i in range(3):
            hub.add(Event(run_id="a", kind="proposed", message=f"m{i}"))
        hub.add(Event(run_id="b", kind="proposed", message="b0"))
        hub.add(Event(run_id="c", kind="proposed", message="c0"))  # a third run: the oldest one is forgotten
        first, any_first = await waiting, await all_waiting
        await follower.aclose()
        await everything.aclose()
        return hub, seen, first, any_first

    hub, seen, first, any_first = asyncio.run(scenario())
    assert first.message == "m0" and any_first.message == "m0"
    assert len(seen) == 5 and hub.recent("a") == [] and [e.message for e in hub.recent("c")] == ["c0"]
    assert hub.followers == 0  # a page that went away leaves nothing behind


def test_a_config_typed_into_the_page():
    assert _config('{"layers": []}') == ({"layers": []}, None)
    assert _config("layers:\n  - type: Flatten\n") == ({"layers": [{"type": "Flatten"}]}, None)
    assert _config('{"model_config": {"lr": 0.1}}') == ({"lr": 0.1}, None)  # a report's best, unwrapped
    assert "paste a model config" in _config("  ")[1]
    assert "must be a model_config object" in _config("[1, 2]")[1]
    assert "neither JSON nor YAML" in _config("{not: [closed")[1]
    assert "a model_config is at most 65,536" in _config('{"a": "' + "x" * 70_000 + '"}')[1]
    # a few hundred characters of nested aliases would expand to gigabytes: refused before they do
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    assert "aliases (*name) are not allowed" in _config(bomb)[1]


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_a_steering_post_from_another_site_is_refused():
    assert _same_origin(_Request({"host": "127.0.0.1:8088", "origin": "http://127.0.0.1:8088"}))
    assert _same_origin(_Request({"host": "127.0.0.1:8088"}))  # no Origin: not a browser's cross-site post
    assert not _same_origin(_Request({"host": "127.0.0.1:8088", "origin": "http://evil.example"}))
    assert not _same_origin(_Request({"host": "127.0.0.1:8088", "origin": "null"}))


def test_the_cli_says_when_the_dashboards_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"port {port} is in use" in port_problem(port)
    assert "is not a TCP port" in port_problem(70000)
    assert port_problem(port) is None


def test_researcher_run_refuses_a_dashboard_it_cannot_serve(capsys):
    from researcher.cli import main

    assert main(["run", "x", "--dataset", "digits", "--dashboard", "--nats-url", "tls://127.0.0.1:9"]) == 2
    assert "the stack at --nats-url serves its own" in capsys.readouterr().err
    assert main(["run", "x", "--dataset", "digits", "--dashboard", "0"]) == 2
    assert "--dashboard/--port 0 is not a TCP port" in capsys.readouterr().err
