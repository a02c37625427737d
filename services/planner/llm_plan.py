"""The planning LLM: what it is shown, how its reply is checked, and how its decision meets the
statistics. Pure logic apart from `ask_plan`; the loop records the calls and falls back.

The LLM proposes `model_config`s and may choose to iterate or stop, but it cannot end a run as
`goal_achieved`: that status follows the evaluator's numbers alone (`decide`), and a claim they
do not support is kept in the decision as a disagreement.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import msgspec

from shared.modelspec.assemble import ConfigError, assemble
from shared.llm.client import JSONAnswer, LLMClient, ask_json
from shared.messaging.messages import DEFAULT_RECIPE, DatasetFacts, Goal, Optimizer
from shared.llm.prompts import render
from shared.registry.records import Decision, IterationRecord
from services.planner.reply_types import KIND_LAYERS, LAYER_TYPES, MAX_BATCH_SIZE, PlanReply, as_plan, reply_types

OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


DEFAULT_CLASS_NAME = "CustomModel"  # a config that names no class (one written by hand, say)


def complete_config(config: dict[str, Any], facts: DatasetFacts, max_epochs: int) -> dict[str, Any]:
    """The data fixes the input shape and the class count, whatever the model wrote; training
    settings it left out take the recipe's defaults, so the record shows what really ran."""
    defaults = msgspec.structs.asdict(DEFAULT_RECIPE)
    defaults.pop("augment")  # not the LLM's to choose: the data kind decides (later)
    chosen = {k: v for k, v in config.items() if k not in ("augment", "vocab_size")}
    tokens = {"vocab_size": facts.vocab_size} if facts.kind == "text" else {}
    return {**defaults, "epochs": min(DEFAULT_RECIPE.epochs, max_epochs), "class_name": DEFAULT_CLASS_NAME, **chosen,
            "input_shape": list(facts.input_shape), "num_classes": facts.num_classes, **tokens}


def with_head(config: dict[str, Any]) -> dict[str, Any]:
    """A planning LLM's completed config with the classifier the class count needs: the data fixes
    the class count (as it fixes the input shape), so a last Linear with another out_features gets
    num_classes, and layers that end before a classifier get one (Flatten where the output has more
    than one dimension, then Linear(num_classes)). Small models often stop the layer list early.
    A config that does not build is left as it is, for the check to name its fault."""
    classes, layers = config.get("num_classes"), config.get("layers")
    if not isinstance(classes, int) or not isinstance(layers, list) or not layers:
        return config
    try:
        shape = assemble({**config, "num_classes": None}).output_shape
    except ConfigError:
        return config
    if tuple(shape) == (classes,):
        return config
    last = layers[-1]
    if isinstance(last, dict) and last.get("type") == "Linear" and len(shape) == 1:
        return {**config, "layers": [*layers[:-1], {**last, "out_features": classes}]}
    if config.get("vocab_size"):  # token ids: a sequence (B, L, D) is pooled over its real tokens
        if len(shape) not in (1, 2):
            return config
        head = [{"type": "SeqPool", "mode": "mean"}] if len(shape) == 2 else []
    else:
        head = [{"type": "Flatten"}] if len(shape) > 1 else []
    return {**config, "layers": [*layers, *head, {"type": "Linear", "out_features": classes}]}


def llm_config(config: dict[str, Any], facts: DatasetFacts, max_epochs: int) -> dict[str, Any]:
    """A planning LLM's config as the run trains it: completed from the data (`complete_config`,
    `with_head`), its epochs within the run's limit (candidates train fewer at the cheap rungs
    anyway; a config is only ever trained up to the limit)."""
    completed = with_head(complete_config(config, facts, max_epochs))
    epochs = completed.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > max_epochs:
        completed["epochs"] = max_epochs
    return completed


def config_problem(config: dict[str, Any], max_epochs: int) -> str | None:
    """What is wrong with a completed config, in words a model can act on; None when it builds."""
    problems = []
    if config.get("optimizer") not in OPTIMIZERS:
        problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {config.get('optimizer')!r}")
    lr, wd = config.get("lr"), config.get("weight_decay")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= 1):
        problems.append(f"lr must be a number in (0, 1], not {lr!r}")
    if not (isinstance(wd, (int, float)) and not isinstance(wd, bool) and 0 <= wd < 1):
        problems.append(f"weight_decay must be a number in [0, 1), not {wd!r}")
    for key, top in (("epochs", max_epochs), ("batch_size", MAX_BATCH_SIZE)):
        value = config.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top):
            problems.append(f"{key} must be an integer from 1 to {top}, not {value!r}")
    try:
        assemble(config)  # shapes, layer arguments, the class count of the output, the parameter cap
    except ConfigError as exc:
        problems.append(f"model_config cannot be built: {exc}")
    return "; ".join(problems) or None


def check_reply(reply: Any, facts: DatasetFacts, max_epochs: int, first: bool) -> str | None:
    """What is wrong with a decoded reply (a PlanReply or one of reply_types'), None when usable."""
    reply = as_plan(reply)
    if first and reply.action != "iterate":
        return 'the first proposal must have action "iterate" and a model_config'
    if reply.action != "iterate":
        return None
    if not reply.model_config:
        return 'action "iterate" needs a model_config object'
    return config_problem(llm_config(reply.model_config, facts, max_epochs), max_epochs)


# ---- what the LLM is shown ----

def _iteration_summary(it: IterationRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"iteration": it.iteration, "proposed_by": it.proposer, "model_config": it.model_config}
    if it.rung is not None:  # its figures are from a cheap rung: fewer epochs and seeds than its config says
        rung = next((r for r in it.rungs if r.index == it.rung), None)
        out["measured_at"] = f"cheap rung {it.rung}" + (f" ({rung.epochs} epochs, {len(rung.seeds)} seeds)" if rung else "")
    if it.in_flight:
        out["outcome"] = "in flight (not measured yet)"
    v = it.validation
    if it.state == "rejected" or (v is not None and not v.ok):
        out["outcome"] = f"rejected ({v.reason if v else 'unknown'}): {v.error if v else ''}"
    elif v is not None:
        out["parameters"] = v.param_count  # as the model's process reports it: the code runs there
    evaluation = it.evaluation
    if evaluation is None:
        return _with_decision(out, it)
    for name, stats in evaluation.aggregated.items():  # every metric the report has
        if stats.n:
            out[name] = {k: _round(getattr(stats, k)) for k in ("mean", "std", "ci_95", "n")
                         if getattr(stats, k) is not None}
    dynamics = next((s.dynamics for s in evaluation.seed_results if s.dynamics), None)
    if dynamics is not None:
        out["learning_dynamics"] = {"overfitting": dynamics.overfitting.severity,
                                    "convergence": dynamics.convergence.status, "insights": dynamics.insights[:4]}
    if evaluation.failed_seeds:
        out["failed_seeds"] = [{"seed": f.seed, "reason": f.reason, "error": f.error} for f in evaluation.failed_seeds]
    return _with_decision(out, it)


def _with_decision(out: dict[str, Any], it: IterationRecord) -> dict[str, Any]:
    if it.decision:
        out["decision"] = f"{it.decision.action}: {it.decision.reasoning}"
    return out


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _balance_lines(facts: DatasetFacts) -> list[str]:
    """The class counts where they are imbalanced, so the LLM knows when "class_weights" is worth a try."""
    if not facts.imbalanced:
        return []
    counts = ", ".join(f"{name}: {count}" for name, count in zip(facts.class_names, facts.class_counts))
    return [f"Classes are imbalanced (largest/smallest = {facts.imbalance_ratio():.0f}; samples per class: {counts}): "
            "accuracy alone misleads, and \"class_weights\": true weighs the loss towards the rare classes."]


def _text_lines(facts: DatasetFacts) -> list[str]:
    """What a text model's author needs: the ids' vocabulary, the lengths, whether pairs."""
    text = facts.text
    if text is None:
        return []
    pair = " Each sample is a sentence pair \"[CLS] a [SEP] b [SEP]\" (segments: Embedding's \"segments\": true)." \
        if text.pair else ""
    return [f"Inputs are token ids (batch, {text.max_length}) int64 from a vocabulary of {text.vocab_size:,} "
            f"({text.tokenizer}), padded with 0. Lengths in tokens: mean {text.mean_length:.0f}, median "
            f"{text.median_length:.0f}, 95th percentile {text.p95_length:.0f}, longest {text.longest}; "
            f"{text.truncated_share:.0%} cut to {text.max_length}.{pair}"]


def plan_context(goal: Goal, facts: DatasetFacts, num_train: int, history: list[IterationRecord],
                 best_iteration: int | None, max_epochs: int, history_limit: int, *, spent: int = 0,
                 budget: int | None = None) -> str:
    """The goal, the data, the budget, the best configuration so far and the recent history."""
    done = len(history)
    budget = budget if budget is not None else goal.max_iterations * goal.num_seeds * max_epochs
    bound = "upper" if goal.lower_is_better else "lower"
    statistic = "mean over seeds" if goal.goal_statistic == "mean" else f"{bound} bound of the 95% interval over seeds"
    lines = [
        f"Goal: {goal.goal}",
        f"Data set: {facts.name} ({facts.kind}), input shape {list(facts.input_shape)}, "
        f"{facts.num_classes} classes, {num_train} training samples",
        f"Target: {goal.goal_metric} on the validation split ({statistic}) "
        f"{'<=' if goal.lower_is_better else '>='} {goal.target_value} ({'lower' if goal.lower_is_better else 'higher'} "
        "is better; every metric of each candidate is shown below)",
        f"Each configuration is trained for its own epochs (at most {max_epochs}) with {goal.num_seeds} seed(s).",
        *_text_lines(facts),
        *_balance_lines(facts),
        *([f"Table columns (encoded on the trusted side: medians for blanks, one-hot categories): "
           f"{facts.columns_summary()}"] if facts.columns else []),
        f"Budget: {budget - spent} of {budget} seed-epochs (one seed trained one epoch) left; candidates train "
        f"briefly first and the best earn the full budget; the run stops after {goal.patience} full evaluations "
        "without a better result.",
    ]
    best = next((h for h in history if h.iteration == best_iteration), None)
    if best is not None:
        lines += ["", f"Best configuration so far (iteration {best.iteration}):",
                  json.dumps(_iteration_summary(best), indent=1)]
    elif history:
        lines += ["", "No configuration has been measured successfully yet."]
    shown = history[-history_limit:]
    if shown:
        lines += ["", f"History (the last {len(shown)} of {done} iterations, oldest first):"]
        lines += [json.dumps(_iteration_summary(h)) for h in shown]
    return "\n".join(lines)


KIND_NOTES = {"image": "Inputs are images (channels, height, width): Flatten before the first Linear.",
              "tabular": "Inputs are feature vectors: Linear layers (no Conv2d; no Flatten needed)."}


def example_reply(facts: DatasetFacts, max_epochs: int) -> str:
    """One reply for this data set, as the prompt's example: the built-in search's first config (a
    config that builds), without what the system fills in."""
    from services.planner.search import default_params, to_model_config  # optuna: only where asked
    config = {k: v for k, v in to_model_config(facts, default_params(facts)).items()
              if k not in ("class_name", "input_shape", "num_classes", "vocab_size")}
    config["epochs"] = min(config["epochs"], max_epochs)
    config["lr"] = 0.01 if config["optimizer"] == "sgd" else 0.005  # a value small models copy whole (0.001 came back 0.0)
    return json.dumps({"action": "iterate", "reasoning": "A small baseline to measure first.", "model_config": config})


def planning_system(facts: DatasetFacts, max_epochs: int = 20) -> str:
    """The planning LLM's system prompt: short, with one example reply for the data set; for
    text, with the sequence layers the format has."""
    note = render("planning_text") if facts.kind == "text" else KIND_NOTES.get(facts.kind, "")
    kinds = KIND_LAYERS.get(facts.kind)
    types = [t for t in LAYER_TYPES if kinds is None or t in {k.__struct_config__.tag for k in kinds}]
    return render("planning_system", example=example_reply(facts, max_epochs), num_classes=facts.num_classes,
                  max_epochs=max_epochs, kind_note=note, layer_types=", ".join(types))


async def ask_plan(client: LLMClient, context: str, facts: DatasetFacts, max_epochs: int, *,
                   iteration: int | None, tokens_used: int) -> JSONAnswer:
    """The first proposal (iteration None) or the decision after `iteration`; one repair."""
    first = iteration is None
    prompt = render("planning_first", context=context) if first else render("planning_next", context=context,
                                                                            iteration=iteration)
    messages = [{"role": "system", "content": planning_system(facts, max_epochs)}, {"role": "user", "content": prompt}]
    first_type, decided_type = reply_types(facts.kind)
    answer = await ask_json(client, messages, first_type if first else decided_type, "propose" if first else "decide",
                            check=lambda r: check_reply(r, facts, max_epochs, first), repairs=1, tokens_used=tokens_used)
    if answer.value is not None:
        answer.value = as_plan(answer.value)
        if answer.value.model_config:
            answer.value.model_config = llm_config(answer.value.model_config, facts, max_epochs)
    return answer


# ---- the decision ----

def merge_decision(statistical: Decision, reply: PlanReply) -> Decision:
    """The LLM's choice where the statistics leave it one (they said iterate: budget left, target
    not met). It may pick the next config or stop; a claim of success is recorded, not obeyed."""
    llm = {"proposer": "llm", "llm_action": reply.action, "llm_reasoning": reply.reasoning}
    if reply.action == "iterate":
        return Decision(action="iterate", reasoning=reply.reasoning, next_config=reply.model_config, **llm)
    if reply.action == "stop":
        return Decision(action="stop", status="stopped", reasoning=f"the planning LLM stopped the run: {reply.reasoning}", **llm)
    return Decision(action="iterate", reasoning=statistical.reasoning, **llm,
                    disagreement=f"the planning LLM claimed the goal achieved ({reply.reasoning}), but the "
                                 f"measurements do not support it: {statistical.reasoning}")
