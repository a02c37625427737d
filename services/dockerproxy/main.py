"""Docker socket proxy service: the only container of the stack that holds the host's Docker
socket; the sandbox and evaluator reach the engine through the proxy's socket, which passes only
the calls they make (shared/sandboxing/socket_policy.py)."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from shared.runtime.config import load_config
from shared.runtime.log import configure_logging
from shared.sandboxing.socket_policy import Policy
from shared.sandboxing.socket_proxy import SocketProxy


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="/run/docker-proxy/docker.sock", help="the proxy's socket (default: %(default)s)")
    parser.add_argument("--upstream", default="/var/run/docker.sock", help="the engine's socket (default: %(default)s)")
    parser.add_argument("--group", type=int, default=None,
                        help="gid that may use the proxy's socket (mode 0660); the services' user's, 10002, under compose")
    parser.add_argument("--log-level", default=os.environ.get("RESEARCHER_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    log = configure_logging("dockerproxy", args.log_level)
    config = load_config()
    # the image the sandbox and evaluator create their containers from: the only one passed
    proxy = SocketProxy(args.listen, args.upstream, Policy([config.sandbox.image]), gid=args.group)
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    proxy.start()
    stop.wait()
    proxy.close()
    log.info("docker_proxy_stopped")


if __name__ == "__main__":
    main()
