"""The embedded stack's home: where `researcher run` keeps what outlives the command.

    $RESEARCHER_HOME (default $XDG_DATA_HOME/pytorch-researcher, i.e. ~/.local/share/pytorch-researcher)
      jetstream/        the nats-server's JetStream store: the registry of every run (records, code, plots, weights)
      logs/<time>/      one log file per process of each `researcher run`
      stack.lock        held (flock) by whoever has the store open: a running embedded stack, or a
                        reader (`researcher report/export/runs`) for the second it takes
      stack.json        the running embedded stack's NATS URL and pid, for readers to join it
      credentials/      the NATS CA and one certificate per role (shared/security/credentials.py),
                        made on first use; also the `make up` stack's (RESEARCHER_CREDENTIALS moves it)

One nats-server at a time may own a JetStream store, so the lock decides: a reader joins a
running stack through stack.json, or holds the lock and starts a nats-server of its own on the
store for as long as it reads. The lock is the kernel's (fcntl.flock): it goes with its process,
however that ends, so a killed command never leaves the home locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import ResearcherError

if TYPE_CHECKING:
    from shared.security.credentials import Credentials


def default_home() -> Path:
    if os.environ.get("RESEARCHER_HOME"):
        return Path(os.environ["RESEARCHER_HOME"]).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "pytorch-researcher"


class HomeBusyError(ResearcherError):
    def __init__(self, home: Path, holder: dict) -> None:
        self.home, self.holder = home, holder
        who = f"{holder.get('what', 'another command')} (pid {holder.get('pid', '?')})"
        super().__init__(f"{home} is in use by {who}; wait for it to finish, or give this command a home of its "
                         f"own with --home DIR (or RESEARCHER_HOME)")


@dataclass
class Home:
    path: Path

    @property
    def store(self) -> Path:
        return self.path / "jetstream"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def credentials(self) -> "Credentials":
        """The credentials of the stacks on this home's store (RESEARCHER_CREDENTIALS overrides)."""
        from shared.security.credentials import Credentials

        chosen = os.environ.get("RESEARCHER_CREDENTIALS")
        return Credentials(Path(chosen).expanduser() if chosen else self.path / "credentials")

    @property
    def stack_file(self) -> Path:
        return self.path / "stack.json"

    def has_store(self) -> bool:
        return self.store.is_dir()

    def lock(self, what: str, wait_s: float = 0.0) -> "HomeLock":
        """The home for this process alone (a stack or a reader), waiting up to `wait_s` for a
        reader that holds it; HomeBusyError names the holder when it stays taken."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "stack.lock", "a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = _json_or_empty(handle.read())
                    handle.close()
                    raise HomeBusyError(self.path, holder) from None
                time.sleep(0.1)
        self.stack_file.unlink(missing_ok=True)  # held now, so no stack runs: a killed one's leftover
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": what, "pid": os.getpid(), "since": time.time()}))
        handle.flush()
        return HomeLock(self, handle)

    def running_stack(self) -> str | None:
        """The NATS URL of the embedded stack that holds this home now, if one does."""
        if not self.stack_file.is_file():
            return None
        with open(self.path / "stack.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: the stack file is its holder's, if a stack holds it
                return _json_or_empty(self.stack_file.read_text()).get("url")
            fcntl.flock(handle, fcntl.LOCK_UN)  # free: the stack file is a leftover of a killed stack
        return None


class HomeLock:
    def __init__(self, home: Home, handle) -> None:
        self.home, self._handle = home, handle

    def fileno(self) -> int:
        """The lock's descriptor: a process given it (a nats-server on the store) holds the lock
        until it exits too, so the store is never opened twice while its server shuts down."""
        return self._handle.fileno()

    def announce(self, url: str) -> None:
        """Tell readers where this stack listens (stack.json, written whole, then renamed)."""
        partial = self.home.stack_file.with_suffix(".json.partial")
        partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        partial.replace(self.home.stack_file)

    def release(self) -> None:
        self.home.stack_file.unlink(missing_ok=True)
        self._handle.close()  # closing the file drops the flock


def _json_or_empty(text: str) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
