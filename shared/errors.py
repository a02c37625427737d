"""Exceptions of the machinery. Failures of generated code are results, not exceptions."""

from __future__ import annotations


class ResearcherError(Exception):
    """Base class: every subclass builds its own message from structured fields."""


class MessageError(ResearcherError):
    """A message that does not decode into its schema."""

    def __init__(self, type_name: str, detail: str, subject: str = "") -> None:
        self.type_name, self.detail, self.subject = type_name, detail, subject
        where = f" on {subject!r}" if subject else ""
        super().__init__(f"malformed {type_name}{where}: {detail}")


class MessageTooLargeError(MessageError):
    """A message over its type's size limit (shared/messaging/limits.py): refused unread."""

    def __init__(self, type_name: str, size: int, limit: int, subject: str = "") -> None:
        self.type_name, self.size, self.limit, self.subject = type_name, size, limit, subject
        self.detail = f"{size:,} bytes, over the limit of {limit:,} bytes"
        where = f" on {subject!r}" if subject else ""
        ResearcherError.__init__(self, f"{type_name}{where} refused: {self.detail} (shared/messaging/limits.py "
                                 "derives each limit from what the message can hold)")


class DatasetError(ResearcherError):
    """A data set that cannot be had: an unknown name, missing files, a malformed file."""


class DatasetNotFoundError(DatasetError):
    def __init__(self, name: str, expected: list[str], how: str) -> None:
        self.name, self.expected = name, expected
        super().__init__(f"data set {name!r} not found: expected {' and '.join(expected)}; {how}")


class OutsideDataDirError(DatasetError):
    """A path (a CSV file, an hf: folder, a tokenizer) that resolves outside the data directory: refused,
    since goals come over NATS."""

    def __init__(self, given: str, root: str, resolved: str, what: str = "CSV file",
                 example: str = "csv:FILE.csv:TARGET") -> None:
        self.given, self.root, self.resolved = given, root, resolved
        super().__init__(f"{what} {given!r} lies outside the data directory {root} (it resolves to {resolved}); "
                         f"put it in {root} and name it relative to it, as {example}")


class UnknownDatasetError(DatasetError):
    def __init__(self, name: str, known: list[str], suggestion: str = "") -> None:
        self.name, self.known, self.suggestion = name, known, suggestion
        guess = f"; did you mean {suggestion}? " if suggestion else "; "
        super().__init__(f"unknown data set {name!r}{guess}known: {', '.join(known)}")


class NatsUnreachableError(ResearcherError):
    """No NATS server answered where a command was told to find one."""

    def __init__(self, url: str, waited_s: float, last_error: str | None = None) -> None:
        self.url, self.waited_s, self.last_error = url, waited_s, last_error
        if last_error and any(word in last_error.lower() for word in ("ssl", "certificate", "tls", "handshake")):
            super().__init__(f"the NATS server at {url} refused this command's TLS, or this command refused the "
                             f"server's, within {waited_s:g} s ({last_error}). The stack's NATS takes only clients "
                             "with a certificate of its own CA: this machine's are made by `researcher credentials` "
                             "(in RESEARCHER_CREDENTIALS); for another machine's stack, copy its client credential "
                             "here and set NATS_CREDENTIALS=DIR")
            return
        super().__init__(f"no NATS server answered at {url} within {waited_s:g} s: is the stack up (`make up`, "
                         "`make ps`)? The URL comes from --nats-url or NATS_URL; through the Makefile from "
                         "NATS_PORT and NATS_BIND unless NATS_URL is given")


class ConfigFileError(ResearcherError):
    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"configuration {path}: {detail}")


class MachineryError(ResearcherError):
    """A fault of the machinery a job runs on, not of the job: the job goes back to the queue
    for another replica, and the run is told why; it is never recorded as a failed seed."""


class DatasetUnavailableError(MachineryError):
    """An evaluator cannot load a job's data set (missing or malformed files, a name its version
    does not know): its data, not the job, is at fault."""

    def __init__(self, replica: str, dataset: str, detail: str) -> None:
        self.replica, self.dataset, self.detail = replica, dataset, detail
        who = f"evaluator {replica!r}" if replica else "the evaluator"
        super().__init__(f"{who} cannot load data set {dataset!r}: {detail}; put the data set in the data "
                         f"directory {who} reads (data.dir, RESEARCHER_DATA__DIR; under `make up`, ./data or the "
                         f"folder RESEARCHER_DATA_DIR names on that evaluator's machine), or stop that evaluator")


class SandboxUnavailableError(MachineryError):
    """The Docker engine or the sandbox image cannot be used: a fault of the machinery."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"sandbox unavailable: {detail}")


class RefusedCall(ResearcherError):
    """A Docker API call the socket proxy does not pass (shared/sandboxing/socket_policy.py):
    answered with HTTP 403 and this message, which the docker SDK shows as an APIError."""

    def __init__(self, method: str, path: str, why: str) -> None:
        self.method, self.path, self.why = method, path, why
        super().__init__(f"the Docker socket proxy refused {method} {path}: {why}")


class SteerError(ResearcherError):
    """A steering request (stop, pause, resume, queue) that got no usable answer: no such run, an
    ended one, no planner driving it, or an answer that does not decode. The message is the user's."""

    def __init__(self, run_id: str, action: str, detail: str) -> None:
        self.run_id, self.action, self.detail = run_id, action, detail
        super().__init__(detail)


class MissingExtraError(ResearcherError):
    """An optional part of the package (a tracker's client) that is not installed."""

    def __init__(self, option: str, module: str, extra: str) -> None:
        self.option, self.module, self.extra = option, module, extra
        super().__init__(f"{option} needs the {module!r} package, which is not installed: "
                         f"pip install 'pytorch-researcher[{extra}]'")


class ExportTargetError(ResearcherError):
    """A tracker export that would overwrite something it did not write."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"will not write the export to {path}: {why}")
