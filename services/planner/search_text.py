"""The built-in search's space for text: token ids (B, L) through one of four families of
classifier, in the model_config format's sequence layers (shared/modelspec/seqlayers.py).

- ``bag``: a bag of embeddings (EmbeddingBag), order ignored: fast, a strong baseline for topic
  and sentiment;
- ``cnn``: Embedding, SeqConv1d blocks (kernel 3 or 5), max or mean pooled;
- ``bilstm``: Embedding, a bidirectional LSTM packed by the lengths, pooled;
- ``transformer``: Embedding with learned positions, Transformer encoder layers, pooled.

Like the image and table spaces every parameter is asked every time (search.py's docstring says
why); a family ignores the ones it has no use for. Sentence pairs ("[CLS] a [SEP] b [SEP]") get
segment embeddings, and their bag is an Embedding mean-pooled (EmbeddingBag has no segments).
Pure logic, no I/O.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from shared.messaging.messages import DatasetFacts

ARCHITECTURES = ("bag", "cnn", "bilstm", "transformer")
_CLASS_NAMES = {"bag": "SearchTextBag", "cnn": "SearchTextCNN", "bilstm": "SearchTextBiLSTM",
                "transformer": "SearchTextTransformer"}


def check_text(facts: DatasetFacts) -> None:
    if len(facts.input_shape) != 1 or facts.vocab_size < 2:
        raise ValueError(f"text data needs input_shape (L,) and text facts with a vocab_size >= 2, got "
                         f"{facts.input_shape} and vocab_size {facts.vocab_size}")


def text_space() -> dict[str, BaseDistribution]:
    """The model's part of the space (the recipe's part is search.py's, shared with every kind)."""
    return {
        "architecture": CategoricalDistribution(list(ARCHITECTURES)),
        "embedding_dim": CategoricalDistribution([32, 64, 128]),
        # conv channels, LSTM units per direction, or the Transformer's feed-forward width
        "hidden": CategoricalDistribution([32, 64, 128, 256]),
        "seq_layers": IntDistribution(1, 2),  # conv blocks, LSTM layers or encoder layers
        "kernel_size": CategoricalDistribution([3, 5]),
        "n_heads": CategoricalDistribution([2, 4]),  # divides every embedding_dim above
        "pooling": CategoricalDistribution(["mean", "max"]),
    }


def text_defaults() -> dict[str, Any]:
    """The first trial: a small text CNN, max pooled (the fastest family that reads word order)."""
    return {"architecture": "cnn", "embedding_dim": 64, "hidden": 64, "seq_layers": 1, "kernel_size": 3,
            "n_heads": 4, "pooling": "max"}


def text_layers(facts: DatasetFacts, p: dict[str, Any]) -> list[dict[str, Any]]:
    arch, dim, act = p["architecture"], p["embedding_dim"], p["activation"]
    pair = bool(facts.text and facts.text.pair)
    dropout = round(p["dropout"], 4)
    embedding: dict[str, Any] = {"type": "Embedding", "embedding_dim": dim,
                                 **({"segments": True} if pair else {})}
    layers: list[dict[str, Any]]
    if arch == "bag" and not pair:
        layers = [{"type": "EmbeddingBag", "embedding_dim": dim, "mode": p["pooling"]}]
    elif arch == "bag":
        layers = [embedding, {"type": "SeqPool", "mode": p["pooling"]}]
    elif arch == "cnn":
        layers = [embedding]
        for _ in range(p["seq_layers"]):
            layers += [{"type": "SeqConv1d", "out_channels": p["hidden"], "kernel_size": p["kernel_size"]},
                       {"type": act}]
        layers.append({"type": "SeqPool", "mode": p["pooling"]})
    elif arch == "bilstm":
        layers = [embedding, {"type": "LSTM", "hidden_size": p["hidden"], "num_layers": p["seq_layers"],
                              "bidirectional": True, "dropout": dropout if p["seq_layers"] > 1 else 0.0},
                  {"type": "SeqPool", "mode": p["pooling"]}]
    else:
        layers = [{**embedding, "positions": "learned"},
                  {"type": "TransformerEncoder", "nhead": p["n_heads"], "num_layers": p["seq_layers"],
                   "dim_feedforward": p["hidden"], "dropout": dropout, "activation": "gelu"},
                  {"type": "SeqPool", "mode": p["pooling"]}]
    head = [{"type": "Dropout", "p": dropout}] if dropout > 0 else []
    return layers + head + [{"type": "Linear", "out_features": facts.num_classes}]


def text_model_config(facts: DatasetFacts, p: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys of a text config: token ids in, nothing standardised."""
    return {"class_name": _CLASS_NAMES[p["architecture"]], "input_shape": list(facts.input_shape),
            "vocab_size": facts.vocab_size, "num_classes": facts.num_classes, "layers": text_layers(facts, p),
            "standardize": False}
