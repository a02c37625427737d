"""The built-in planner's search: deterministic, stateless, inside its space, and every
proposal assembles into a model with the right output shape."""

import json

import pytest
import torch
from optuna.distributions import CategoricalDistribution

from shared.modelspec.assemble import assemble
from shared.messaging.messages import DatasetFacts, TrainingRecipe
from services.planner.search import (SearchBounds, default_params, local_move, propose,
                                     rebuild_study, search_space, to_model_config)

DIGITS = DatasetFacts(name="digits", kind="image", input_shape=(1, 8, 8), num_classes=10,
                      num_samples=1437)
CANCER = DatasetFacts(name="breast_cancer", kind="tabular", input_shape=(30,), num_classes=2,
                      num_samples=455)


def fake_score(params: dict) -> float | None:
    """A made-up objective with structure for TPE to find: adamw and lr near 3e-3 win."""
    if params["lr"] > 0.025:
        return None  # as if training diverged
    score = 0.5 + 0.3 * (params["optimizer"] == "adamw")
    return score + 0.1 * (1e-3 < params["lr"] < 1e-2)


def in_space(params: dict, facts: DatasetFacts, bounds: SearchBounds = SearchBounds()) -> bool:
    space = search_space(facts, bounds)
    if list(params) != list(space):
        return False
    for name, dist in space.items():
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                return False
        elif not dist.low <= value <= dist.high:
            return False
    return True


def run_search(facts, n, seed=0, bounds=SearchBounds()):
    history, proposals = [], []
    for _ in range(n):
        proposal = propose(facts, history, seed=seed, bounds=bounds)
        proposals.append(proposal)
        history.append((proposal.params, fake_score(proposal.params)))
    return proposals, history


def check_assembles(proposal, facts):
    model = assemble(proposal.model_config)
    assert model.output_shape == (facts.num_classes,)
    namespace: dict = {}
    exec(compile(model.source, "<assembled>", "exec"), namespace)
    net = namespace[model.class_name]().eval()
    with torch.no_grad():
        assert net(torch.randn(3, *facts.input_shape)).shape == (3, facts.num_classes)


@pytest.mark.parametrize("facts", [DIGITS, CANCER], ids=["image", "tabular"])
def test_first_proposal_is_the_default(facts):
    proposal = propose(facts, [], seed=3)
    assert proposal.params == default_params(facts)
    cfg = proposal.model_config
    assert cfg["class_name"] == ("SearchCNN" if facts.kind == "image" else "SearchMLP")
    assert cfg["input_shape"] == list(facts.input_shape)
    assert cfg["num_classes"] == facts.num_classes
    assert {"optimizer", "lr", "weight_decay", "epochs", "batch_size"} <= set(cfg)
    check_assembles(proposal, facts)


@pytest.mark.parametrize("facts", [DIGITS, CANCER], ids=["image", "tabular"])
def test_every_proposal_assembles_and_stays_in_space(facts):
    proposals, _ = run_search(facts, 20)
    for proposal in proposals:
        assert in_space(proposal.params, facts)
        json.dumps(proposal.params)
        json.dumps(proposal.model_config)
        check_assembles(proposal, facts)
    distinct = {json.dumps(p.params, sort_keys=True) for p in proposals}
    assert len(distinct) == len(proposals)  # a real search, not a fixed list


def test_same_inputs_same_proposal():
    _, history = run_search(DIGITS, 8, seed=5)
    first = propose(DIGITS, history, seed=5)
    again = propose(DIGITS, [(dict(p), s) for p, s in history], seed=5)
    assert first == again
    assert propose(DIGITS, history, seed=6) != first


def test_history_changes_the_proposal():
    _, history = run_search(CANCER, 6)
    a = propose(CANCER, history[:5], seed=0)
    b = propose(CANCER, history, seed=0)
    assert a.params != b.params
    assert b.history_used == 6


def test_sampler_learns_from_scores():
    proposals, history = run_search(DIGITS, 30, seed=1)
    late = [p.params for p in proposals[15:]]
    # Random choice among 3 optimizers would give adamw a third of the time.
    assert sum(p["optimizer"] == "adamw" for p in late) / len(late) > 0.5
    assert max(s or 0 for _, s in history[15:]) >= max(s or 0 for _, s in history[:5])


def test_failures_are_told_to_the_sampler_as_zero():
    params = default_params(CANCER)
    study, used = rebuild_study(CANCER, [(params, None), (params, 0.9)], seed=0)
    assert used == 2
    assert [t.value for t in study.trials] == [0.0, 0.9]


def test_history_outside_the_space_is_skipped():
    good = default_params(CANCER)
    stale = {**good, "epochs": 50}  # from a run with other bounds
    foreign = {"lr": 0.01}  # proposed by something else
    proposal = propose(CANCER, [(stale, 0.8), (foreign, 0.7), (good, 0.9)], seed=0)
    assert proposal.history_used == 1
    assert in_space(proposal.params, CANCER)


def test_small_images_never_pool_to_zero():
    tiny = DatasetFacts(name="tiny", kind="image", input_shape=(3, 2, 3), num_classes=4,
                        num_samples=100)
    proposals, _ = run_search(tiny, 8)
    for proposal in proposals:
        pools = [l for l in proposal.model_config["layers"] if l["type"] == "MaxPool2d"]
        assert len(pools) <= 1
        check_assembles(proposal, tiny)


def test_large_images_get_a_small_head():
    big = DatasetFacts(name="big", kind="image", input_shape=(3, 64, 64), num_classes=5,
                       num_samples=5000)
    cfg = propose(big, [], seed=0).model_config
    types = [l["type"] for l in cfg["layers"]]
    assert "AdaptiveAvgPool2d" in types
    model = assemble(cfg)
    assert model.layer_shapes[types.index("Flatten")] == (64 * 4 * 4,)


def test_bounds_and_tiny_training_sets():
    bounds = SearchBounds(min_epochs=2, max_epochs=3)
    small = DatasetFacts(name="small", kind="tabular", input_shape=(4,), num_classes=3,
                         num_samples=50)
    proposals, _ = run_search(small, 8, bounds=bounds)
    for proposal in proposals:
        assert 2 <= proposal.model_config["epochs"] <= 3
        assert proposal.model_config["batch_size"] == 32  # 64 and 128 exceed 50 samples
        assert in_space(proposal.params, small, bounds)


@pytest.mark.parametrize("facts, bounds, fragment", [
    (DatasetFacts(name="x", kind="image", input_shape=(30,), num_classes=2, num_samples=100), SearchBounds(), "needs input_shape (C, H, W)"),
    (DatasetFacts(name="x", kind="tabular", input_shape=(1, 8, 8), num_classes=2, num_samples=100), SearchBounds(), "needs input_shape (F,)"),
    (DatasetFacts(name="x", kind="text", input_shape=(30,), num_classes=2, num_samples=100), SearchBounds(), "text data needs input_shape (L,) and text facts with a vocab_size >= 2"),
    (DatasetFacts(name="x", kind="tabular", input_shape=(30,), num_classes=1, num_samples=100), SearchBounds(), "num_classes"),
    (CANCER, SearchBounds(min_epochs=9, max_epochs=3), "min_epochs <= max_epochs"),
])
def test_bad_facts_or_bounds(facts, bounds, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        propose(facts, [], seed=0, bounds=bounds)


# ---- candidates in flight, local moves, and where a proposal came from ----
TABLE = DatasetFacts(name="t", kind="tabular", input_shape=[6], num_classes=3, num_samples=500)


def test_pending_candidates_push_the_next_proposal_elsewhere():
    history = [(p.params, fake_score(p.params)) for p in [propose(TABLE, [], seed=3)]]
    for _ in range(6):
        found = propose(TABLE, history, seed=3)
        history.append((found.params, fake_score(found.params)))
    alone = propose(TABLE, history, seed=3)
    crowded = propose(TABLE, history, seed=3, pending=[alone.params] * 3)
    assert crowded.params != alone.params
    assert "in flight counted as poor" in crowded.reasoning and "TPE" in alone.reasoning
    assert propose(TABLE, [], seed=3).reasoning.startswith("the search's known-good default")
    assert "random search" in propose(TABLE, history, seed=3, sampler="random").reasoning


def test_the_tabular_space_searches_standardisation():
    assert "standardize" in propose(TABLE, [], seed=1).params
    found = propose(TABLE, [], seed=1)
    assert found.model_config["standardize"] is True  # the default keeps the trusted pipeline's scaling


def test_local_moves_follow_what_the_curves_said():
    base = propose(TABLE, [], seed=1).params  # the default, in the space's order
    longer = local_move(TABLE, base, hint="still_improving", seed=1)
    assert longer.params["epochs"] > base["epochs"] and "still improving" in longer.reasoning
    regular = local_move(TABLE, base, hint="overfitting", seed=1)
    assert regular.params["dropout"] > base["dropout"] and regular.params["use_weight_decay"]
    nearby = local_move(TABLE, base, hint=None, seed=1, label="candidate 3")
    assert nearby.params["lr"] != base["lr"] and nearby.reasoning.startswith("a local move from candidate 3")
    for moved in (longer, regular, nearby):
        assert in_space(moved.params, TABLE)


def test_a_long_history_is_windowed_to_its_best_and_latest_trials():
    first = propose(TABLE, [], seed=2)
    history = [({**first.params, "lr": 1e-4 * (1 + i % 50)}, i / 1000) for i in range(300)]
    found = propose(TABLE, history, seed=2)
    assert found.history_used == 200 and "the best 100 earlier ones and the latest 100 of 300" in found.reasoning
    assert propose(TABLE, history, seed=2).params == found.params  # still deterministic


def test_an_imbalanced_set_lets_the_search_choose_class_weights():
    rare = DatasetFacts(name="imbalanced", kind="tabular", input_shape=[20], num_classes=2, num_samples=5000,
                        class_counts=[4950, 50])
    assert "class_weights" not in propose(TABLE, [], seed=1).params  # counts unknown (an older record): balanced
    first = propose(rare, [], seed=1)
    assert first.model_config["class_weights"] is False  # the known-good default trains unweighted
    tried = {propose(rare, [(first.params, 0.5)] * k, seed=k).params["class_weights"] for k in range(1, 8)}
    assert tried == {False, True}
    weighted = to_model_config(rare, {**first.params, "class_weights": True})
    assert TrainingRecipe.from_model_config(weighted).class_weights is True
