"""Register gVisor's runsc as a Docker runtime in daemon.json, keeping every other setting.

    python3 scripts/register-runsc.py RUNSC_PATH [--daemon-json /etc/docker/daemon.json]

Prints `registered` (the file was written: the engine needs a SIGHUP to read it) or `unchanged`
(a runtime named runsc is there already: its settings are the owner's, left as they are).
Exit status 2, the file untouched, when daemon.json is not a JSON object. Standard library only:
scripts/setup-host.sh runs it before any venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# --network=none: gVisor's own netstack cannot start in the root network namespace ("cannot run
# with network enabled in root network namespace"), and no sandbox container has a network anyway.
# Not --oci-seccomp (enforce the container's seccomp profile inside gVisor): Debian's 2022-12 build
# then refuses calls the profile allows (select(), and clone3 with EPERM for ENOSYS, so no thread
# starts). gVisor's kernel is the boundary there; the host sees only gVisor's own filtered calls.
RUNSC_ARGS = ["--network=none"]


def merged(settings: dict, runsc_path: str) -> dict | None:
    """`settings` with runsc added to its runtimes, or None when one named runsc is there."""
    runtimes = settings.get("runtimes") or {}
    if not isinstance(runtimes, dict):
        raise ValueError(f"its \"runtimes\" is a {type(runtimes).__name__}, not an object")
    if "runsc" in runtimes:
        return None
    return {**settings, "runtimes": {**runtimes, "runsc": {"path": runsc_path, "runtimeArgs": list(RUNSC_ARGS)}}}


def register(daemon_json: Path, runsc_path: str) -> bool:
    """Write runsc into `daemon_json` (created when absent) -> whether the file changed."""
    text = daemon_json.read_text() if daemon_json.exists() else ""
    try:
        settings = json.loads(text) if text.strip() else {}
        if not isinstance(settings, dict):
            raise ValueError("its top level is not an object")
        new = merged(settings, runsc_path)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ValueError(f"error: {daemon_json} is not a daemon configuration this script can extend ({exc}); "
                         f"add runsc by hand: \"runtimes\": {{\"runsc\": {{\"path\": \"{runsc_path}\", "
                         f"\"runtimeArgs\": {json.dumps(RUNSC_ARGS)}}}}}, then `kill -HUP $(pidof dockerd)`") from exc
    if new is None:
        return False
    daemon_json.parent.mkdir(parents=True, exist_ok=True)
    # written beside it and renamed: dockerd never reads half a file
    fd, tmp = tempfile.mkstemp(dir=daemon_json.parent, prefix=".daemon.json.")
    with os.fdopen(fd, "w") as out:
        json.dump(new, out, indent=2)
        out.write("\n")
    os.chmod(tmp, daemon_json.stat().st_mode & 0o7777 if daemon_json.exists() else 0o644)
    os.replace(tmp, daemon_json)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runsc", help="the runsc binary's absolute path")
    parser.add_argument("--daemon-json", type=Path, default=Path("/etc/docker/daemon.json"))
    args = parser.parse_args(argv)
    try:
        changed = register(args.daemon_json, args.runsc)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("registered" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
