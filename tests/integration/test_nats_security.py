"""The trust boundary, tried on a real nats-server with the stack's generated configuration (the
`nats_url` fixture: TLS that requires a certificate of the stack's CA, one user per role with its
permissions). Every role is tried at what it must not do; each attempt must be refused by the
server (a permissions violation, or a refused connection), and the registry, the queues and the
buckets must be exactly as they were afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from types import SimpleNamespace
from urllib.parse import urlparse

import msgspec
import nats
import pytest
from nats.js.api import ConsumerConfig

from researcher.stack import LocalStack, find_nats_server, free_port, start_nats_server
from services.planner.loop import Planner
from services.planner.steps import job_id
from shared.messaging import subjects as s
from shared.messaging.bus import encode, ensure_streams, secured
from shared.messaging.messages import EvalJob, Goal, SeedResult, SteerRequest, StopRequest
from shared.registry.records import IterationRecord, RunRecord, TestEvaluation
from shared.registry.store import Registry
from shared.security import pki
from shared.security.credentials import Credentials, _interface_addresses
from shared.security.permissions import ROLES

RUN = "victim"
STREAMS = [s.GOALS_STREAM, s.EVAL_STREAM, s.RESULTS_STREAM, s.DEAD_STREAM, f"KV_{s.RUNS_BUCKET}",
           f"KV_{s.ITERATIONS_BUCKET}", f"OBJ_{s.ARTIFACTS_BUCKET}", f"OBJ_{s.WEIGHTS_BUCKET}", f"KV_{s.RUNNING_BUCKET}"]
FORGED_RESULT = encode(SeedResult(job_id=f"{RUN}.it0001.seed0", run_id=RUN, iteration=1, seed=0, ok=True,
                                  metrics={"val_accuracy": 1.0}))
FORGED_JOB = encode(EvalJob(job_id=f"{RUN}.it0009.seed0", run_id=RUN, iteration=9, seed=0, dataset="digits",
                            class_name="M", source="import os; os.system('curl evil')"))
GOAL = encode(Goal(run_id="intruder", goal="mine bitcoin", dataset="digits", target_accuracy=0.9))


class Probe:
    """A connection as one role that records the server's refusals."""

    def __init__(self, role: str) -> None:
        self.role, self.errors = role, []
        self._changed = asyncio.Event()

    async def open(self, url: str) -> "Probe":
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())
            self._changed.set()

        self.nc = await nats.connect(url, name=f"probe-{self.role}", error_cb=on_error, allow_reconnect=False,
                                     **secured(self.role))
        self.js = self.nc.jetstream(timeout=1.0)
        return self

    async def refused(self, kind: str, subject: str) -> None:
        """The server's own words for a refusal: `permissions violation for <kind> to "<subject>"`."""
        wanted = f'permissions violation for {kind} to "{subject}"'.lower()

        async def seen() -> None:
            while not any(wanted in e for e in self.errors):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(seen(), timeout=5)

    async def publish(self, subject: str, data: bytes = b"{}", **headers) -> None:
        await self.nc.publish(subject, data, headers=headers or None)
        await self.refused("publish", subject)

    async def request(self, subject: str, data: bytes = b"{}") -> None:
        """A request (JetStream's API is one) whose publish is refused: no answer ever comes."""
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await self.nc.request(subject, data, timeout=1.0)
        await self.refused("publish", subject)

    async def subscribe(self, subject: str) -> None:
        await self.nc.subscribe(subject)
        await self.refused("subscription", subject)


async def _state(js) -> dict:
    """Every stream's message count and last sequence, every consumer of the queues."""
    out = {}
    for name in STREAMS:
        info = await js.stream_info(name)
        out[name] = (info.state.messages, info.state.last_seq)
    for stream in (s.EVAL_STREAM, s.GOALS_STREAM, s.RESULTS_STREAM):
        out[f"{stream} consumers"] = sorted(c.name for c in await js.consumers_info(stream))
    return out


@pytest.fixture
async def stack_state(nats_url, nc):
    """The streams, buckets and a run as a planner leaves them; -> (admin's js, their state)."""
    js = nc.jetstream()
    await ensure_streams(js)
    registry = await Registry.open(js)
    await registry.create_run(RunRecord(run_id=RUN, goal=msgspec.json.decode(GOAL, type=Goal), status="running"))
    await registry.put_artifact(f"{RUN}/it0001/model.py", b"class M: pass\n")
    await js.publish(s.EVAL_SUBJECT, FORGED_JOB.replace(b"curl evil", b"pass"))  # a job in the queue
    await js.add_consumer(s.EVAL_STREAM, ConsumerConfig(durable_name=s.EVAL_CONSUMER, name=s.EVAL_CONSUMER,
                                                        filter_subject=s.EVAL_SUBJECT))
    return js, await _state(js)


async def test_every_role_is_refused_what_its_work_does_not_need(nats_url, stack_state):
    js, before = stack_state
    probes = {role: await Probe(role).open(nats_url) for role in ROLES if role != "admin"}
    ev, cl, da, asm, sb, pl = (probes[r] for r in ("evaluator", "client", "dashboard", "assembler", "sandbox",
                                                     "planner"))
    kv_runs, kv_its, artifacts = f"KV_{s.RUNS_BUCKET}", f"KV_{s.ITERATIONS_BUCKET}", f"OBJ_{s.ARTIFACTS_BUCKET}"
    attempts = [
        # a forged seed result, from everyone but the evaluators
        *(p.publish(s.results_subject(RUN), FORGED_RESULT) for p in (cl, da, asm, sb)),
        # an evaluation job (code the evaluators would run), from everyone but the planner
        *(p.publish(s.EVAL_SUBJECT, FORGED_JOB) for p in (ev, cl, da, asm, sb)),
        # goals, from the services that have no business submitting them
        *(p.publish(s.GOALS_SUBJECT, GOAL) for p in (ev, asm, sb, da)),
        *(p.request(s.GOAL_SUBMIT_SUBJECT, GOAL) for p in (ev, asm, sb, da)),
        # stopping a run: the client's (and the admin's) alone
        *(p.request(s.STOP_SUBJECT, encode(StopRequest(run_id=RUN))) for p in (ev, asm, sb, da)),
        # steering a run (stop, pause, resume, queue): the client's and the dashboard's
        *(p.request(s.STEER_SUBJECT, encode(SteerRequest(run_id=RUN, action="pause"))) for p in (ev, asm, sb)),
        # writing or deleting a registry key, from everyone but the planner
        *(p.publish(f"$KV.{s.RUNS_BUCKET}.{RUN}", b'{"status": "goal_achieved"}') for p in (ev, cl, da, asm, sb)),
        ev.publish(f"$KV.{s.ITERATIONS_BUCKET}.{RUN}.it0001", b"", **{"KV-Operation": "DEL"}),
        cl.publish(f"$O.{s.ARTIFACTS_BUCKET}.M.bW9kZWwucHk=", b"{}"),
        # purging or deleting streams and buckets: nobody but the admin, not even the planner
        *(p.request(f"$JS.API.STREAM.PURGE.{stream}") for p in (ev, cl) for stream in (s.EVAL_STREAM, kv_runs)),
        *(p.request(f"$JS.API.STREAM.DELETE.{stream}") for p in (ev, cl, pl) for stream in (kv_runs, s.EVAL_STREAM)),
        cl.request(f"$JS.API.STREAM.CREATE.{s.EVAL_STREAM}"),
        # the planner: only its own streams, by name, and no purge of the registry's records
        pl.request("$JS.API.STREAM.CREATE.SNOOP", b'{"name": "SNOOP", "subjects": ["_INBOX.>"]}'),
        pl.request(f"$JS.API.STREAM.PURGE.{kv_runs}"),
        pl.request("$JS.API.CONSUMER.CREATE.SNOOP.x"),
        # the evaluator: weights are written under new names, never purged
        ev.request(f"$JS.API.STREAM.PURGE.OBJ_{s.WEIGHTS_BUCKET}"),
        ev.request(f"$JS.API.STREAM.UPDATE.{s.EVAL_STREAM}"),
        # an evaluator reads no registry record and no code artifact
        ev.request(f"$JS.API.STREAM.MSG.GET.{kv_runs}", b'{"last_by_subj": "$KV.research_runs.victim"}'),
        ev.request(f"$JS.API.DIRECT.GET.{kv_its}.$KV.{s.ITERATIONS_BUCKET}.{RUN}.it0001"),
        ev.request(f"$JS.API.STREAM.INFO.{artifacts}"),
        ev.request(f"$JS.API.STREAM.MSG.GET.{artifacts}", b'{"seq": 1}'),
        ev.request(f"$JS.API.CONSUMER.CREATE.{artifacts}"),
        # nobody but an evaluator takes from the job queue, and the queue is read only through its consumer
        cl.request(f"$JS.API.CONSUMER.MSG.NEXT.{s.EVAL_STREAM}.{s.EVAL_CONSUMER}", b'{"batch": 1}'),
        cl.request(f"$JS.API.CONSUMER.CREATE.{s.EVAL_STREAM}.thief"),
        ev.request(f"$JS.API.STREAM.MSG.GET.{s.EVAL_STREAM}", b'{"seq": 1}'),
        ev.request(f"$JS.API.CONSUMER.CREATE.{s.RESULTS_STREAM}.thief"),
        ev.request(f"$JS.API.CONSUMER.MSG.NEXT.{s.GOALS_STREAM}.{s.GOALS_CONSUMER}", b'{"batch": 1}'),
        ev.request(f"$JS.API.CONSUMER.DELETE.{s.EVAL_STREAM}.{s.EVAL_CONSUMER}"),
        # a reader makes no consumer at all: its deliver subject would publish the registry anywhere
        cl.request(f"$JS.API.CONSUMER.CREATE.{kv_runs}"),
        da.request(f"$JS.API.CONSUMER.CREATE.{artifacts}.evil"),
        # acking (or naking) the evaluators' jobs
        cl.publish(f"$JS.ACK.{s.EVAL_STREAM}.{s.EVAL_CONSUMER}.1.1.1.0.0", b"+TERM"),
        # another role's subjects: the queue's subject itself, results, requests, replies
        *(p.subscribe(subject) for p in (ev, cl, asm, sb, da)
          for subject in (s.EVAL_SUBJECT, f"{s.RESULTS_SUBJECT_PREFIX}.>", "_INBOX.>", "_INBOX.planner.>", ">")),
        ev.subscribe(f"{s.EVENTS_PREFIX}.>"),
        ev.subscribe(s.ASSEMBLE_SUBJECT),
        cl.subscribe(s.VALIDATE_SUBJECT),
        asm.subscribe(s.VALIDATE_SUBJECT),
        sb.subscribe(s.ASSEMBLE_SUBJECT),
        cl.subscribe(s.GOAL_SUBMIT_SUBJECT),
        cl.subscribe(f"$KV.{s.RUNS_BUCKET}.>"),
        ev.subscribe(f"$O.{s.ARTIFACTS_BUCKET}.>"),
        pl.subscribe(s.EVAL_SUBJECT),
    ]
    await asyncio.gather(*attempts)
    for probe in probes.values():
        assert probe.nc.is_connected  # refused, not disconnected: a service's honest work goes on
        await probe.nc.close()
    assert await _state(js) == before  # nothing was written, deleted, taken or made


async def test_each_role_can_still_do_its_own_work(nats_url, stack_state):
    """The permissions are not simply everything refused: the evaluator takes a job and acks it,
    publishes a result and stores weights; the client reads the registry and submits a goal."""
    js, _ = stack_state
    ev = await Probe("evaluator").open(nats_url)
    queue = await ev.js.pull_subscribe_bind(s.EVAL_CONSUMER, s.EVAL_STREAM)
    [job] = await queue.fetch(1, timeout=5)
    await job.ack()
    await ev.js.publish(s.results_subject(RUN), FORGED_RESULT)
    await (await ev.js.object_store(s.WEIGHTS_BUCKET)).put(f"{RUN}/it0001/seed0.safetensors", b"w" * 300_000)
    cl = await Probe("client").open(nats_url)
    registry = await Registry.read(cl.js)
    assert [r.run_id for r in await registry.list_runs()] == [RUN]
    assert await registry.get_artifact(f"{RUN}/it0001/model.py") == b"class M: pass\n"
    assert await registry.get_artifact(f"{RUN}/it0001/seed0.safetensors") == b"w" * 300_000  # 3 chunks
    await cl.js.publish(s.GOALS_SUBJECT, GOAL)
    assert (await js.stream_info(s.GOALS_STREAM)).state.messages == 1
    assert ev.errors == [] and cl.errors == []
    await ev.nc.close()
    await cl.nc.close()


async def _connect_raw(url: str, **options) -> None:
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3, **options)
    await nc.close()


def _outside_address() -> str:
    """An address of this machine that is not loopback, as another machine would dial it."""
    found = sorted(a for a in _interface_addresses() if ":" not in a and not a.startswith("127."))
    assert found, "this machine has no address beside loopback"
    return found[0]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


def _plain_connect_answered(host: str, port: int) -> bytes:
    """What the server says to a client speaking plain NATS (CONNECT, PING) over TCP."""
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        said = b""
        try:
            while chunk := conn.recv(4096):
                said += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return said


async def test_connections_without_the_stacks_certificate_are_refused(credentials, tmp_path):
    """No credential, no TLS, a client certificate of another CA, a server of another CA, a server
    that skips TLS: each refused, on loopback and on an address of this machine that is not loopback."""
    port = free_port()
    proc = start_nats_server(port, str(tmp_path / "js"), open(tmp_path / "server.log", "wb"), credentials=credentials,
                             bind="0.0.0.0")
    outside = f"tls://{_outside_address()}:{port}"
    try:
        for url in (f"tls://127.0.0.1:{port}", outside):
            host = url.split("//")[1].rsplit(":", 1)[0]
            # plain NATS over TCP: the server expects a TLS handshake first, says nothing, and hangs up
            said = _plain_connect_answered(host, port)
            assert b"PONG" not in said and b"INFO" not in said, said
            no_cert = ssl.create_default_context(cafile=str(credentials.ca_cert))
            with pytest.raises((nats.errors.NoServersError, OSError, ssl.SSLError)):
                await _connect_raw(url, tls=no_cert, tls_hostname=host, tls_handshake_first=True)
            # a certificate for the planner's very name, from a CA of the attacker's own
            rogue_ca = pki.make_ca("rogue")
            rogue = pki.make_client(rogue_ca, "planner@pytorch-researcher")
            (tmp_path / "rogue.pem").write_bytes(rogue.cert)
            (tmp_path / "rogue-key.pem").write_bytes(rogue.key)
            with_rogue = ssl.create_default_context(cafile=str(credentials.ca_cert))
            with_rogue.load_cert_chain(tmp_path / "rogue.pem", tmp_path / "rogue-key.pem")
            with pytest.raises((nats.errors.NoServersError, OSError, ssl.SSLError)):
                await _connect_raw(url, tls=with_rogue, tls_hostname=host, tls_handshake_first=True)
            await _connect_raw(url, **secured("evaluator"))  # the real credential gets in, on both addresses
        # a server that is not the stack's (a certificate of another CA): the client refuses it
        other = Credentials(tmp_path / "other-stack")
        other.ensure()
        port2 = free_port()
        impostor = start_nats_server(port2, str(tmp_path / "js2"), open(tmp_path / "impostor.log", "wb"),
                                     credentials=other)
        # and one that skips TLS altogether (a plain server where the head should be): TLS comes first
        # from the client, so it never speaks NATS to it
        plain_port = free_port()
        plain = subprocess.Popen([find_nats_server(), "-a", "127.0.0.1", "-p", str(plain_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await _connect_raw(f"tls://127.0.0.1:{port2}", **secured("evaluator"))
            deadline = time.monotonic() + 30
            while not _listening("127.0.0.1", plain_port):  # the plain server is up before the client tries it
                assert time.monotonic() < deadline, "the plain nats-server never listened"
                await asyncio.sleep(0.05)
            with pytest.raises((nats.errors.NoServersError, OSError, ssl.SSLError, asyncio.TimeoutError)):
                await _connect_raw(f"tls://127.0.0.1:{plain_port}", **secured("evaluator"))
        finally:
            for server in (impostor, plain):
                server.terminate()
                server.wait(10)
    finally:
        proc.terminate()
        proc.wait(10)
    shutil.rmtree(tmp_path / "other-stack")


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_whose_evaluator_joins_through_tls_as_from_another_machine(docker_engine, tmp_path):
    """Every service on its own credential, the CLI on the client's, and the only evaluator on a
    copy of the evaluator's credential (what `researcher credentials evaluator` tells a GPU machine
    to copy), dialling the head's NATS at an address of this machine that is not loopback."""
    with LocalStack(log_dir=tmp_path / "logs", services=("planner", "assembler", "sandbox"), bind="0.0.0.0") as stack:
        remote = tmp_path / "gpu-machine"
        shutil.copytree(stack.credentials.role("evaluator").path, remote)
        outside = f"tls://{_outside_address()}:{urlparse(stack.url).port}"
        stack.start_service("evaluator", replica="evaluator-remote",
                            env={"NATS_URL": outside, "NATS_CREDENTIALS": str(remote)})
        stack.wait_ready(["evaluator-remote"])
        proc = subprocess.run(
            [sys.executable, "-m", "researcher.cli", "run", "small CNN for digits", "--dataset", "digits",
             "--target-accuracy", "0.999", "--max-iterations", "1", "--num-seeds", "2", "--subset-size", "600",
             "--max-epochs", "2", "--json", "--nats-url", stack.url],
            capture_output=True, text=True, timeout=600, env={**os.environ, "NATS_URL": ""})
        server_log = (stack.log_dir / "nats-server.log").read_text()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    [it] = report["iterations"]
    seeds = it["evaluation"]["seed_results"]
    assert len(seeds) == 2 and {s["evaluator"] for s in seeds} == {f"evaluator-remote-{os.getpid()}"}
    assert "Violation" not in server_log  # no service was refused anything its work needs


async def test_the_planner_counts_only_results_of_the_jobs_it_dispatched(nc):
    """An evaluator's credential may publish results: the planner keeps only those a job of a
    candidate in training asked for (the right id, rung and seed), and drops the rest unrecorded."""
    registry = await Registry.open(nc.jetstream())
    await registry.put_iteration(IterationRecord(run_id=RUN, iteration=1, state="evaluating", rung=0, seeds=[0, 1]))
    planner = SimpleNamespace(registry=registry)

    def result(**over) -> SeedResult:
        fields = dict(job_id=job_id(RUN, 1, 0, 0), run_id=RUN, iteration=1, seed=0, rung=0, ok=True)
        return SeedResult(**{**fields, **over})
    assert await Planner._unasked(planner, result()) is None
    assert "job id" in await Planner._unasked(planner, result(job_id="made-up"))
    assert "no such candidate" in await Planner._unasked(planner, result(iteration=7, job_id=job_id(RUN, 7, 0, 0)))
    assert "rung 0 with seeds [0, 1]" in await Planner._unasked(planner, result(seed=5, job_id=job_id(RUN, 1, 5, 0)))
    assert "rung 0" in await Planner._unasked(planner, result(rung=None, job_id=job_id(RUN, 1, 0, None)))

    # a test result counts only while its run tests that candidate on that seed
    tested = f"{RUN}-tested"
    test = TestEvaluation(iteration=1, seeds=[0, 1], status="max_iterations", reason="budget", started_at=1.0)
    await registry.create_run(RunRecord(run_id=tested, goal=Goal(run_id=tested, goal="g", dataset="digits"), test=test))

    def test_result(**over) -> SeedResult:
        return result(**{"run_id": tested, "rung": None, "split": "test", "job_id": job_id(tested, 1, 0, None, "test"),
                         **over})
    assert job_id(tested, 1, 0, None, "test") == f"{tested}.it0001.test.seed0"
    assert await Planner._unasked(planner, test_result()) is None
    assert "job id" in await Planner._unasked(planner, test_result(job_id=job_id(tested, 1, 0, None)))
    assert "no test of candidate 1 on seed 5" in await Planner._unasked(
        planner, test_result(seed=5, job_id=job_id(tested, 1, 5, None, "test")))
    assert "no test of candidate 2" in await Planner._unasked(
        planner, test_result(iteration=2, job_id=job_id(tested, 2, 0, None, "test")))
    assert "no test of candidate" in await Planner._unasked(planner, test_result(run_id=RUN, job_id=job_id(RUN, 1, 0, None, "test")))
    await registry.update_run(tested, lambda r: msgspec.structs.replace(r, test=msgspec.structs.replace(test, finished_at=2.0)))
    assert "no test of candidate 1" in await Planner._unasked(planner, test_result())  # over: a late one is not counted
