"""The stack's containers start here: `python -m shared.security.entrypoint [--server] [--user
UID:GID] -- COMMAND...`.

Compose mounts one role's credential directory read-only at SOURCE (the host's files stay
owner-only, whoever owns them there); this copies it, as root, to a tmpfs at TARGET owned by the
user the command runs as, points NATS_CREDENTIALS at it, drops to that user and runs the command.
--server: the directory is the NATS server's, and its configuration (permissions.server_config,
with the copied certificates' paths) is written there too, for `nats-server -c TARGET/nats.conf`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

SOURCE = Path("/run/secrets/nats")
TARGET = Path("/run/nats")
MONITOR = "127.0.0.1:8222"  # the health check's, inside the server's container only


def install(source: Path, target: Path, uid: int | None, gid: int | None, server: bool) -> None:
    if not source.is_dir():
        raise SystemExit(f"error: no NATS credential at {source}: mount a role's directory there (make up does; on "
                         f"another machine: make evaluator NATS_CREDENTIALS=DIR, DIR from `researcher credentials "
                         f"evaluator` on the head)")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            shutil.copyfile(item, target / item.name)
            (target / item.name).chmod(0o600)
    if server:
        from shared.messaging.limits import MAX_PAYLOAD
        from shared.security.permissions import server_config

        (target / "nats.conf").write_text(server_config(str(target), max_payload=MAX_PAYLOAD, monitor=MONITOR))
    if uid is not None:
        for path in (target, *target.iterdir()):
            os.chown(path, uid, gid if gid is not None else uid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.security.entrypoint")
    parser.add_argument("--server", action="store_true", help="the NATS server's credential: write its configuration")
    parser.add_argument("--user", help="UID:GID to run the command as (when started as root)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    uid = gid = None
    if args.user and os.geteuid() == 0:
        uid, _, gid_text = args.user.partition(":")
        uid, gid = int(uid), int(gid_text or uid)
    install(SOURCE, TARGET, uid, gid, args.server)
    os.environ["NATS_CREDENTIALS"] = str(TARGET)
    if uid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        os.environ["HOME"] = os.environ.get("RESEARCHER_USER_HOME", "/home/researcher")
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
