"""The sequence layers of the model_config format: token ids in, the padding mask honoured.

A text data set reaches a model as int64 token ids (B, L), padded with id 0, so the mask is
``ids != 0``. torch's own modules either return tuples (LSTM, GRU), need the mask as an argument
(TransformerEncoder) or pool over padding (mean, max): each is wrapped here in one small layer with
arguments close to torch's, so a config (maybe an LLM's) names a layer instead of writing code.

A layer whose class says ``takes_mask = True`` is called as ``layer(x, mask)`` with the mask (B, L),
True at tokens; the others as ``layer(x)``. Sequences travel as (B, L, D), batch first.

This module imports torch only: the assembler runs these classes on the meta device to check a
config, and copies their source verbatim (``source_of``) into the generated module, since the
sandbox's container has no ``shared`` library.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn


def _masked_pool(x, mask, mode):
    """(B, L, D) and (B, L) -> (B, D), padding left out; a row of only padding pools to zeros."""
    keep = mask.unsqueeze(-1)  # (B, L, 1)
    if mode == "mean":
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1)
    if mode == "sum":
        return (x * keep).sum(1)
    if mode == "max":
        pooled = x.masked_fill(~keep, float("-inf")).amax(1)
        return torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
    if mode == "first":
        return x[:, 0]
    if mode == "last":  # the last token before the padding
        last = (mask.long().sum(1) - 1).clamp(min=0)  # (B,)
        return x[torch.arange(x.shape[0], device=x.device), last]
    raise ValueError(f"mode={mode!r} is not one of 'mean', 'max', 'sum', 'first', 'last'")


class Embedding(nn.Module):
    """Token ids (B, L) -> vectors (B, L, embedding_dim), with optional positions and segments.

    positions: None, "learned" (one vector per position up to max_length) or "sinusoidal" (fixed).
    segments: a learned vector per segment of a sentence pair "[CLS] a [SEP] b [SEP]" (the first
    [SEP], id sep_id, closes segment 0)."""

    takes_mask = False

    def __init__(self, num_embeddings, embedding_dim, padding_idx=0, positions=None, max_length=512,
                 segments=False, sep_id=3, dropout=0.0):
        super().__init__()
        if positions not in (None, "learned", "sinusoidal"):
            raise ValueError(f"positions={positions!r} is not one of null, 'learned', 'sinusoidal'")
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.positions, self.sep_id = positions, sep_id
        self.position = nn.Embedding(max_length, embedding_dim) if positions == "learned" else None
        self.segment = nn.Embedding(2, embedding_dim) if segments else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids):
        x = self.embedding(ids)  # (B, L, D)
        length, dim = ids.shape[1], x.shape[-1]
        if self.position is not None:
            x = x + self.position(torch.arange(length, device=ids.device))
        elif self.positions == "sinusoidal":
            pos = torch.arange(length, device=ids.device, dtype=torch.float32).unsqueeze(1)  # (L, 1)
            freq = torch.exp(torch.arange(0, dim, 2, device=ids.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
            table = torch.zeros(length, dim, device=ids.device)
            table[:, 0::2] = torch.sin(pos * freq)
            table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
            x = x + table.to(x.dtype)
        if self.segment is not None:
            sep = (ids == self.sep_id).long()
            x = x + self.segment((torch.cumsum(sep, 1) - sep).clamp(max=1))
        return self.dropout(x)


class EmbeddingBag(nn.Module):
    """Token ids (B, L) -> one vector per sample (B, embedding_dim): the tokens' embeddings pooled
    (mode "mean", "sum" or "max"), padding left out. A bag of words: order is ignored."""

    takes_mask = True

    def __init__(self, num_embeddings, embedding_dim, mode="mean", padding_idx=0):
        super().__init__()
        if mode not in ("mean", "sum", "max"):
            raise ValueError(f"mode={mode!r} is not one of 'mean', 'sum', 'max'")
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.mode = mode

    def forward(self, ids, mask):
        return _masked_pool(self.embedding(ids), mask, self.mode)


class SeqConv1d(nn.Module):
    """A 1-D convolution along the sequence: (B, L, in_channels) -> (B, L, out_channels), the length
    kept ("same" padding, stride 1) so the mask still lines up; padded positions are zeroed first,
    so a token's output does not depend on how much padding follows."""

    takes_mask = True

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, groups=1, bias=True):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding="same", dilation=dilation,
                              groups=groups, bias=bias)

    def forward(self, x, mask):
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class _Recurrent(nn.Module):
    """An LSTM or GRU over (B, L, input_size) -> its output sequence (B, L, hidden_size * directions).
    The padded batch is packed by the mask's lengths, so the recurrence stops at each sample's last
    token (and a bidirectional one starts there backwards); padded positions come out as zeros."""

    takes_mask = True
    rnn_class = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, dropout=0.0, bidirectional=False):
        super().__init__()
        self.rnn = self.rnn_class(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                                  dropout=dropout, bidirectional=bidirectional)

    def forward(self, x, mask):
        if x.is_meta:  # a shape check: on meta the recurrence runs step by step in Python (seconds
            # for a long sequence) and packing needs the lengths on the CPU, so the shape is written out
            directions = 2 if self.rnn.bidirectional else 1
            return x.new_empty(x.shape[0], x.shape[1], self.rnn.hidden_size * directions)
        lengths = mask.long().sum(1).clamp(min=1).cpu()  # a row of only padding runs one step
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out = self.rnn(packed)[0]
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


class LSTM(_Recurrent):
    rnn_class = nn.LSTM


class GRU(_Recurrent):
    rnn_class = nn.GRU


class TransformerEncoder(nn.Module):
    """num_layers Transformer encoder layers over (B, L, d_model) -> (B, L, d_model), attention kept
    off the padding (src_key_padding_mask). Positions come from the Embedding before it."""

    takes_mask = True

    def __init__(self, d_model, nhead, num_layers=1, dim_feedforward=None, dropout=0.1, activation="relu",
                 norm_first=False):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"nhead={nhead} does not divide d_model={d_model}; choose an nhead that does "
                             f"(e.g. {', '.join(str(h) for h in (1, 2, 4, 8) if d_model % h == 0)})")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation={activation!r} is not 'relu' or 'gelu'")
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward or 4 * d_model, dropout,
                                           activation, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x, mask):
        # a sample of only padding attends to all of it, instead of a softmax over nothing (NaN)
        padding = ~mask & mask.any(1, keepdim=True)
        return self.encoder(x, src_key_padding_mask=padding)


class SeqPool(nn.Module):
    """(B, L, D) -> (B, D) over the tokens only: mode "mean", "max", "sum", "first" (the [CLS]
    position) or "last" (each sample's last token before its padding)."""

    takes_mask = True

    def __init__(self, mode="mean"):
        super().__init__()
        if mode not in ("mean", "max", "sum", "first", "last"):
            raise ValueError(f"mode={mode!r} is not one of 'mean', 'max', 'sum', 'first', 'last'")
        self.mode = mode

    def forward(self, x, mask):
        return _masked_pool(x, mask, self.mode)


# ---- what the assembler reads ----
SEQ_LAYERS = {cls.__name__: cls for cls in (Embedding, EmbeddingBag, SeqConv1d, LSTM, GRU, TransformerEncoder, SeqPool)}
# what each layer's input must be: "ids" (B, L) int64, or "seq" (B, L, D) float
EXPECTS = {"Embedding": "ids", "EmbeddingBag": "ids", "SeqConv1d": "seq", "LSTM": "seq", "GRU": "seq",
           "TransformerEncoder": "seq", "SeqPool": "seq"}
# what a layer's source needs beside its own, in the order it must come
_NEEDS = {"EmbeddingBag": ["_masked_pool"], "SeqPool": ["_masked_pool"], "LSTM": ["_Recurrent"],
          "GRU": ["_Recurrent"]}


def source_of(names) -> str:
    """The source of the named layers and what they need, each once, in dependency order: the
    block the assembler pastes into a generated module (which imports math, torch and nn)."""
    wanted: list[str] = []
    for name in names:
        for part in [*_NEEDS.get(name, []), name]:
            if part not in wanted:
                wanted.append(part)
    namespace = globals()
    return "\n\n\n".join(inspect.getsource(namespace[part]).strip() for part in wanted)
