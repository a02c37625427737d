"""Token-id configs: the sequence layers assemble on meta, the emitted module (our own trusted
output, exec'd) honours the padding mask, keeps sentence pairs' segments apart, and trains on
int64 ids through the real engine; bad configs get a message that says what to fix."""

import pytest
import torch

from shared.evaluation.trainloop import TrainSettings, train_model
from shared.modelspec.assemble import ConfigError, assemble
from shared.modelspec.seqlayers import SEQ_LAYERS, source_of

VOCAB, LENGTH = 50, 16

FAMILIES = {
    "bag": [{"type": "EmbeddingBag", "embedding_dim": 8, "mode": "mean"}, {"type": "Linear", "out_features": 2}],
    "bag_max": [{"type": "EmbeddingBag", "embedding_dim": 8, "mode": "max"}, {"type": "Linear", "out_features": 2}],
    "cnn": [{"type": "Embedding", "embedding_dim": 8}, {"type": "SeqConv1d", "out_channels": 6, "kernel_size": 3},
            {"type": "ReLU"}, {"type": "SeqPool", "mode": "max"}, {"type": "Linear", "out_features": 2}],
    "bilstm": [{"type": "Embedding", "embedding_dim": 8}, {"type": "LSTM", "hidden_size": 5, "bidirectional": True},
               {"type": "SeqPool", "mode": "mean"}, {"type": "Linear", "out_features": 2}],
    "gru_last": [{"type": "Embedding", "embedding_dim": 8}, {"type": "GRU", "hidden_size": 5, "num_layers": 2},
                 {"type": "SeqPool", "mode": "last"}, {"type": "Linear", "out_features": 2}],
    "transformer": [{"type": "Embedding", "embedding_dim": 8, "positions": "learned"},
                    {"type": "TransformerEncoder", "nhead": 2, "num_layers": 2, "dim_feedforward": 16},
                    {"type": "LayerNorm"}, {"type": "SeqPool", "mode": "first"}, {"type": "Linear", "out_features": 2}],
    "sinusoidal": [{"type": "Embedding", "embedding_dim": 8, "positions": "sinusoidal"},
                   {"type": "TransformerEncoder", "nhead": 4, "dim_feedforward": 16, "dropout": 0.0},
                   {"type": "SeqPool", "mode": "sum"}, {"type": "Linear", "out_features": 2}],
}


def text_config(layers, length=LENGTH, vocab=VOCAB, num_classes=2):
    return {"class_name": "TextNet", "input_shape": [length], "vocab_size": vocab, "num_classes": num_classes,
            "layers": layers}


def build(model):
    namespace: dict = {}
    exec(compile(model.source, "<assembled>", "exec"), namespace)
    torch.manual_seed(0)
    return namespace[model.class_name]()


def ids(batch, length, tokens, generator):
    """(batch, length) ids in [4, VOCAB) for the first `tokens` positions, padding (0) after."""
    out = torch.zeros(batch, length, dtype=torch.long)
    out[:, :tokens] = torch.randint(4, VOCAB, (batch, tokens), generator=generator)
    return out


def error_of(cfg) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        assemble(cfg)
    return info.value


@pytest.mark.parametrize("family", FAMILIES)
def test_family_assembles_runs_and_ignores_padding(family):
    model = assemble(text_config(FAMILIES[family]))
    assert model.output_shape == (2,)
    net = build(model).eval()
    assert sum(p.numel() for p in net.parameters()) > 0
    x = ids(3, LENGTH, 9, torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(x)
        shorter = net(x[:, :11])  # the same tokens with less padding after them
    assert full.shape == (3, 2) and torch.isfinite(full).all()
    torch.testing.assert_close(full, shorter, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["cnn", "bilstm", "transformer"])
def test_padding_is_masked_not_just_zero(family):
    """A pad position's vector is not zero once positions or a layer have touched it; had the mask
    been ignored, changing the content after the last token would change the output."""
    net = build(assemble(text_config(FAMILIES[family]))).eval()
    x = ids(2, LENGTH, 6, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(net(x), net(torch.where(x > 0, x, torch.full_like(x, 7))))
        row_of_padding = net(torch.zeros(1, LENGTH, dtype=torch.long))
    assert torch.isfinite(row_of_padding).all()


def test_shapes_parameters_and_inferred_arguments():
    model = assemble(text_config(FAMILIES["bilstm"]))
    assert model.layer_shapes == [(LENGTH, 8), (LENGTH, 10), (10,), (2,)]
    assert "Embedding(num_embeddings=50, embedding_dim=8)" in model.source
    assert "LSTM(input_size=8, hidden_size=5, bidirectional=True)" in model.source
    lstm = 2 * 4 * 5 * (8 + 5 + 2)  # two directions, four gates, input and hidden weights and two biases
    assert sum(p.numel() for p in build(model).parameters()) == VOCAB * 8 + lstm + 10 * 2 + 2
    tf = assemble(text_config(FAMILIES["transformer"]))
    assert f"positions='learned', max_length={LENGTH}" in tf.source
    assert "TransformerEncoder(d_model=8, nhead=2, num_layers=2, dim_feedforward=16)" in tf.source
    assert "nn.LayerNorm(normalized_shape=8)" in tf.source


def test_source_holds_only_the_layers_used():
    source = assemble(text_config(FAMILIES["cnn"])).source
    assert "class SeqConv1d" in source and "class SeqPool" in source and "def _masked_pool" in source
    assert "class LSTM" not in source and "class TransformerEncoder" not in source
    assert "import shared" not in source and "from shared" not in source
    assert source_of(["GRU", "LSTM"]).index("class _Recurrent") < source_of(["GRU", "LSTM"]).index("class GRU")


def test_sentence_pair_segments():
    """[CLS] a [SEP] b [SEP]: the first [SEP] closes segment 0, b and its [SEP] are segment 1."""
    cfg = text_config([{"type": "Embedding", "embedding_dim": 4, "segments": True}, {"type": "SeqPool"},
                       {"type": "Linear", "out_features": 2}])
    net = build(assemble(cfg))
    embedding = net.layers[0]
    pair = torch.tensor([[2, 5, 6, 3, 7, 8, 3, 0]])
    with torch.no_grad():
        added = embedding(pair) - embedding.embedding(pair)
    segment = embedding.segment.weight.detach()
    expected = segment[torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])]
    torch.testing.assert_close(added[0], expected)


def test_emitted_models_train_on_token_ids():
    """A task only the tokens decide (does token 5 occur?), trained by the engine on int64 ids."""
    generator = torch.Generator().manual_seed(0)
    x = ids(400, LENGTH, LENGTH, generator)
    lengths = torch.randint(3, LENGTH, (400,), generator=generator)
    x[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    y = (x == 5).any(1).long()
    x[y == 0] = torch.where(x[y == 0] == 5, 6, x[y == 0])
    x[:200][y[:200] == 0, 0] = 4  # some filler
    settings = TrainSettings(epochs=12, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0,
                             track_val_each_epoch=False)
    for family in ("bag_max", "bilstm", "transformer"):
        net = build(assemble(text_config(FAMILIES[family])))
        out = train_model(net, x[:300].numpy(), y[:300].numpy(), x[300:].numpy(), settings, torch.device("cpu"))
        assert out.failure is None
        assert out.curve[-1]["train_loss"] < out.curve[0]["train_loss"], family
        accuracy = float((out.val_probs.argmax(1) == y[300:].numpy()).mean())
        assert accuracy > 0.8, (family, accuracy)


# ---- errors that say what to fix ----

def test_embedding_on_float_input():
    cfg = {"class_name": "Net", "input_shape": [16], "num_classes": 2,
           "layers": [{"type": "Embedding", "embedding_dim": 8}, {"type": "Linear", "out_features": 2}]}
    msg = str(error_of(cfg))
    assert msg.startswith("layer 0 (Embedding): takes token ids (B, L) int64 but gets float input (B, 16)")
    assert "add \"vocab_size\"" in msg


def test_embedding_after_embedding():
    msg = str(error_of(text_config([{"type": "Embedding", "embedding_dim": 8}, {"type": "EmbeddingBag",
                                                                                "embedding_dim": 8}])))
    assert msg.startswith("layer 1 (EmbeddingBag): takes token ids") and "it must come first" in msg


def test_torch_layer_on_token_ids():
    msg = str(error_of(text_config([{"type": "Linear", "out_features": 2}])))
    assert msg.startswith("layer 0 (Linear): the input here is still token ids (B, 16) int64; start the "
                          "layers with Embedding")


def test_lstm_and_seqpool_without_sequence_axis():
    msg = str(error_of(text_config([{"type": "EmbeddingBag", "embedding_dim": 8},
                                    {"type": "LSTM", "hidden_size": 4}])))
    assert msg.startswith("layer 1 (LSTM): needs a sequence (B, L, D) but gets (B, 8), which has no sequence axis")
    msg = str(error_of(text_config([{"type": "Embedding", "embedding_dim": 8}, {"type": "SeqPool"},
                                    {"type": "SeqPool"}])))
    assert msg.startswith("layer 2 (SeqPool): needs a sequence (B, L, D) but gets (B, 8)")


def test_sequence_axis_changed_by_a_torch_layer():
    msg = str(error_of(text_config([{"type": "Embedding", "embedding_dim": 8},
                                    {"type": "Conv1d", "out_channels": 4, "kernel_size": 3},
                                    {"type": "SeqPool"}])))
    assert msg.startswith("layer 2 (SeqPool): gets (B, 4, 6), whose sequence axis no longer has the input's 16")
    assert "SeqConv1d instead of Conv1d" in msg


def test_sequence_layer_without_vocab_size():
    cfg = {"class_name": "Net", "input_shape": [16, 4], "layers": [{"type": "LSTM", "hidden_size": 4}]}
    assert "needs the padding mask of token ids: add \"vocab_size\"" in str(error_of(cfg))


def test_nhead_must_divide_d_model():
    msg = str(error_of(text_config([{"type": "Embedding", "embedding_dim": 10},
                                    {"type": "TransformerEncoder", "nhead": 4}])))
    assert msg.startswith("layer 1 (TransformerEncoder): bad argument value: nhead=4 does not divide d_model=10")
    assert "e.g. 1, 2" in msg


def test_bad_arguments_and_top_level_keys():
    assert "positions='absolute' is not one of null, 'learned', 'sinusoidal'" in str(
        error_of(text_config([{"type": "Embedding", "embedding_dim": 8, "positions": "absolute"}])))
    assert "mode='median' is not one of" in str(error_of(text_config([{"type": "EmbeddingBag", "embedding_dim": 8,
                                                                       "mode": "median"}])))
    msg = str(error_of(text_config([{"type": "LSTM", "hiden_size": 4}])))
    assert msg.startswith("layer 0 (LSTM): the input here is still token ids")
    msg = str(error_of(text_config([{"type": "Embedding", "embedding_dim": 4}, {"type": "LSTM", "hiden_size": 4}])))
    assert "'hiden_size' is not an argument, did you mean 'hidden_size'? (LSTM takes: input_size" in msg
    assert "num_embeddings=60 disagrees with vocab_size=50" in str(
        error_of(text_config([{"type": "Embedding", "embedding_dim": 4, "num_embeddings": 60}])))
    assert "input_shape must be [L]" in str(error_of({**text_config(FAMILIES["bag"]), "input_shape": [1, 8, 8]}))
    assert "vocab_size must be an int >= 2" in str(error_of({**text_config(FAMILIES["bag"]), "vocab_size": "8k"}))
    assert "not a keyword, 'torch', 'nn', 'math' or a layer's name" in str(
        error_of({**text_config(FAMILIES["bag"]), "class_name": "LSTM"}))
    assert "did you mean 'SeqPool'" in str(error_of(text_config([{"type": "SeqPol"}])))


def test_every_sequence_layer_is_covered():
    used = {layer["type"] for layers in FAMILIES.values() for layer in layers}
    assert set(SEQ_LAYERS) <= used
