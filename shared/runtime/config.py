"""Typed configuration: the one block of defaults is the structs below (a comment on each key),
one YAML file over them, environment variables over that.

The file is `$RESEARCHER_CONFIG` (or `config/researcher.yaml` when it exists). Any key can be
overridden as `RESEARCHER_<SECTION>__<KEY>` (e.g. `RESEARCHER_SANDBOX__MEMORY=4g`); `NATS_URL`
overrides `nats_url`. Unknown keys are rejected with the path to fix.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from shared.errors import ConfigFileError
from shared.messaging import limits as ceilings
from shared.messaging.messages import GOAL_LIMITS, MAX_GOAL_CHARS

DEFAULT_FILE = Path("config/researcher.yaml")


BPE_MIN_VOCAB = 300  # byte-level BPE's alphabet (256 bytes) and the 4 specials, and a few merges


class DataConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Read by the planner (a data set's facts), the evaluators (its samples) and the CLI."""

    dir: str = "~/.cache/pytorch-researcher/data"  # torchvision data sets in their on-disk layout (compose: /data)
    val_fraction: float = 0.2  # share of the training data held out for validation, per seed
    # share of the data held out as the test split, once per data set (not per seed), where it has
    # no official test split of its own; drawn stratified with test_seed, so every run draws the same
    test_fraction: float = 0.2
    test_seed: int = 0
    # ---- text (hf: data sets): how texts become token ids, on the trusted side (shared/data/text.py) ----
    # "wordpiece" or "bpe": trained on each seed's training split; or a tokenizer.json path (relative to dir)
    tokenizer: str = "wordpiece"
    vocab_size: int = 8000  # of a trained tokenizer (ids 0-3 are [PAD], [UNK], [CLS], [SEP])
    max_length: int = 128  # tokens per sample (a pair's two segments together), longer ones cut to it
    # ---- tables (csv:, parquet:): shared/data/tables.py ----
    max_categories: int = 32  # one-hot slots of a category column (its most frequent values; the rest share one)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("data.val_fraction must be between 0 and 1 (exclusive)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError("data.test_fraction must be between 0 and 1 (exclusive), e.g. 0.2")
        if self.tokenizer not in ("wordpiece", "bpe") and not self.tokenizer.endswith(".json"):
            raise ValueError(f"data.tokenizer must be wordpiece, bpe or the path of a tokenizer.json under data.dir, "
                             f"not {self.tokenizer!r}")
        if not 16 <= self.vocab_size <= 1_000_000:
            raise ValueError(f"data.vocab_size must be from 16 to 1000000 tokens (4 of them [PAD], [UNK], [CLS], "
                             f"[SEP]), not {self.vocab_size}; 8000 suits a few thousand to a few hundred thousand texts")
        if self.tokenizer == "bpe" and self.vocab_size < BPE_MIN_VOCAB:
            raise ValueError(f"data.vocab_size must be at least {BPE_MIN_VOCAB} with tokenizer bpe (byte-level: its "
                             f"256 byte tokens and 4 specials come first), not {self.vocab_size}")
        if not 4 <= self.max_length <= 16_384:
            raise ValueError(f"data.max_length must be from 4 to 16384 tokens per sample, not {self.max_length}; "
                             "128 fits most sentences, 512 most reviews")


class LimitsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The most one goal may ask of this stack: the planner rejects a goal over any of them, naming
    the field, the value asked and the cap (shared.messaging.limits.cap_problems). Each may be
    raised up to a ceiling, for which the message size limits are derived."""

    max_goal_chars: int = 4000  # characters of a goal's text
    max_iterations: int = 100  # a goal's max_iterations
    max_seeds: int = 10  # a goal's num_seeds: seeds trained per evaluation
    max_epochs: int = 100  # a goal's max_epochs: the longest training of one seed
    max_parallel: int = 8  # a goal's parallel: candidates in flight at once
    # a run's compute budget in seed-epochs: its epoch_budget, or when it gives none
    # max_iterations x num_seeds x max_epochs (at most planner.max_epochs); the default goal asks 500
    max_epoch_budget: int = 20_000

    def __post_init__(self) -> None:
        ceiling = {"max_goal_chars": MAX_GOAL_CHARS, "max_iterations": GOAL_LIMITS["max_iterations"][1],
                   "max_seeds": ceilings.MAX_SEEDS, "max_epochs": ceilings.MAX_EPOCHS,
                   "max_parallel": GOAL_LIMITS["parallel"][1], "max_epoch_budget": GOAL_LIMITS["epoch_budget"][1]}
        for key, highest in ceiling.items():
            if not 1 <= getattr(self, key) <= highest:
                raise ValueError(f"limits.{key} must be from 1 to {highest}, not {getattr(self, key)} (the message "
                                 "size limits in shared/messaging/limits.py are derived for its ceiling)")


class PlannerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    step_timeout_s: float = 180.0  # one assemble or validate request, seconds
    step_retries: int = 3  # attempts of a step before the iteration is recorded as failed
    eval_timeout_s: float = 1800.0  # all seeds of one iteration, seconds
    min_epochs: int = 5  # lower bound of the built-in search's epochs
    max_epochs: int = 20  # upper bound of the built-in search's epochs (a goal's max_epochs caps it further)
    # ---- the search: candidates in flight and successive halving (services/planner/fidelity.py) ----
    # candidates a run keeps in flight when its goal does not say (--parallel): 2 keeps two evaluators
    # busy on one-seed first rungs. With lower_rungs 1 it reached 23 goals of 30 in bench-search's
    # simulation (10 searches per goal, 2 replicas) against 18 for 4 in flight on 2 cheap rungs, 16 for
    # sequential TPE (a rerun moves a policy by about 2 of 15: results arrive in measured-time order):
    # more in flight proposes more before any is measured, and counts more compute as spent at the target
    parallel: int = 2
    # successive halving: each candidate first trains on `lower_rungs` cheap rungs, rung r (0 first)
    # with 1/reduction_factor^(lower_rungs - r) of its epochs and seeds, and the best
    # 1/reduction_factor of each rung earn the next; 0 lower rungs: every candidate gets the full budget.
    # One, at a third of the epochs: a rung at a ninth (2 epochs of 20) ranked candidates by how fast
    # they start more than by where they end
    reduction_factor: int = 3
    lower_rungs: int = 1
    # with a planning LLM: the share of proposals it makes (the built-in search makes the rest);
    # a minority, after Ferreira et al. 2026 (arXiv 2603.24647): TPE with an LLM minority did best
    llm_share: float = 0.25
    # the built-in search's share of proposals that are local moves from the run's best candidate
    # (more epochs, more regularisation, a nearby learning rate) rather than TPE samples
    local_share: float = 0.3
    # ---- the planner's JetStream consumers (goals, results, dead-letter advisories) ----
    ack_wait_s: float = 60.0  # a message not acked this long after delivery is delivered again, seconds
    max_deliver: int = 5  # deliveries of one goal or result before JetStream gives up on it
    fetch_batch: int = 8  # messages pulled per fetch
    nak_delay_s: float = 2.0  # a message whose handler failed comes back after this long, seconds
    submit_concurrency: int = 8  # goal submissions answered at once per planner

    def __post_init__(self) -> None:
        if (self.ack_wait_s <= 0 or self.max_deliver < 1 or self.fetch_batch < 1 or self.nak_delay_s < 0
                or self.submit_concurrency < 1):
            raise ValueError("planner.ack_wait_s must be > 0, planner.max_deliver and planner.fetch_batch >= 1, "
                             "planner.nak_delay_s >= 0, planner.submit_concurrency >= 1")
        if not (1 <= self.parallel <= 64 and self.reduction_factor >= 2 and 0 <= self.lower_rungs <= 5
                and 0.0 <= self.llm_share <= 1.0 and 0.0 <= self.local_share <= 1.0):
            raise ValueError("planner.parallel must be 1 to 64, planner.reduction_factor >= 2, planner.lower_rungs "
                             "0 to 5, planner.llm_share and planner.local_share between 0 and 1")


class AssemblerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    concurrency: int = 8  # requests answered at once per replica (an LLM call may take a while)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("assembler.concurrency must be at least 1")


class SandboxConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    image: str = "pytorch-researcher/sandbox:latest"  # runs generated code; `make images` builds it
    # the containers' OCI runtime: auto (gVisor's runsc where the engine lists it and a probe container
    # runs under it, else runc), runsc (an error where it cannot run) or runc; null is auto. Either way
    # each gets the sandbox's seccomp profile (shared/sandboxing/boundary.py, seccomp.py)
    runtime: str | None = "auto"
    memory: str = "2g"  # memory cap of one validation container, swap equal to it
    cpus: float = 1.0  # CPU cap of one validation container
    pids: int = 128  # processes and threads in one container
    tmpfs_size: str = "64m"  # the only writable path, /tmp
    tmpfs_inodes: int = 4096  # files /tmp may hold
    nofile: int = 256  # open files
    fsize_bytes: int = 64 * 1024 * 1024  # largest file the code may write
    validate_timeout_s: float = 60.0  # hard wall clock, start to exit
    max_output_bytes: int = 65536  # tail of the code's stdout/stderr kept for the report
    max_total_output_bytes: int = 64 * 1024 * 1024  # past this the code is killed: "output too large"
    concurrency: int = 2  # validations at once per sandbox service
    pool_size: int = 2  # warm containers (torch imported) waiting for a validation; 0 = cold starts
    pool_max_idle_s: float = 600.0  # a warm container older than this is replaced
    precheck: str = "reject"  # reject | flag: what the AST pre-check does with dangerous constructs

    def __post_init__(self) -> None:
        if self.precheck not in ("reject", "flag"):
            raise ValueError(f"sandbox.precheck must be 'reject' or 'flag', not {self.precheck!r}")
        if self.runtime is not None and self.runtime.strip().lower() not in ("auto", "runsc", "runc"):
            raise ValueError(f"sandbox.runtime must be auto, runsc or runc, not {self.runtime!r}")
        if self.pool_size < 0 or self.concurrency < 1:
            raise ValueError("sandbox.pool_size must be >= 0 and sandbox.concurrency >= 1")
        if not 0 < self.max_output_bytes <= ceilings.MAX_OUTPUT_TAIL_BYTES:  # the tail travels in results
            raise ValueError(f"sandbox.max_output_bytes must be from 1 to {ceilings.MAX_OUTPUT_TAIL_BYTES}, "
                             f"not {self.max_output_bytes}")


MAX_WEIGHTS_BYTES = 256 * 1024 * 1024


class EvaluatorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    memory: str = "4g"  # memory cap of one training container, swap equal to it
    cpus: float = 2.0  # CPU cap of one training container
    # auto: every GPU when the engine has the nvidia runtime; none; all; or only these devices,
    # host indices or UUIDs: "0", "0,2", "GPU-6f1c..." (quote a lone index in YAML: "0", not 0)
    gpus: str | int | None = "auto"  # null (or RESEARCHER_EVALUATOR__GPUS=none) is "none"; 0 is "0"
    train_timeout_s: float = 1800.0  # one seed, seconds
    drain_timeout_s: float = 30.0  # a stopping evaluator's wait for its job; then it hands the job back
    pool_size: int = 1  # warm training containers (torch imported) per replica, started while a job trains; 0 = cold
    # bytes of one seed's trained weights (safetensors) kept in the registry for the export; larger
    # ones are skipped, the seed says why and keeps its scores; 0 keeps none
    max_weights_bytes: int = 64 * 1024 * 1024
    # ---- the EVAL work queue's consumer, shared by every replica ----
    ack_wait_s: float = 60.0  # JetStream ack wait, seconds; a job in training sends in-progress heartbeats
    max_deliver: int = 3  # deliveries before a job goes to the dead-letter subject
    nak_delay_s: float = 10.0  # a job this replica cannot run (no data set, no Docker) is offered again after this, seconds

    def __post_init__(self) -> None:
        self.gpus = "none" if self.gpus is None else str(self.gpus).strip()
        gpu_devices(self.gpus)  # malformed: an error at load, naming the key
        if (self.drain_timeout_s < 0 or self.max_deliver < 1 or self.pool_size < 0 or self.nak_delay_s < 0
                or self.max_weights_bytes < 0):
            raise ValueError("evaluator.drain_timeout_s, evaluator.pool_size, evaluator.nak_delay_s and "
                             "evaluator.max_weights_bytes must be >= 0, evaluator.max_deliver >= 1")
        if self.ack_wait_s <= 0:
            raise ValueError("evaluator.ack_wait_s must be > 0")
        if self.max_weights_bytes > MAX_WEIGHTS_BYTES:  # base64 in the harness's report, which is capped at 512 MiB
            raise ValueError(f"evaluator.max_weights_bytes must be at most {MAX_WEIGHTS_BYTES} (256 MiB), "
                             f"not {self.max_weights_bytes}")


def gpu_devices(setting: str) -> tuple[str, tuple[str, ...]]:
    """evaluator.gpus -> ("auto" | "none" | "all", ()) or ("ids", the device ids named); ValueError
    when it is none of those."""
    value = setting.strip().lower()
    if value in ("auto", "none", "all"):
        return value, ()
    ids = tuple(part.strip() for part in setting.split(","))
    if any(not i or i.split() != [i] for i in ids):
        raise ValueError(f"evaluator.gpus: {setting!r} is not auto, none, all or a comma-separated list of GPU "
                         "indices or UUIDs, e.g. \"0\" or \"0,2\" (RESEARCHER_EVALUATOR__GPUS=0,2)")
    return "ids", ids


class DashboardConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The dashboard service (services/dashboard): where it listens, and what it keeps in memory."""

    host: str = "127.0.0.1"  # compose sets 0.0.0.0 inside its container and publishes it on loopback
    port: int = 8088
    events_kept: int = 500  # the latest events of each run it has seen, for a page opened mid-run
    runs_kept: int = 200  # runs whose events it keeps (the oldest forgotten first)
    # the names a browser may reach it by (the Host header, without the port), comma-separated; any
    # other is refused, so a foreign page cannot rebind its own name to this address (DNS rebinding).
    # Published beyond loopback (DASHBOARD_BIND), add the machine's name: "127.0.0.1,localhost,lab1"
    allowed_hosts: str = "127.0.0.1,localhost"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"dashboard.port must be 0..65535, not {self.port} (RESEARCHER_DASHBOARD__PORT)")
        if self.events_kept < 1 or self.runs_kept < 1:
            raise ValueError("dashboard.events_kept and dashboard.runs_kept must be >= 1")
        if not self.hosts:
            raise ValueError("dashboard.allowed_hosts names no host (RESEARCHER_DASHBOARD__ALLOWED_HOSTS)")

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]


class LLMRoleConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One role's OpenAI-compatible endpoint. A key left unset (null) takes its default, and for
    the tools role planning's value: configure planning alone and both roles use that model."""

    enabled: bool | None = None  # false: no LLM for this role even where one is configured (tools: not inherited)
    base_url: str | None = None  # e.g. http://localhost:11434/v1 (Ollama); null: no LLM for this role
    model: str | None = None  # e.g. qwen2.5-coder:7b, gpt-4o-mini
    api_key_env: str | None = None  # the environment variable holding the API key (the key itself is never configured or logged)
    timeout_s: float | None = None  # one HTTP request, seconds
    max_retries: int | None = None  # on connection errors, timeouts, 408/409/429/5xx, with exponential backoff
    token_budget: int | None = None  # tokens in + out per run for this role; past it the built-in step runs
    max_reply_tokens: int | None = None  # cap on one reply's length, tokens
    temperature: float | None = None  # sampling temperature of every request
    # what each request asks the server for: "json_schema" (the reply's JSON schema, OpenAI's form, which
    # vLLM, llama.cpp's server and Ollama also take), "json_object" (JSON, with the schema beside it for the
    # servers that read it there: llama-cpp-python's) or "text". A server that refuses one gets the next,
    # and the endpoint's accepted mode is kept for the rest of the process
    response_format: Literal["json_schema", "json_object", "text"] | None = None
    json_mode: bool | None = None  # older key: false is response_format "text"


# What an unset key of a role means (after the tools role has taken planning's values).
LLM_ROLE_DEFAULTS: dict[str, Any] = {"enabled": True, "api_key_env": "OPENAI_API_KEY", "timeout_s": 120.0, "max_retries": 2,
                                     "token_budget": 200_000, "max_reply_tokens": 4096, "temperature": 0.2,
                                     "response_format": None, "json_mode": None}


class ReplyTokens(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The cap on one reply's tokens per kind of request (below the role's max_reply_tokens): a plan
    or a decision is a few hundred tokens, a module a few thousand. A reply cut off at its cap is
    malformed at once: a small model that loops runs to the cap, and a bigger cap only costs time."""

    plan: int = 1024  # a proposal or a decision
    code: int = 3072  # a module's source, JSON-escaped
    summary: int = 512  # a reading of validated code

    def __post_init__(self) -> None:
        if min(self.plan, self.code, self.summary) < 16:
            raise ValueError("llm.reply_tokens: every cap must be at least 16 tokens")


class StepSeconds(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Wall-clock seconds for all the LLM calls of one step (the request, its retries and repairs);
    when they are spent the step falls back (the built-in search, the deterministic assembler, no
    summary) with that reason."""

    plan: float = 180.0
    code: float = 300.0
    summary: float = 90.0

    def __post_init__(self) -> None:
        if min(self.plan, self.code, self.summary) <= 0:
            raise ValueError("llm.step_seconds: every budget must be positive")


class LLMConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    planning: LLMRoleConfig = msgspec.field(default_factory=LLMRoleConfig)  # proposes configs, decides
    tools: LLMRoleConfig = msgspec.field(default_factory=LLMRoleConfig)  # writes module code, summaries
    code_attempts: int = 3  # tools-LLM code generations per iteration (first + fixes) before the deterministic assembler
    history_limit: int = 8  # iterations shown to the planning LLM in full (the best one always is)
    # the check of each endpoint when a run starts (its model list, no retries), seconds: short, as
    # it only asks whether the server is there; trouble is an event, or a failed run with require_llm
    check_timeout_s: float = 10.0
    reply_tokens: ReplyTokens = msgspec.field(default_factory=ReplyTokens)
    step_seconds: StepSeconds = msgspec.field(default_factory=StepSeconds)

    def __post_init__(self) -> None:
        if self.code_attempts < 1 or self.history_limit < 1:
            raise ValueError("llm.code_attempts and llm.history_limit must be at least 1")
        if self.code_attempts > ceilings.MAX_CODE_ATTEMPTS:  # each attempt's code travels back in the next request
            raise ValueError(f"llm.code_attempts must be at most {ceilings.MAX_CODE_ATTEMPTS}, not {self.code_attempts}")
        for role in ("planning", "tools"):
            resolved = resolve_llm(self, role)
            if resolved["base_url"] and not resolved["model"]:
                raise ValueError(f"llm.{role}.base_url is set but no model is: set llm.{role}.model "
                                 f"(or --{'tools-' if role == 'tools' else ''}llm-model)")


def resolve_llm(llm: LLMConfig, role: str) -> dict[str, Any]:
    """The effective settings of `role` ("planning" or "tools") as a dict of LLMRoleConfig's keys."""
    planning = msgspec.structs.asdict(llm.planning)
    values = planning if role == "planning" else {
        key: planning[key] if value is None else value for key, value in msgspec.structs.asdict(llm.tools).items()}
    resolved = {key: LLM_ROLE_DEFAULTS.get(key) if value is None else value for key, value in values.items()}
    if not resolved["enabled"]:
        resolved["base_url"] = None
    return resolved


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats_url: str = "nats://127.0.0.1:4222"  # NATS_URL overrides it
    log_level: str = "info"  # debug | info | warning | error
    # after SIGTERM: how long a service finishes the work in hand (an answer, a message) before it
    # is cancelled and the service closes anyway, seconds; the evaluator takes drain_timeout_s + 5
    # when that is longer
    stop_grace_s: float = 20.0
    data: DataConfig = msgspec.field(default_factory=DataConfig)  # data sets, for every service
    planner: PlannerConfig = msgspec.field(default_factory=PlannerConfig)
    assembler: AssemblerConfig = msgspec.field(default_factory=AssemblerConfig)
    sandbox: SandboxConfig = msgspec.field(default_factory=SandboxConfig)
    evaluator: EvaluatorConfig = msgspec.field(default_factory=EvaluatorConfig)
    llm: LLMConfig = msgspec.field(default_factory=LLMConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)  # what one goal may ask
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)

    def __post_init__(self) -> None:
        if self.stop_grace_s < 0:
            raise ValueError("stop_grace_s must be >= 0 (seconds; RESEARCHER_STOP_GRACE_S)")


# Keys that moved: an old file (or variable) that still has one is told where it lives now.
MOVED_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("evaluator", "data_dir"): ("data", "dir"),
    ("evaluator", "val_fraction"): ("data", "val_fraction"),
}


def replica_name() -> str:
    """This service instance's name: RESEARCHER_REPLICA, else the host name (a container's id in compose).
    Containers a service starts carry it in their owner label, so a restart removes its strays."""
    return os.environ.get("RESEARCHER_REPLICA") or socket.gethostname()


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "NATS_URL" in environ:
        out["nats_url"] = environ["NATS_URL"]
    for key, value in environ.items():
        if not key.startswith("RESEARCHER_") or key == "RESEARCHER_CONFIG":
            continue
        path = key[len("RESEARCHER_") :].lower().split("__")
        if len(path) == 1 and path[0] not in Config.__struct_fields__:
            continue  # not a setting (RESEARCHER_REPLICA names a replica, say)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = None if value.lower() in ("", "null", "none") else value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_ABSENT = object()


def _check_moved(raw: dict[str, Any], source: str, variables: bool = False) -> None:
    """A key of MOVED_KEYS in `raw` -> ConfigFileError saying where it lives now."""
    for old, new in MOVED_KEYS.items():
        node: Any = raw
        for part in old:
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT:
            continue
        if variables:
            detail = (f"RESEARCHER_{'__'.join(old).upper()} has moved: set RESEARCHER_{'__'.join(new).upper()} instead")
        else:
            detail = f"{'.'.join(old)} has moved to {'.'.join(new)}: write it under `{new[0]}:` as `{new[-1]}:`"
        raise ConfigFileError(source, detail)


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    chosen = path or environ.get("RESEARCHER_CONFIG") or (DEFAULT_FILE if DEFAULT_FILE.exists() else None)
    raw: dict[str, Any] = {}
    if chosen:
        try:
            raw = yaml.safe_load(Path(chosen).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigFileError(str(chosen), str(exc)) from exc
        if not isinstance(raw, dict):
            raise ConfigFileError(str(chosen), "the top level must be a mapping of keys to values")
    _check_moved(raw, str(chosen))
    try:
        msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigFileError(str(chosen), f"{exc}; see shared/runtime/config.py for every key") from exc
    overrides = _env_overrides(environ)
    where = "environment (RESEARCHER_<SECTION>__<KEY> variables)"
    _check_moved(overrides, where, variables=True)
    try:
        # strict=False lets environment strings become numbers and booleans
        return msgspec.convert(_merge(raw, overrides), Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigFileError(where, f"{exc}; see shared/runtime/config.py for every key") from exc
