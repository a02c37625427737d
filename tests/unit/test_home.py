"""The embedded stack's home: one owner of its JetStream store at a time, and a running stack
found by its readers; the lock is the kernel's, so it goes with a process however it ends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from researcher.home import Home, HomeBusyError, default_home


def test_the_default_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RESEARCHER_HOME", str(tmp_path / "mine"))
    assert default_home() == tmp_path / "mine"
    monkeypatch.delenv("RESEARCHER_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "pytorch-researcher"


def test_a_second_owner_is_told_who_holds_the_home(tmp_path):
    home = Home(tmp_path)
    first = home.lock("researcher run")
    try:
        with pytest.raises(HomeBusyError, match=r"in use by researcher run \(pid \d+\).*--home DIR"):
            home.lock("researcher report")
    finally:
        first.release()
    home.lock("researcher report").release()  # free again once released


def test_readers_find_the_running_stack_and_ignore_a_killed_ones_leftover(tmp_path):
    home = Home(tmp_path)
    lock = home.lock("researcher run")
    lock.announce("nats://127.0.0.1:4999")
    assert home.running_stack() == "nats://127.0.0.1:4999"
    lock.release()
    assert home.running_stack() is None and not home.stack_file.exists()

    # a stack killed with SIGKILL leaves its stack.json, but its lock died with it
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from researcher.home import Home; "
        "lock = Home(__import__('pathlib').Path(sys.argv[1])).lock('researcher run'); "
        "lock.announce('nats://127.0.0.1:4998'); print('held', flush=True); sys.stdin.read()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert home.running_stack() == "nats://127.0.0.1:4998"
        holder.kill()
        holder.wait(timeout=10)
    finally:
        holder.kill()
    assert json.loads(home.stack_file.read_text())["url"] == "nats://127.0.0.1:4998"  # the leftover
    assert home.running_stack() is None
    home.lock("researcher run").release()  # the kernel dropped the dead holder's lock
    assert not home.stack_file.exists()


def test_runs_in_an_empty_home_is_an_answer_not_an_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "researcher.cli", "runs", "--home", str(tmp_path / "new")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "no runs yet in" in done.stderr and "--nats-url" in done.stderr
