"""The planning LLM's logic: checking its replies, what it is shown, and how its decision meets
the statistics. Pure functions, no server."""

from services.assembler.codegen import code_problem
from services.planner.decide import decide
from services.planner.llm_plan import (PlanReply, check_reply, complete_config, llm_config, merge_decision,
                                       plan_context, with_head)
from shared.evaluation.aggregate import summarise
from shared.evaluation.metrics import SCALAR_METRICS
from shared.messaging.messages import DatasetFacts, Goal, SeedResult, TextFacts, ValidationResult
from shared.registry.records import (Convergence, Decision, Evaluation, IterationRecord, LearningDynamics, MetricSummary,
                                     Overfitting, SeedRow)

FACTS = DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1797)
MLP = {"class_name": "Net", "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 32}, {"type": "ReLU"},
                                       {"type": "Linear", "out_features": 10}], "epochs": 5}


def reply(action="iterate", config=MLP):
    return PlanReply(action=action, reasoning="because", model_config=config)


def test_a_config_takes_the_data_shapes_and_default_training_settings():
    config = complete_config({**MLP, "input_shape": [3, 32, 32], "num_classes": 100}, FACTS, max_epochs=20)
    assert config["input_shape"] == [1, 8, 8] and config["num_classes"] == 10  # the data decides, not the model
    assert (config["optimizer"], config["lr"], config["batch_size"], config["epochs"]) == ("adam", 1e-3, 64, 5)


def test_a_valid_reply_passes():
    assert check_reply(reply(), FACTS, max_epochs=20, first=True) is None


def test_a_config_that_cannot_be_built_names_the_layer():
    bad = {**MLP, "layers": [{"type": "Conv2dd", "out_channels": 4}]}
    problem = check_reply(reply(config=bad), FACTS, 20, first=True)
    assert "model_config cannot be built: layer 0" in problem and "Conv2d" in problem  # the close match is suggested


def test_the_data_fixes_the_classifier_head_as_it_fixes_the_shapes():
    """A last Linear with the wrong class count gets num_classes; layers that stop before a
    classifier get one (Flatten first where needed); a sequence output is left to the check."""
    def completed(layers, facts=FACTS):
        return with_head(complete_config({**MLP, "layers": layers}, facts, 20))["layers"]

    assert completed([{"type": "Flatten"}, {"type": "Linear", "out_features": 7}])[-1] == {"type": "Linear", "out_features": 10}
    assert completed([{"type": "Flatten"}, {"type": "Linear", "out_features": 32}, {"type": "ReLU"}])[-1] == {
        "type": "Linear", "out_features": 10}
    conv = completed([{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "ReLU"}])
    assert conv[-2:] == [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]
    assert check_reply(reply(config={**MLP, "layers": [{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}]}),
                       FACTS, 20, first=True) is None
    assert completed(MLP["layers"]) == MLP["layers"]  # a complete config is left as it is
    text = DatasetFacts(name="t", kind="text", input_shape=[16], num_classes=2, num_samples=100, input_dtype="int64",
                        text=TextFacts(tokenizer="w", vocab_size=50, max_length=16))
    sequence = [{"type": "Embedding", "embedding_dim": 8}]
    assert completed(sequence, text)[-2:] == [{"type": "SeqPool", "mode": "mean"}, {"type": "Linear", "out_features": 2}]
    assert check_reply(reply(config={**MLP, "layers": sequence}), text, 20, first=True) is None


def test_the_runs_epoch_limit_bounds_an_llm_config_but_a_bad_value_is_still_an_error():
    assert llm_config({**MLP, "epochs": 36}, FACTS, 20)["epochs"] == 20
    assert check_reply(reply(config={**MLP, "epochs": 36}), FACTS, 20, first=True) is None
    assert "epochs must be an integer from 1 to 20, not 0" in check_reply(reply(config={**MLP, "epochs": 0}), FACTS, 20,
                                                                        first=True)


def test_typed_replies_name_what_is_wrong_and_drop_nothing_silently():
    import msgspec
    import pytest
    from services.planner.reply_types import Decided, Iterate, as_plan, reply_types

    ok = msgspec.json.decode(b'{"action": "iterate", "reasoning": "r", "model_config": {"layers": '
                             b'[{"type": "Linear", "out_features": 10}], "lr": 1}}', type=Decided)
    assert as_plan(ok).model_config == {"layers": [{"type": "Linear", "out_features": 10}], "lr": 1.0}
    for body, error in (
            (b'{"action": "iterate", "reasoning": "r", "model_config": null}', "Expected `object`, got `null`"),
            (b'{"action": "iterate", "reasoning": "r", "model_config": {"layers": [{"type": "Conv2d"}]}}',
             "missing required field `out_channels`"),
            (b'{"action": "iterate", "reasoning": "r", "model_config": {"layers": [{"type": "Linear", '
             b'"out_features": 3, "in_featurs": 4}]}}', "unknown field `in_featurs`"),
            (b'{"action": "iterate", "reasoning": "r", "model_config": {"layers": [{"type": "Conv3d"}]}}',
             "Invalid value 'Conv3d'"),
            (b'{"action": "fly", "reasoning": "r"}', "Invalid value 'fly'")):
        with pytest.raises(msgspec.ValidationError, match=error):
            msgspec.json.decode(body, type=Decided)
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'stop'"):
        msgspec.json.decode(b'{"action": "stop", "reasoning": "r"}', type=Iterate)  # the first proposal must iterate
    # each kind of data gets the layers that build for it: no convolution of a table's rows
    tabular, _ = reply_types("tabular")
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'Conv2d'"):
        msgspec.json.decode(b'{"action": "iterate", "reasoning": "r", "model_config": {"layers": [{"type": "Conv2d", '
                            b'"out_channels": 4, "kernel_size": 3}]}}', type=tabular)


def test_numbers_carry_their_bounds_and_the_schema_offers_the_usual_values():
    """A reply past a bound fails with its path for the repair; a server that constrains decoding
    to the schema is offered the usual values, and the prompt's example is among them."""
    import json

    import msgspec
    import pytest
    from services.planner.llm_plan import example_reply
    from services.planner.reply_types import reply_types
    from shared.llm.client import reply_schema

    images, _ = reply_types("image")

    def config(**settings):
        layers = settings.pop("layers", [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}])
        return json.dumps({"action": "iterate", "reasoning": "r", "model_config": {"layers": layers, **settings}})

    for settings, error in (({"lr": 0.0}, r"Expected `float` > 0.0 - at `\$.model_config.lr`"),
                            ({"lr": -0.5}, "> 0.0"), ({"weight_decay": 25.0}, r"< 1.0 - at `\$.model_config.weight_decay`"),
                            ({"batch_size": 0}, ">= 1"), ({"epochs": 0}, ">= 1"),
                            ({"layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 0}]}, "kernel_size"),
                            ({"layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": [3, 3, 3]}]}, "length <= 2"),
                            ({"layers": [{"type": "Dropout", "p": 1.5}]}, r"layers\[0\].p"),
                            ({"layers": [{"type": "Linear", "out_features": 0}]}, "out_features")):
        with pytest.raises(msgspec.ValidationError, match=error):
            msgspec.json.decode(config(**settings), type=images)
    # within the bounds, a value the schema does not offer is still a model's to choose
    assert msgspec.json.decode(config(lr=0.0007, batch_size=100), type=images).model_config.lr == 0.0007

    schema = reply_schema(images)
    settings = schema["$defs"]["ImageConfig"]["properties"]
    assert 0.001 in settings["lr"]["enum"] and settings["lr"]["exclusiveMinimum"] == 0
    assert settings["batch_size"]["enum"] == [8, 16, 32, 64, 128, 256, 512]
    assert schema["$defs"]["Conv2d"]["properties"]["kernel_size"]["anyOf"][0]["enum"] == [1, 3, 5, 7]
    for facts in (FACTS, DatasetFacts(name="wine", kind="tabular", input_shape=[13], num_classes=3, num_samples=178),
                  DatasetFacts(name="cifar10", kind="image", input_shape=[3, 32, 32], num_classes=10, num_samples=50000)):
        first, _ = reply_types(facts.kind)
        example = msgspec.json.decode(example_reply(facts, 20), type=first).model_config  # the example decodes
        offered = reply_schema(first)["$defs"][f"{facts.kind.capitalize()}Config"]["properties"]
        for key in ("lr", "weight_decay", "batch_size"):
            assert getattr(example, key) in offered[key]["enum"], (facts.name, key)


def test_training_settings_out_of_range_are_each_named():
    bad = {**MLP, "optimizer": "lion", "lr": 5, "epochs": 50, "batch_size": 0}
    problem = check_reply(reply(config=bad), FACTS, 20, first=True)
    for part in ("optimizer must be one of adam, adamw, sgd", "lr must be a number in (0, 1]",
                 "batch_size must be an integer from 1 to 4096"):
        assert part in problem


def test_the_first_proposal_must_iterate_and_iterate_needs_a_config():
    assert "first proposal must have action" in check_reply(reply("stop", None), FACTS, 20, first=True)
    assert "needs a model_config" in check_reply(reply("iterate", None), FACTS, 20, first=False)
    assert check_reply(reply("stop", None), FACTS, 20, first=False) is None


def evaluated(n, mean, config=MLP, decision=None):
    return IterationRecord(run_id="r", iteration=n, state="decided", model_config=config,
                           validation=ValidationResult(ok=True, param_count=1000 * n),
                           evaluation=Evaluation(
                               num_seeds=2,
                               aggregated={"val_accuracy": MetricSummary(mean=mean, std=0.01, ci_95=[mean - 0.02, mean + 0.02], n=2)},
                               seed_results=[SeedRow(seed=0, ok=True, dynamics=LearningDynamics(
                                   overfitting=Overfitting(severity="moderate"),
                                   convergence=Convergence(status="still_improving"), insights=["train more"]))]),
                           decision=decision)


GOAL = Goal(run_id="r", goal="a small CNN for digits", dataset="digits", target_accuracy=0.95, max_iterations=5, num_seeds=2)


def test_the_context_shows_the_best_configuration_the_history_and_the_budget():
    best = {**MLP, "class_name": "Best"}
    history = [evaluated(1, 0.80), evaluated(2, 0.91, best), evaluated(3, 0.85),
               IterationRecord(run_id="r", iteration=4, state="rejected", model_config=MLP,
                               validation=ValidationResult(ok=False, reason="output_shape", error="wrong shape"))]
    text = plan_context(GOAL, FACTS, 1400, history, best_iteration=2, max_epochs=20, history_limit=3,
                        spent=120, budget=500)
    assert "Goal: a small CNN for digits" in text and "input shape [1, 8, 8], 10 classes, 1400 training samples" in text
    assert "380 of 500 seed-epochs" in text and ">= 0.95" in text
    assert "Best configuration so far (iteration 2)" in text and '"class_name": "Best"' in text
    assert "the last 3 of 4 iterations" in text and '"iteration": 1,' not in text.split("History")[1]
    assert "rejected (output_shape): wrong shape" in text
    assert '"overfitting": "moderate"' in text and "still_improving" in text


def test_an_llm_iterate_carries_its_config_to_the_next_iteration():
    statistical = Decision(action="iterate", reasoning="mean 0.80 below target")
    merged = merge_decision(statistical, reply())
    assert (merged.action, merged.proposer, merged.next_config, merged.status) == ("iterate", "llm", MLP, None)


def test_an_llm_stop_ends_the_run_as_stopped():
    merged = merge_decision(Decision(action="iterate", reasoning="below"), reply("stop", None))
    assert (merged.action, merged.status) == ("stop", "stopped") and "stopped the run: because" in merged.reasoning


def test_a_claimed_success_below_the_target_is_a_disagreement_and_the_run_goes_on():
    history = [evaluated(1, 0.80)]
    statistical, _, _ = decide(GOAL, history)
    assert statistical.action == "iterate"
    merged = merge_decision(statistical, reply("goal_achieved", None))
    assert merged.action == "iterate" and merged.status is None and merged.next_config is None
    assert merged.llm_action == "goal_achieved"
    assert "claimed the goal achieved" in merged.disagreement and "0.8000 below target 0.9500" in merged.disagreement


def test_generated_code_is_checked_by_its_syntax_tree():
    assert code_problem("class Net(nn.Module):\n    def forward(self, x):\n        return x\n", "Net") is None
    assert code_problem("class Net(nn.Module:\n", "Net").startswith("syntax error at line 1")
    assert "must define class Net at top level (classes found: Other)" in code_problem("class Other:\n    pass\n", "Net")
    assert "has no forward" in code_problem("class Net:\n    def __init__(self):\n        pass\n", "Net")


def test_the_context_carries_every_metric_the_report_has():
    """Typed records end the slip where the context asked for `f1_macro` and the metric was `val_f1_macro`."""
    results = {s: SeedResult(job_id=f"r.{s}", run_id="r", iteration=1, seed=s, ok=True,
                             metrics={name: 0.5 + 0.1 * s for name in SCALAR_METRICS}) for s in (0, 1)}
    evaluation = summarise(results, [0, 1])
    it = IterationRecord(run_id="r", iteration=1, state="evaluated", model_config=MLP,
                         validation=ValidationResult(ok=True, param_count=10), evaluation=evaluation)
    text = plan_context(GOAL, FACTS, 1400, [it], best_iteration=1, max_epochs=20, history_limit=3)
    assert set(evaluation.aggregated) == set(SCALAR_METRICS)
    for name in evaluation.aggregated:
        assert f'"{name}": {{"mean": ' in text, name


def test_the_context_names_class_weights_where_the_classes_are_imbalanced():
    rare = DatasetFacts(name="imbalanced", kind="tabular", input_shape=[20], num_classes=2, num_samples=5000,
                        class_names=["negative", "positive"], class_counts=[4950, 50])
    text = plan_context(GOAL, rare, 4000, [], best_iteration=None, max_epochs=20, history_limit=3)
    assert "Classes are imbalanced (largest/smallest = 99; samples per class: negative: 4950, positive: 50)" in text
    assert '"class_weights": true' in text
    assert "imbalanced" not in plan_context(GOAL, FACTS, 1400, [], best_iteration=None, max_epochs=20, history_limit=3)
    weighted = complete_config({**MLP, "class_weights": True}, rare, 20)
    assert weighted["class_weights"] is True and complete_config(MLP, rare, 20)["class_weights"] is False


def test_a_config_that_names_no_class_gets_one():
    """A config written by hand (researcher queue, the dashboard) may leave the class name out."""
    unnamed = {k: v for k, v in MLP.items() if k != "class_name"}
    assert complete_config(unnamed, FACTS, 20)["class_name"] == "CustomModel"
    assert complete_config(MLP, FACTS, 20)["class_name"] == "Net"
