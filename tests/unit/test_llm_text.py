"""The LLMs know a text data set: the planning context and system prompt describe token ids and
the sequence layers (whose example config builds), and a code request carries the layers' source."""

import json
import math
import re

import msgspec
import torch

from services.assembler.codegen import input_notes
from services.planner.llm_plan import check_reply, complete_config, config_problem, plan_context, planning_system
from services.planner.reply_types import reply_types
from shared.messaging.messages import DatasetFacts, Goal, TextFacts
from shared.modelspec.assemble import assemble

TEXT = DatasetFacts(name="hf:glue/qnli", kind="text", input_shape=[128], input_dtype="int64", num_classes=2,
                    num_samples=4000, text=TextFacts(tokenizer="wordpiece trained on each seed's training split",
                                                     vocab_size=8000, max_length=128, pair=True, mean_length=41.2,
                                                     median_length=37.0, p95_length=90.0, longest=310,
                                                     truncated_share=0.021))
IMAGES = DatasetFacts(name="digits", kind="image", input_shape=[1, 8, 8], num_classes=10, num_samples=1437)


def test_context_describes_token_ids_lengths_and_pairs():
    context = plan_context(Goal(run_id="r", goal="qnli", dataset="hf:glue/qnli"), TEXT, 3200, [], None, 10, 5)
    assert "Data set: hf:glue/qnli (text), input shape [128]" in context
    assert "token ids (batch, 128) int64 from a vocabulary of 8,000 (wordpiece trained" in context
    assert "mean 41, median 37, 95th percentile 90, longest 310; 2% cut to 128" in context
    assert "sentence pair" in context and "\"segments\": true" in context
    assert "token ids" not in plan_context(Goal(run_id="r", goal="d"), IMAGES, 1000, [], None, 10, 5)


def test_system_prompt_for_text_names_the_sequence_layers_and_its_example_builds():
    system = planning_system(TEXT)
    for name in ("Embedding", "EmbeddingBag", "SeqConv1d", "LSTM", "GRU", "TransformerEncoder", "SeqPool"):
        assert f'"type": "{name}"' in system or f'"{name}"' in system
    assert "SeqConv1d" not in planning_system(IMAGES)
    example = json.loads(re.search(r'^\{"action": "iterate".*\}$', system, re.M).group(0))
    config = complete_config(example["model_config"], TEXT, 10)
    assert config["vocab_size"] == 8000 and config["input_shape"] == [128]
    assert config_problem(config, 10) is None


def test_each_system_prompt_has_one_example_reply_that_passes_the_checks():
    """The one example a small model copies from must itself be a usable reply, for every kind of data."""
    tabular = DatasetFacts(name="wine", kind="tabular", input_shape=[13], num_classes=3, num_samples=178)
    for facts in (TEXT, IMAGES, tabular):
        system = planning_system(facts, max_epochs=6)
        [line] = [line for line in system.splitlines() if line.startswith("{")]
        reply = msgspec.json.decode(line, type=reply_types(facts.kind)[0])
        assert check_reply(reply, facts, max_epochs=6, first=True) is None
        assert reply.model_config.epochs <= 6 and f"out_features {facts.num_classes}" in system


def test_the_data_fixes_vocab_size():
    layers = [{"type": "EmbeddingBag", "embedding_dim": 8}, {"type": "Linear", "out_features": 2}]
    config = complete_config({"class_name": "Bag", "vocab_size": 5, "layers": layers}, TEXT, 10)
    assert config["vocab_size"] == 8000
    assert "vocab_size" not in complete_config({"class_name": "M", "vocab_size": 5, "layers": []}, IMAGES, 10)


def test_code_request_for_text_carries_the_layers_it_uses():
    config = complete_config({"class_name": "Rnn", "layers": [
        {"type": "Embedding", "embedding_dim": 16}, {"type": "GRU", "hidden_size": 8},
        {"type": "SeqPool"}, {"type": "Linear", "out_features": 2}]}, TEXT, 10)
    note, reference = input_notes(config)
    assert "int64 token ids in [0, 8000)" in note and "x != 0" in note
    assert "class GRU(_Recurrent)" in reference and "class _Recurrent" in reference
    assert "class TransformerEncoder" not in reference
    namespace = {"math": math, "torch": torch, "nn": torch.nn}
    exec(reference.split("```python\n")[1].split("```")[0], namespace)  # our own layers' source: it defines them
    assert issubclass(namespace["GRU"], torch.nn.Module)
    assert input_notes({"input_shape": [1, 8, 8], "layers": []}) == ("", "")
    assert assemble(config).class_name == "Rnn"
