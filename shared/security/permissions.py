"""Who may publish and subscribe where: one entry per role, rendered into nats-server's
configuration (the users that `verify_and_map` finds by their certificates' names) and into the
README's permission table. Everything not listed is refused by the server.

JetStream is reached through subjects too: `$JS.API.<verb>.<stream>...` for the API, `$JS.ACK.
<stream>.<consumer>...` for acknowledgements, `$KV.<bucket>.<key>` and `$O.<bucket>...` for the
key-value and object stores (streams KV_<bucket> and OBJ_<bucket>), `$JS.FC...` for the flow
control of push consumers. A role's replies come to its own inbox prefix (credentials.inbox_prefix),
which no other role may subscribe to."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.messaging import subjects as s
from shared.security.credentials import identity, inbox_prefix

JS = "$JS.API"
REGISTRY_KV = (s.RUNS_BUCKET, s.ITERATIONS_BUCKET)
# what the planner declares and owns, by name: a subject of its permissions with <stream>, <kv> or
# <object> in it stands for one subject per name (the README shows the pattern once)
KV_BUCKETS = (s.RUNS_BUCKET, s.ITERATIONS_BUCKET, s.LEASES_BUCKET, s.RUNNING_BUCKET)
OBJECT_BUCKETS = (s.ARTIFACTS_BUCKET, s.WEIGHTS_BUCKET)
PLANNER_STREAMS = (s.GOALS_STREAM, s.EVAL_STREAM, s.RESULTS_STREAM, s.DEAD_STREAM, s.ADVISORIES_STREAM,
                   *(f"KV_{b}" for b in KV_BUCKETS), *(f"OBJ_{b}" for b in OBJECT_BUCKETS))
PLACEHOLDERS = {"<stream>": PLANNER_STREAMS, "<kv>": KV_BUCKETS, "<object>": OBJECT_BUCKETS}


def _read(stream: str) -> list[str]:
    """A reader's: the stream's info (a bucket's keys) and a message get (a key's value, an
    object's metadata and chunks). Never a consumer: its deliver subject would be the reader's
    to choose, and the server would publish the stream's messages there, past every permission."""
    return [f"{JS}.STREAM.INFO.{stream}", f"{JS}.STREAM.MSG.GET.{stream}", f"{JS}.DIRECT.GET.{stream}",
            f"{JS}.DIRECT.GET.{stream}.>"]


def _kv_read(bucket: str) -> list[str]:
    return _read(f"KV_{bucket}")


def _object_read(bucket: str) -> list[str]:
    return _read(f"OBJ_{bucket}")


def _object_write(bucket: str) -> list[str]:
    """Put an object under a name never used before (no purge of a replaced one's chunks); the
    metadata's get is the object store's own check for an existing one."""
    return [f"$O.{bucket}.>", f"{JS}.STREAM.INFO.OBJ_{bucket}", f"{JS}.STREAM.MSG.GET.OBJ_{bucket}"]


def _pull(stream: str, consumer: str) -> list[str]:
    """Pull from a durable consumer, made or updated by this role to its own settings, and ack."""
    return [f"{JS}.CONSUMER.INFO.{stream}.{consumer}", f"{JS}.CONSUMER.CREATE.{stream}.{consumer}",
            f"{JS}.CONSUMER.CREATE.{stream}.{consumer}.>", f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
            f"{JS}.CONSUMER.MSG.NEXT.{stream}.{consumer}", f"$JS.ACK.{stream}.{consumer}.>"]


@dataclass(frozen=True)
class Role:
    """What a role's processes are for, and where they may publish and subscribe. `responds`:
    it may answer requests (a reply goes once to the requester's inbox, within a few seconds)."""
    purpose: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responds: bool = False
    notes: tuple[str, ...] = ()


ROLES: dict[str, Role] = {
    # the brain of the head machine: owns every stream, consumer and bucket, writes the registry
    "planner": Role(
        "takes goals, drives runs, writes the registry; declares the streams and buckets",
        publish=(s.EVAL_SUBJECT, s.ASSEMBLE_SUBJECT, s.SUMMARY_SUBJECT, s.VALIDATE_SUBJECT, f"{s.EVENTS_PREFIX}.>",
                 s.RUN_ENDED_SUBJECT, f"{s.DEAD_LETTER_SUBJECT}.>", s.GOALS_SUBJECT,
                 f"{JS}.INFO", f"{JS}.STREAM.NAMES", f"{JS}.STREAM.CREATE.<stream>", f"{JS}.STREAM.UPDATE.<stream>",
                 f"{JS}.STREAM.INFO.<stream>", f"{JS}.STREAM.MSG.GET.<stream>", f"{JS}.DIRECT.GET.<stream>",
                 f"{JS}.DIRECT.GET.<stream>.>", f"{JS}.CONSUMER.*.<stream>", f"{JS}.CONSUMER.*.<stream>.>",
                 f"{JS}.CONSUMER.*.*.<stream>.>", "$JS.ACK.<stream>.>", "$JS.FC.<stream>.>", "$KV.<kv>.>",
                 "$O.<object>.>", f"{JS}.STREAM.PURGE.OBJ_<object>",  # an artifact replaced or deleted
                 f"{JS}.STREAM.MSG.DELETE.{s.EVAL_STREAM}"),  # a dead-lettered job out of the work queue
        subscribe=(s.GOAL_SUBMIT_SUBJECT, s.STOP_SUBJECT, s.STEER_SUBJECT),
        responds=True,
        notes=("only its own streams, buckets and stores, by name (<stream>: "
               + ", ".join(PLANNER_STREAMS) + "; <kv>, <object>: the buckets among them); none may be deleted "
               "(`$JS.API.STREAM.DELETE` is the admin's) and only the stores' purged",)),
    "assembler": Role(
        "turns a config (or the tools LLM's reply) into code; summarises validated code",
        subscribe=(s.ASSEMBLE_SUBJECT, s.SUMMARY_SUBJECT), responds=True),
    "sandbox": Role(
        "validates code in locked-down containers",
        subscribe=(s.VALIDATE_SUBJECT,), responds=True),
    "evaluator": Role(
        "pulls seed jobs, trains in containers, scores on the trusted side, publishes results",
        publish=(f"{s.RESULTS_SUBJECT_PREFIX}.>", f"{s.EVENTS_PREFIX}.>", *_pull(s.EVAL_STREAM, s.EVAL_CONSUMER),
                 *_object_write(s.WEIGHTS_BUCKET), f"{JS}.STREAM.MSG.GET.OBJ_{s.WEIGHTS_BUCKET}"),
        subscribe=(s.RUN_ENDED_SUBJECT,),
        notes=("reads no registry record and no code artifact: a job carries its code",
               "writes weights under names never used before and reads their metadata, nothing else of the registry")),
    # the researcher's CLI (submit, run --nats-url, report, export, runs)
    "client": Role(
        "submits goals, steers runs (stop, pause, resume, queue a config), follows them, reads reports and artifacts; "
        "validates a model file in the sandbox",
        publish=(s.GOAL_SUBMIT_SUBJECT, s.GOALS_SUBJECT, s.STOP_SUBJECT, s.STEER_SUBJECT, s.VALIDATE_SUBJECT, *(p for b in REGISTRY_KV for p in _kv_read(b)),
                 *_object_read(s.ARTIFACTS_BUCKET), *_object_read(s.WEIGHTS_BUCKET)),
        subscribe=(f"{s.EVENTS_PREFIX}.>",)),
    # views of the registry and the live events, and steering by hand (the dashboard's)
    "dashboard": Role(
        "shows runs live: reads the registry (not the trained weights) and the events; steers runs (stop, pause, "
        "resume, queue a config)",
        publish=(s.STEER_SUBJECT, *(p for b in REGISTRY_KV for p in _kv_read(b)), *_object_read(s.ARTIFACTS_BUCKET)),
        subscribe=(f"{s.EVENTS_PREFIX}.>",)),
    "admin": Role("the operator's: everything (maintenance with the `nats` CLI, tests' set-up)",
                  publish=(">",), subscribe=(">",), responds=True),
}


def permissions(role: str) -> dict:
    """nats-server's permissions block for `role`: its subjects plus its own inbox."""
    spec = ROLES[role]
    inbox = f"{inbox_prefix(role)}.>"
    publish = [subject for pattern in spec.publish for subject in expand(pattern)]
    # an empty allow list would mean no restriction at all: a role that only answers denies the rest
    block: dict = {"publish": {"allow": publish} if publish else {"deny": [">"]},
                   "subscribe": {"allow": [*spec.subscribe, inbox]}}
    if spec.responds:
        # one reply per request, however long the work took (an LLM's code: many minutes)
        block["allow_responses"] = True
    return block


def expand(pattern: str) -> list[str]:
    """One subject per name for each placeholder in `pattern` (PLACEHOLDERS)."""
    for placeholder, names in PLACEHOLDERS.items():
        if placeholder in pattern:
            return [subject for name in names for subject in expand(pattern.replace(placeholder, name, 1))]
    return [pattern]


def users() -> list[dict]:
    return [{"user": identity(role), "permissions": permissions(role)} for role in ROLES]


def server_config(tls_dir: str, *, max_payload: int, monitor: str | None = None) -> str:
    """nats-server's configuration (JSON is valid in its format): TLS that requires a certificate
    of the stack's CA from every client and maps it to a user, the users and their permissions,
    and the largest message. Listen address, port and JetStream's store are the command line's."""
    config: dict = {
        # handshake_first: TLS before a byte of NATS, so a client never talks to a server that skips
        # it (without it, a client upgrades only when the server's first words ask for TLS)
        "tls": {"cert_file": f"{tls_dir}/cert.pem", "key_file": f"{tls_dir}/key.pem", "ca_file": f"{tls_dir}/ca.pem",
                "verify_and_map": True, "timeout": 5, "handshake_first": True},
        "authorization": {"users": users()},
        "max_payload": max_payload,
    }
    if monitor:
        config["http"] = monitor
    return json.dumps(config, indent=2)


def permission_table() -> str:
    """The README's table (tests/unit/test_permissions.py keeps the two the same)."""
    def cell(items, extra: str = "") -> str:
        return "<br>".join([*(f"`{item}`" for item in items), *([extra] if extra else [])]) or "nothing"

    rows = ["| role | its work | may publish to | may subscribe to (and its own `_INBOX.<role>.>`) |",
            "|---|---|---|---|"]
    for name, role in ROLES.items():
        replies = "the reply subject of a request it received, once" if role.responds and name != "admin" else ""
        work = role.purpose + "".join(f"; {note}" for note in role.notes)
        rows.append(f"| {name} | {work} | {cell(role.publish, replies)} | {cell(role.subscribe)} |")
    return "\n".join(rows)
