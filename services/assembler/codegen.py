"""The tools LLM's two jobs: module source for a model_config (checked by AST, repaired with the
errors fed back), and a reading of validated code for the model summary.

The deterministic assembler always checks the config first: a config it cannot build is an
error whoever writes the code, and it is what a failing LLM falls back to.
"""

from __future__ import annotations

import ast
import asyncio
import json
from typing import Annotated

import msgspec

from shared.messaging.limits import MAX_SOURCE_BYTES
from shared.modelspec.assemble import ConfigError, assemble
from shared.modelspec.seqlayers import SEQ_LAYERS, source_of
from shared.llm.client import LLMClient, ask_json
from shared.messaging.messages import AssembleReply, AssembleRequest, Narrative, SummaryReply, SummaryRequest
from shared.llm.prompts import render


class CodeReply(msgspec.Struct):
    python: str


_Point = Annotated[str, msgspec.Meta(max_length=300)]


class NarrativeReply(msgspec.Struct, kw_only=True):
    """A Narrative as the tools LLM writes it, bounded so that a constrained decoder stops where a
    reading should (a small model that loops would run to the reply cap)."""

    architecture: Annotated[str, msgspec.Meta(max_length=1000)]
    strengths: Annotated[list[_Point], msgspec.Meta(max_length=8)]
    weaknesses: Annotated[list[_Point], msgspec.Meta(max_length=8)]


def code_problem(source: str, class_name: str) -> str | None:
    """The AST check of generated source: not longer than any message can carry, it parses, defines
    the class at top level with a forward."""
    size = len(msgspec.json.encode(source))
    if size > MAX_SOURCE_BYTES:
        return f"the module is {size:,} bytes as JSON, over the limit of {MAX_SOURCE_BYTES:,}: write a shorter one"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if class_name not in classes:
        found = ", ".join(sorted(classes)) or "none"
        return f"the module must define class {class_name} at top level (classes found: {found})"
    methods = {n.name for n in classes[class_name].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "forward" not in methods:
        return f"class {class_name} has no forward(self, x) method"
    return None


def input_notes(config: dict) -> tuple[str, str]:
    """(what the input batch holds, the sequence layers' reference source) for a token-id config;
    empty for float inputs. The container has no library: the code must define those layers."""
    if not config.get("vocab_size"):
        return "", ""
    note = (f", int64 token ids in [0, {config['vocab_size']}), padded at the end with 0 "
            "(the padding mask is x != 0)")
    used = [layer["type"] for layer in config["layers"] if layer.get("type") in SEQ_LAYERS]
    reference = ("\nThe config's sequence layers are not torch.nn classes: they are defined below, each called "
                 "as layer(x, mask) when its class has takes_mask = True, else layer(x). Copy these definitions "
                 "into your module (or write equivalents that honour the padding mask the same way):\n\n"
                 f"```python\n{source_of(dict.fromkeys(used))}\n```\n")
    return note, reference


async def assemble_code(request: AssembleRequest, tools: LLMClient | None) -> AssembleReply:
    try:
        model = await asyncio.to_thread(assemble, request.model_config)  # meta-device probing: off the loop
    except ConfigError as exc:
        return AssembleReply(ok=False, error=str(exc))
    deterministic = AssembleReply(ok=True, class_name=model.class_name, source=model.source)
    if tools is None or request.attempts_left < 1:
        return deterministic
    config = request.model_config
    input_note, reference = input_notes(config)
    prompt = render("code_request", class_name=model.class_name, input_shape=", ".join(map(str, config["input_shape"])),
                    num_classes=config.get("num_classes"), model_config=json.dumps(config),
                    input_note=input_note, reference=reference)
    messages = [{"role": "system", "content": render("code_system")}, {"role": "user", "content": prompt}]
    for earlier in request.feedback:  # the sandbox's verdicts on this iteration's earlier attempts
        messages += [{"role": "assistant", "content": json.dumps({"python": earlier.source})},
                     {"role": "user", "content": render("code_repair", error=earlier.error)}]
    answer = await ask_json(tools, messages, CodeReply, "code", check=lambda r: code_problem(r.python, model.class_name),
                            repairs=request.attempts_left - 1, tokens_used=request.tokens_used)
    if answer.value is not None:
        return AssembleReply(ok=True, class_name=model.class_name, source=answer.value.python, assembler="llm",
                             llm_calls=answer.calls)
    note = f"the tools LLM's code could not be used ({answer.error}); the deterministic assembler built it"
    return msgspec.structs.replace(deterministic, note=note, llm_calls=answer.calls)


async def summarise_code(request: SummaryRequest, tools: LLMClient | None) -> SummaryReply:
    if tools is None:
        return SummaryReply(ok=False, error="no tools LLM configured")
    prompt = render("summary_request", class_name=request.class_name, facts=json.dumps(msgspec.to_builtins(request.facts), indent=1),
                    source=request.source)
    messages = [{"role": "system", "content": render("summary_system")}, {"role": "user", "content": prompt}]
    answer = await ask_json(tools, messages, NarrativeReply, "summary", repairs=1, tokens_used=request.tokens_used)
    narrative = Narrative(**msgspec.structs.asdict(answer.value)) if answer.value is not None else None
    return SummaryReply(ok=narrative is not None, narrative=narrative, error=answer.error, llm_calls=answer.calls)
