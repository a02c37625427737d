"""What the planning LLM may answer, as msgspec types: they decode its replies, and their JSON
schema is what each request asks the server to constrain decoding to (`response_format`), so a
small model cannot write a layer without its required arguments, an unknown layer type, or
"iterate" without a model_config. Keys a type does not name are errors a repair can act on.

The layer vocabulary is the search's and the text format's, with the common torch.nn extras; each
layer's keys are its constructor's (input sizes are inferred, so never named)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

from shared.messaging.messages import Optimizer

U = msgspec.UnsetType
UNSET = msgspec.UNSET
Size = Union[int, list[int]]
Reasoning = Annotated[str, msgspec.Meta(max_length=1000)]  # a constrained decoder stops there
MAX_LAYERS = 48


# A model config's layers, each a torch.nn layer (or one of the text format's) with its arguments.
class _Layer(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    pass


class Linear(_Layer, tag="Linear"):
    out_features: int
    bias: bool | U = UNSET


class Conv2d(_Layer, tag="Conv2d"):
    out_channels: int
    kernel_size: Size
    stride: Size | U = UNSET
    padding: Size | U = UNSET
    dilation: Size | U = UNSET
    groups: int | U = UNSET
    bias: bool | U = UNSET


class MaxPool2d(_Layer, tag="MaxPool2d"):
    kernel_size: Size
    stride: Size | U = UNSET
    padding: Size | U = UNSET


class AvgPool2d(MaxPool2d, tag="AvgPool2d"):  # the same arguments (subclasses here share fields, not meaning)
    pass


class AdaptiveAvgPool2d(_Layer, tag="AdaptiveAvgPool2d"):
    output_size: Size


class AdaptiveMaxPool2d(AdaptiveAvgPool2d, tag="AdaptiveMaxPool2d"):
    pass


class BatchNorm1d(_Layer, tag="BatchNorm1d"):
    eps: float | U = UNSET
    momentum: float | U = UNSET


class BatchNorm2d(BatchNorm1d, tag="BatchNorm2d"):
    pass


class LayerNorm(_Layer, tag="LayerNorm"):
    eps: float | U = UNSET


class Dropout(_Layer, tag="Dropout"):
    p: float | U = UNSET


class Dropout2d(Dropout, tag="Dropout2d"):
    pass


class Flatten(_Layer, tag="Flatten"):
    pass


class ReLU(_Layer, tag="ReLU"):
    pass


class GELU(_Layer, tag="GELU"):
    pass


class SiLU(_Layer, tag="SiLU"):
    pass


class ELU(_Layer, tag="ELU"):
    alpha: float | U = UNSET


class LeakyReLU(_Layer, tag="LeakyReLU"):
    negative_slope: float | U = UNSET


class Tanh(_Layer, tag="Tanh"):
    pass


class Sigmoid(_Layer, tag="Sigmoid"):
    pass


class Identity(_Layer, tag="Identity"):
    pass


# the text format's sequence layers (shared/modelspec/seqlayers.py)
class Embedding(_Layer, tag="Embedding"):
    embedding_dim: int
    positions: Literal["learned", "sinusoidal"] | None | U = UNSET
    segments: bool | U = UNSET
    dropout: float | U = UNSET


class EmbeddingBag(_Layer, tag="EmbeddingBag"):
    embedding_dim: int
    mode: Literal["mean", "sum", "max"] | U = UNSET


class SeqConv1d(_Layer, tag="SeqConv1d"):
    out_channels: int
    kernel_size: int
    dilation: int | U = UNSET


class LSTM(_Layer, tag="LSTM"):
    hidden_size: int
    num_layers: int | U = UNSET
    bidirectional: bool | U = UNSET
    dropout: float | U = UNSET


class GRU(LSTM, tag="GRU"):
    pass


class TransformerEncoder(_Layer, tag="TransformerEncoder"):
    nhead: int
    num_layers: int | U = UNSET
    dim_feedforward: int | U = UNSET
    dropout: float | U = UNSET
    activation: Literal["relu", "gelu"] | U = UNSET
    norm_first: bool | U = UNSET


class SeqPool(_Layer, tag="SeqPool"):
    mode: Literal["mean", "max", "sum", "first", "last"] | U = UNSET


LAYERS: tuple[type, ...] = (Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, BatchNorm1d,
                            BatchNorm2d, LayerNorm, Dropout, Dropout2d, Flatten, ReLU, GELU, SiLU, ELU, LeakyReLU, Tanh,
                            Sigmoid, Identity, Embedding, EmbeddingBag, SeqConv1d, LSTM, GRU, TransformerEncoder, SeqPool)
LAYER_TYPES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in LAYERS)
_ELEMENTWISE = {Linear, LayerNorm, Dropout, ReLU, GELU, SiLU, ELU, LeakyReLU, Tanh, Sigmoid, Identity}
# The layers that can build for each kind of data: a table's rows are vectors, an image's convolutions
# need its (C, H, W), token ids need the sequence layers first.
KIND_LAYERS: dict[str, tuple[type, ...]] = {
    "tabular": tuple(t for t in LAYERS if t in _ELEMENTWISE or t is BatchNorm1d),
    "image": tuple(t for t in LAYERS if t in _ELEMENTWISE or t in (Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
                                                                    AdaptiveMaxPool2d, BatchNorm1d, BatchNorm2d,
                                                                    Dropout2d, Flatten)),
    "text": tuple(t for t in LAYERS if t in _ELEMENTWISE or t in (Embedding, EmbeddingBag, SeqConv1d, LSTM, GRU,
                                                                   TransformerEncoder, SeqPool)),
}


def _config_type(name: str, layers: tuple[type, ...]) -> type:
    """A model config whose layers are of `layers`: its layers and the training settings chosen
    (the others take the defaults)."""
    return msgspec.defstruct(name, [
        ("layers", Annotated[list[Union[layers]], msgspec.Meta(min_length=1, max_length=MAX_LAYERS)]),
        ("class_name", Union[str, U], UNSET), ("optimizer", Union[Optimizer, U], UNSET),
        ("lr", Union[float, U], UNSET), ("weight_decay", Union[float, U], UNSET), ("epochs", Union[int, U], UNSET),
        ("batch_size", Union[int, U], UNSET), ("standardize", Union[bool, U], UNSET),
        ("class_weights", Union[bool, U], UNSET)], kw_only=True)


ProposedConfig = _config_type("ProposedConfig", LAYERS)  # any layer: a config of unknown kind


class PlanReply(msgspec.Struct, kw_only=True):
    """A proposal or a decision, as the planner acts on it (decoded as one of the replies below)."""

    action: Literal["iterate", "goal_achieved", "stop"]
    reasoning: str
    model_config: dict[str, Any] | None = None  # the completed config once checked


# One type per action: their schema (a union on "action") says that "iterate" needs a model_config
# and the others none.
class Stop(msgspec.Struct, kw_only=True, tag="stop", tag_field="action"):
    reasoning: Reasoning
    model_config: None = None


class GoalAchieved(msgspec.Struct, kw_only=True, tag="goal_achieved", tag_field="action"):
    reasoning: Reasoning
    model_config: None = None


def _iterate_type(kind: str) -> type:
    config = _config_type(f"{kind.capitalize()}Config", KIND_LAYERS[kind]) if kind in KIND_LAYERS else ProposedConfig
    return msgspec.defstruct("Iterate", [("reasoning", Reasoning), ("model_config", config)], kw_only=True,
                             tag="iterate", tag_field="action")


_ITERATE = {kind: _iterate_type(kind) for kind in (*KIND_LAYERS, "any")}
Iterate = _ITERATE["any"]


def reply_types(kind: str) -> tuple[type, Any]:
    """(the first proposal's type, a decision's) for a data set of `kind`: its layers only."""
    iterate = _ITERATE.get(kind, Iterate)
    return iterate, Union[iterate, Stop, GoalAchieved]


Decided = reply_types("any")[1]


def as_plan(reply: Any) -> PlanReply:
    """The planner's form of a reply: its model_config as a plain dict, without the keys left unset."""
    if isinstance(reply, PlanReply):
        return reply
    config = msgspec.to_builtins(reply.model_config) if reply.model_config is not None else None
    return PlanReply(action=type(reply).__struct_config__.tag, reasoning=reply.reasoning, model_config=config)
