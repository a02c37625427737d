"""The LLM prompts, one Markdown file each beside this module, with `$name` placeholders
(string.Template: JSON braces in a prompt need no escaping)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

_DIR = Path(__file__).parent


@cache
def _template(name: str) -> Template:
    return Template((_DIR / f"{name}.md").read_text())


def render(name: str, **values: object) -> str:
    """The prompt `name` with its placeholders filled; a missing value is a KeyError (a bug here)."""
    return _template(name).substitute({key: str(value) for key, value in values.items()})
