"""The built-in search's text space: every sample, for any vocabulary and length, single texts and
sentence pairs, assembles into a model that runs on padded token ids."""

import random

import msgspec
import pytest
import torch

from services.planner.search import SearchBounds, default_params, local_move, propose, search_space, to_model_config
from services.planner.search_text import ARCHITECTURES
from shared.messaging.messages import DatasetFacts, TextFacts, TrainingRecipe
from shared.modelspec.assemble import assemble


def text_facts(vocab=2000, length=64, pair=False, num_classes=2):
    return DatasetFacts(name="hf:synthetic", kind="text", input_shape=[length], input_dtype="int64",
                        num_classes=num_classes, num_samples=3000,
                        text=TextFacts(tokenizer="wordpiece", vocab_size=vocab, max_length=length, pair=pair))


def runs_on_ids(config, facts, run=True):
    model = assemble(config)
    assert model.output_shape == (facts.num_classes,)
    if not run:  # checked on meta only
        return
    namespace: dict = {}
    exec(compile(model.source, "<assembled>", "exec"), namespace)
    net = namespace[model.class_name]().eval()
    length = facts.input_shape[0]
    ids = torch.randint(1, facts.vocab_size, (3, length))
    ids[1, length // 2:] = 0
    with torch.no_grad():
        out = net(ids)
    assert out.shape == (3, facts.num_classes) and torch.isfinite(out).all()


def test_default_is_a_small_text_cnn_that_runs():
    facts = text_facts()
    params = default_params(facts)
    assert set(params) == set(search_space(facts))
    config = to_model_config(facts, params)
    assert config["class_name"] == "SearchTextCNN" and config["vocab_size"] == 2000
    assert config["input_shape"] == [64] and config["standardize"] is False
    assert "batch_norm" not in params
    runs_on_ids(config, facts)
    TrainingRecipe.from_model_config(config)  # the recipe's keys beside the layers decode


@pytest.mark.parametrize("vocab, length, pair, classes", [(50, 8, False, 2), (30000, 256, False, 4),
                                                           (1000, 40, True, 3), (8, 1, False, 2)])
def test_many_samples_assemble_for_any_vocab_and_length(vocab, length, pair, classes):
    facts = text_facts(vocab, length, pair, classes)
    space = search_space(facts)
    rng = random.Random(vocab + length)
    seen = set()
    for i in range(40):
        params = {name: (rng.choice(d.choices) if hasattr(d, "choices") else
                         (rng.randint(d.low, d.high) if isinstance(d.low, int) and not d.log else
                          rng.uniform(d.low, d.high))) for name, d in space.items()}
        seen.add(params["architecture"])
        config = to_model_config(facts, params)
        runs_on_ids(config, facts, run=i % 4 == 0)  # a real forward of every 4th: big vocabularies are slow on 2 cores
        types = [layer["type"] for layer in config["layers"]]
        if pair:  # segments told apart; no EmbeddingBag, which has none
            assert config["layers"][0].get("segments") is True and "EmbeddingBag" not in types
    assert seen == set(ARCHITECTURES)


def test_propose_and_local_moves_stay_valid():
    facts = text_facts(pair=True)
    history = []
    for i in range(7):
        proposal = propose(facts, history, seed=3)
        runs_on_ids(proposal.model_config, facts)
        history.append((proposal.params, 0.5 + 0.01 * i))
    moved = local_move(facts, history[-1][0], hint="overfitting", seed=1)
    runs_on_ids(moved.model_config, facts)
    assert msgspec.json.decode(msgspec.json.encode(moved.params)) == moved.params


def test_text_space_needs_text_facts():
    facts = DatasetFacts(name="x", kind="text", input_shape=[30], num_classes=2, num_samples=100)
    with pytest.raises(ValueError, match="text data needs input_shape"):
        search_space(facts, SearchBounds())
