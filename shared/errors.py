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


class DatasetError(ResearcherError):
    """A data set that cannot be had: an unknown name, missing files, a malformed file."""


class DatasetNotFoundError(DatasetError):
    def __init__(self, name: str, expected: list[str], how: str) -> None:
        self.name, self.expected = name, expected
        super().__init__(f"data set {name!r} not found: expected {' and '.join(expected)}; {how}")


class UnknownDatasetError(DatasetError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown data set {name!r}; known: {', '.join(known)}")


class ConfigFileError(ResearcherError):
    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"configuration {path}: {detail}")


class SandboxUnavailableError(ResearcherError):
    """The Docker engine or the sandbox image cannot be used: a fault of the machinery."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"sandbox unavailable: {detail}")
