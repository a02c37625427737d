"""What the planning LLM may answer, as msgspec types: they decode its replies, and their JSON
schema is what each request asks the server to constrain decoding to (`response_format`), so a
small model cannot write a layer without its required arguments, an unknown layer type, or
"iterate" without a model_config. Keys a type does not name are errors a repair can act on.

The layer vocabulary is the search's and the text format's, with the common torch.nn extras; each
layer's keys are its constructor's (input sizes are inferred, so never named).

Numbers carry their bounds (an lr above 0, a kernel of at least 1): the decoder enforces them, so a
reply past one fails with the path and the bound for its repair. The schema also offers the usual
values of the settings small models get wrong (learning rates, weight decays, batch sizes, kernel
sizes, dropout) as an `enum`: a server that constrains decoding to the schema then writes one of
them, where SmolLM2-135M, free, wrote an lr of 0.0 (its digits cut short) and a kernel of 16 on
8x8 digits. Servers that constrain (llama.cpp's grammars, vLLM, Ollama) honour `enum`;
llama-cpp-python 0.3.36's grammars ignore minimum and maximum. The decoder accepts any value
within the bounds, so a model that is not constrained may still choose another."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

from shared.messaging.messages import Optimizer

U = msgspec.UnsetType
UNSET = msgspec.UNSET
Reasoning = Annotated[str, msgspec.Meta(max_length=1000)]  # a constrained decoder stops there
MAX_LAYERS = 48
MAX_BATCH_SIZE = 4096
MAX_WIDTH = 65_536  # features, channels, hidden sizes: the assembler's parameter cap binds first


def offered(kind: type, values: tuple[Any, ...], **bounds: Any) -> Any:
    """A number the decoder accepts within `bounds`, whose schema offers `values` (see above)."""
    return Annotated[kind, msgspec.Meta(**bounds, extra_json_schema={"enum": list(values)})]


def _size(one: Any) -> Any:
    """A layer's size argument: one number, or one per spatial dimension (height, width)."""
    return Union[one, Annotated[list[one], msgspec.Meta(min_length=2, max_length=2)]]


Width = Annotated[int, msgspec.Meta(ge=1, le=MAX_WIDTH)]
Count = Annotated[int, msgspec.Meta(ge=1, le=64)]  # layers of a stack, attention heads, a dilation
Share = Annotated[float, msgspec.Meta(ge=0, lt=1)]  # a probability, a momentum
Positive = Annotated[float, msgspec.Meta(gt=0, lt=1)]  # an epsilon
KernelSize = offered(int, (1, 3, 5, 7), ge=1, le=64)
Kernel = _size(KernelSize)
PoolKernel = _size(offered(int, (2, 3), ge=1, le=64))
Stride = _size(offered(int, (1, 2), ge=1, le=64))
Padding = _size(offered(int, (0, 1, 2, 3), ge=0, le=64))
Dilation = _size(Count)
DropoutP = offered(float, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), ge=0, lt=1)
LR = offered(float, (0.0001, 0.0003, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1), gt=0, le=1)
WeightDecay = offered(float, (0.0, 0.00001, 0.0001, 0.0005, 0.001, 0.01), ge=0, lt=1)
BatchSize = offered(int, (8, 16, 32, 64, 128, 256, 512), ge=1, le=MAX_BATCH_SIZE)
Epochs = Annotated[int, msgspec.Meta(ge=1, le=1000)]  # the run's limit is applied after (llm_config)


# A model config's layers, each a torch.nn layer (or one of the text format's) with its arguments.
class _Layer(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    pass


class Linear(_Layer, tag="Linear"):
    out_features: Width
    bias: bool | U = UNSET


class Conv2d(_Layer, tag="Conv2d"):
    out_channels: Width
    kernel_size: Kernel
    stride: Stride | U = UNSET
    padding: Padding | U = UNSET
    dilation: Dilation | U = UNSET
    groups: Width | U = UNSET
    bias: bool | U = UNSET


class MaxPool2d(_Layer, tag="MaxPool2d"):
    kernel_size: PoolKernel
    stride: Stride | U = UNSET
    padding: Padding | U = UNSET


class AvgPool2d(MaxPool2d, tag="AvgPool2d"):  # the same arguments (subclasses here share fields, not meaning)
    pass


class AdaptiveAvgPool2d(_Layer, tag="AdaptiveAvgPool2d"):
    output_size: _size(Width)


class AdaptiveMaxPool2d(AdaptiveAvgPool2d, tag="AdaptiveMaxPool2d"):
    pass


class BatchNorm1d(_Layer, tag="BatchNorm1d"):
    eps: Positive | U = UNSET
    momentum: Share | U = UNSET


class BatchNorm2d(BatchNorm1d, tag="BatchNorm2d"):
    pass


class LayerNorm(_Layer, tag="LayerNorm"):
    eps: Positive | U = UNSET


class Dropout(_Layer, tag="Dropout"):
    p: DropoutP | U = UNSET


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
    alpha: Annotated[float, msgspec.Meta(gt=0, le=10)] | U = UNSET


class LeakyReLU(_Layer, tag="LeakyReLU"):
    negative_slope: Share | U = UNSET


class Tanh(_Layer, tag="Tanh"):
    pass


class Sigmoid(_Layer, tag="Sigmoid"):
    pass


class Identity(_Layer, tag="Identity"):
    pass


# the text format's sequence layers (shared/modelspec/seqlayers.py)
class Embedding(_Layer, tag="Embedding"):
    embedding_dim: Width
    positions: Literal["learned", "sinusoidal"] | None | U = UNSET
    segments: bool | U = UNSET
    dropout: DropoutP | U = UNSET


class EmbeddingBag(_Layer, tag="EmbeddingBag"):
    embedding_dim: Width
    mode: Literal["mean", "sum", "max"] | U = UNSET


class SeqConv1d(_Layer, tag="SeqConv1d"):
    out_channels: Width
    kernel_size: KernelSize
    dilation: Count | U = UNSET


class LSTM(_Layer, tag="LSTM"):
    hidden_size: Width
    num_layers: Count | U = UNSET
    bidirectional: bool | U = UNSET
    dropout: DropoutP | U = UNSET


class GRU(LSTM, tag="GRU"):
    pass


class TransformerEncoder(_Layer, tag="TransformerEncoder"):
    nhead: Count
    num_layers: Count | U = UNSET
    dim_feedforward: Width | U = UNSET
    dropout: DropoutP | U = UNSET
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
        ("lr", Union[LR, U], UNSET), ("weight_decay", Union[WeightDecay, U], UNSET), ("epochs", Union[Epochs, U], UNSET),
        ("batch_size", Union[BatchSize, U], UNSET), ("standardize", Union[bool, U], UNSET),
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
