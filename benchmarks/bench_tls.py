"""`make bench-tls`: what TLS and the roles' permissions cost on the queue, in one run.

Two real nats-servers on loopback, started by this process: one plain (no TLS, no users: how the
stack ran before), one with the stack's configuration (TLS with a client certificate of the CA,
each role's permissions). On each, the same work:
- connecting: a new connection (the TLS handshake included), `--connects` times;
- request/reply: a client asks, a responder answers at once (the planner's calls to the sandbox
  and assembler), `--requests` sequential requests with a 200-byte and a 64 KiB body, p50 and p95;
- the job queue: a planner publishes `--jobs` evaluation jobs (20 KiB each, about a CNN's code) to
  the JetStream work queue and an evaluator pulls and acks them one at a time, as the evaluators
  do; jobs per second.
The connections run as the roles that do this work (client and sandbox, planner and evaluator),
so the servers' permission checks are in the figures. Rounds alternate between the two servers;
prints the median of each figure and the ratio TLS/plain.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from researcher.stack import find_nats_server, free_port, start_nats_server
from shared.messaging import subjects
from shared.messaging.bus import secured
from shared.security.credentials import Credentials, default_root


def plain_server(store: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"nats://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the plain nats-server did not start")


async def measure(url: str, tls: bool, args: argparse.Namespace) -> dict[str, float]:
    def options(role: str) -> dict:
        return secured(role) if tls else {}

    out: dict[str, float] = {}
    began = time.perf_counter()
    for _ in range(args.connects):
        nc = await nats.connect(url, **options("client"))
        await nc.flush()
        await nc.close()
    out["connect_ms"] = (time.perf_counter() - began) / args.connects * 1000

    responder = await nats.connect(url, **options("sandbox"))

    async def answer(msg) -> None:
        await msg.respond(b"ok")

    await responder.subscribe(subjects.VALIDATE_SUBJECT, queue=subjects.SANDBOX_QUEUE, cb=answer)
    await responder.flush()
    client = await nats.connect(url, **options("client"))
    for size, label in ((200, "small"), (64 * 1024, "64k")):
        body, times = b"x" * size, []
        for _ in range(args.requests):
            t = time.perf_counter()
            await client.request(subjects.VALIDATE_SUBJECT, body, timeout=5)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[f"request_{label}_p50_ms"] = statistics.median(times)
        out[f"request_{label}_p95_ms"] = times[int(len(times) * 0.95) - 1]
    await client.close()
    await responder.close()

    planner = await nats.connect(url, **options("planner"))
    js = planner.jetstream()
    await js.add_stream(StreamConfig(name=subjects.EVAL_STREAM, subjects=[subjects.EVAL_SUBJECT],
                                     retention=RetentionPolicy.WORK_QUEUE))
    await js.add_consumer(subjects.EVAL_STREAM, ConsumerConfig(durable_name=subjects.EVAL_CONSUMER,
                                                               name=subjects.EVAL_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                                                               filter_subject=subjects.EVAL_SUBJECT))
    evaluator = await nats.connect(url, **options("evaluator"))
    queue = await evaluator.jetstream().pull_subscribe_bind(subjects.EVAL_CONSUMER, subjects.EVAL_STREAM)
    job, round_id = b"j" * 20 * 1024, uuid.uuid4().hex  # ids unique per round: the stream drops duplicates
    began = time.perf_counter()

    async def publish() -> None:
        for i in range(args.jobs):
            await js.publish(subjects.EVAL_SUBJECT, job, headers={"Nats-Msg-Id": f"job-{round_id}-{i}"})

    async def consume() -> None:
        taken = 0
        while taken < args.jobs:
            for msg in await queue.fetch(1, timeout=5):
                await msg.ack_sync()
                taken += 1

    await asyncio.gather(publish(), consume())
    out["jobs_per_s"] = args.jobs / (time.perf_counter() - began)
    await evaluator.close()
    await planner.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, interleaved; the median is printed")
    args = parser.parse_args()
    credentials = Credentials(default_root())
    credentials.ensure()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        plain, plain_url = plain_server(str(Path(tmp) / "plain"))
        port = free_port()
        secure = start_nats_server(port, str(Path(tmp) / "tls"), subprocess.DEVNULL, credentials=credentials)
        try:
            rounds: dict[str, list[dict[str, float]]] = {"plain": [], "tls": []}
            for _ in range(args.rounds):  # interleaved, so warm-up and the machine's load fall on both
                rounds["plain"].append(asyncio.run(measure(plain_url, False, args)))
                rounds["tls"].append(asyncio.run(measure(f"tls://127.0.0.1:{port}", True, args)))
            figures = {kind: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                       for kind, runs in rounds.items()}
        finally:
            for proc in (plain, secure):
                proc.terminate()
                proc.wait(10)
    print(f"bench-tls: {args.connects} connections, {args.requests} requests per size, {args.jobs} jobs of 20 KiB; "
          f"loopback, one process; the median of {args.rounds} interleaved rounds")
    print(f"{'figure':<24}{'plain':>12}{'TLS+roles':>12}{'ratio':>8}")
    for key in figures["plain"]:
        plain_value, tls_value = figures["plain"][key], figures["tls"][key]
        print(f"{key:<24}{plain_value:>12.3f}{tls_value:>12.3f}{tls_value / plain_value:>8.2f}")


if __name__ == "__main__":
    main()
