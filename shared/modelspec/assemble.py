"""Turn a ``model_config`` (seed format) into the source of an ``nn.Module``.

Pure logic, no I/O. The config comes from a planner (maybe an LLM), so it is treated as
hostile: every layer is built and run on torch's ``meta`` device, which checks shapes and
counts parameters without allocating memory, whatever sizes the config asks for.

Seed format::

    {"class_name": "DigitsCNN", "input_shape": [1, 8, 8], "num_classes": 10,
     "layers": [{"type": "Conv2d", "out_channels": 16, "kernel_size": 3}, {"type": "ReLU"},
                {"type": "Flatten"}, {"type": "Linear", "out_features": 10}],
     "optimizer": "adam", "lr": 0.001, "epochs": 10, "batch_size": 64}

``type`` names a ``torch.nn`` class, the other keys of a layer are keyword arguments of its
constructor. Training hyperparameters beside ``layers`` are ignored here, but for ``standardize``
(true or false: whether the trusted data pipeline scales the inputs by the training split's mean
and std) and ``class_weights`` (true or false: whether the loss weighs classes by their counts),
whose types are checked here with the rest of a config, so that a proposal with a bad one is
answered before ``TrainingRecipe.from_model_config`` meets it.

Text: ``"vocab_size": 8000`` with ``"input_shape": [L]`` says the input is token ids (B, L) int64,
padded with id 0. The layers then start with ``Embedding`` or ``EmbeddingBag`` and may use the
sequence layers of ``seqlayers`` (``SeqConv1d``, ``LSTM``, ``GRU``, ``TransformerEncoder``,
``SeqPool``), which take the padding mask the generated forward builds from the ids::

    {"class_name": "TextCNN", "input_shape": [128], "vocab_size": 8000, "num_classes": 2,
     "layers": [{"type": "Embedding", "embedding_dim": 64},
                {"type": "SeqConv1d", "out_channels": 64, "kernel_size": 3}, {"type": "ReLU"},
                {"type": "SeqPool", "mode": "max"}, {"type": "Linear", "out_features": 2}]}
"""

from __future__ import annotations

import difflib
import inspect
import keyword
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.modelspec.common import ConfigError, fmt_shape
from shared.modelspec.seqlayers import EXPECTS, SEQ_LAYERS
from shared.modelspec.textspec import check_input, infer_token_kwargs, render_text

MAX_LAYERS = 200
DEFAULT_MAX_PARAMS = 200_000_000
_MAX_LIST_LEN = 16  # longest list argument (kernel sizes, Unflatten sizes, ...)
_MAX_LIST_DEPTH = 2
_MAX_STR_LEN = 64
_PROBE_BATCH = 2  # BatchNorm refuses a batch of 1 in training mode
_FORBIDDEN_KEYS = frozenset({"device", "dtype"})

# ---- the allow-list ----
# Excluded by name, each with the reason a config cannot use it as one layer of a Sequential.
_EXCLUDED = {
    "Module": "abstract base", "Container": "container", "Sequential": "container",
    "ModuleList": "container", "ModuleDict": "container", "ParameterList": "container",
    "ParameterDict": "container", "DataParallel": "wraps a module",
    "MultiheadAttention": "returns a tuple", "Bilinear": "takes two inputs",
    "RNNBase": "returns a tuple", "RNNCellBase": "returns a tuple",
    "CosineSimilarity": "takes two inputs", "PairwiseDistance": "takes two inputs",
    "AdaptiveLogSoftmaxWithLoss": "needs targets", "SyncBatchNorm": "needs a process group",
    "Embedding": "needs integer input", "EmbeddingBag": "needs integer input",
}
_EXCLUDED_PREFIXES = ("_", "Lazy", "Transformer", "RNN", "LSTM", "GRU", "MaxUnpool")


def _allowed_layers() -> dict[str, type[nn.Module]]:
    out = {}
    for name in sorted(dir(nn)):
        cls = getattr(nn, name)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            continue
        if name in _EXCLUDED or name.startswith(_EXCLUDED_PREFIXES):
            continue
        if name.endswith("Loss") or name == "NLLLoss2d":  # losses take (input, target)
            continue
        out[name] = cls
    return out


ALLOWED_LAYERS: dict[str, type[nn.Module]] = _allowed_layers()

# Constructor arguments that follow from the input, per layer type: name -> which input dim.
_CONV = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
_NORM = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
         "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")
_INFERRED: dict[str, tuple[str, int]] = {
    **{t: ("in_channels", 1) for t in _CONV},
    **{t: ("num_features", 1) for t in _NORM},
    "GroupNorm": ("num_channels", 1),
    "Linear": ("in_features", -1),
    "LayerNorm": ("normalized_shape", -1),
    "RMSNorm": ("normalized_shape", -1),
    "SeqConv1d": ("in_channels", -1),
    "LSTM": ("input_size", -1),
    "GRU": ("input_size", -1),
    "TransformerEncoder": ("d_model", -1),
}


@dataclass(frozen=True)
class AssembledModel:
    class_name: str
    source: str  # a complete Python module defining `class_name`
    output_shape: tuple[int, ...]  # without the batch dim
    layer_shapes: list[tuple[int, ...]]  # output of each layer, without the batch dim


# ---- validation of plain values ----

def _check_value(value: Any, path: str, depth: int = 0) -> Any:
    """Return ``value`` with lists turned into tuples, or raise ValueError naming ``path``."""
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and len(value) > _MAX_STR_LEN:
            raise ValueError(f"{path}: strings are limited to {_MAX_STR_LEN} characters")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value!r} is not allowed; use a finite number")
        return value
    if isinstance(value, (list, tuple)):
        if depth >= _MAX_LIST_DEPTH or len(value) > _MAX_LIST_LEN:
            raise ValueError(f"{path}: lists may hold at most {_MAX_LIST_LEN} items and nest "
                             f"{_MAX_LIST_DEPTH} deep")
        return tuple(_check_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
    raise ValueError(f"{path}: {type(value).__name__} values are not allowed; use a number, "
                     "string, bool, null or a list of them")


def _check_top(config: Any) -> tuple[str, tuple[int, ...], int | None, int | None, list]:
    if not isinstance(config, dict):
        raise ConfigError(f"model_config must be an object, got {type(config).__name__}")
    name = config.get("class_name")
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name in ("torch", "nn", "math", *SEQ_LAYERS, "_Recurrent", "_masked_pool"):
        raise ConfigError(f"class_name must be a Python identifier such as 'DigitsCNN' "
                          f"(not a keyword, 'torch', 'nn', 'math' or a layer's name), got {name!r}")
    shape = config.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and 1 <= len(shape) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ConfigError("input_shape must be a list of 1 to 3 positive ints without the batch "
                          f"dim, e.g. [1, 8, 8] or [30], got {shape!r}")
    vocab_size = config.get("vocab_size")
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ConfigError("vocab_size must be an int >= 2 (token ids are in [0, vocab_size), 0 the padding) "
                              f"or absent for float inputs, got {vocab_size!r}")
        if len(shape) != 1:
            raise ConfigError(f"with vocab_size the input is token ids: input_shape must be [L] (the "
                              f"sequence length, e.g. [128]), got {shape!r}")
    num_classes = config.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"num_classes must be a positive int or absent, got {num_classes!r}")
    standardize = config.get("standardize", True)
    if not isinstance(standardize, bool):
        raise ConfigError("standardize must be true (scale the inputs by the training split's mean and std) or "
                          f"false (train on the raw values), got {standardize!r}")
    class_weights = config.get("class_weights", False)
    if not isinstance(class_weights, bool):
        raise ConfigError("class_weights must be true (the loss weighs each class by n_samples / (n_classes * its "
                          f"count) in the training split) or false (unweighted), got {class_weights!r}")
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("layers must be a non-empty list of objects like "
                          "{\"type\": \"Linear\", \"out_features\": 10}")
    if len(layers) > MAX_LAYERS:
        raise ConfigError(f"{len(layers)} layers is more than the limit of {MAX_LAYERS}")
    return name, tuple(shape), num_classes, vocab_size, layers


def _check_layer(i: int, spec: Any) -> tuple[str, type[nn.Module], dict[str, Any]]:
    if not isinstance(spec, dict):
        raise ConfigError(f"must be an object like {{\"type\": \"ReLU\"}}, "
                          f"got {type(spec).__name__}", i)
    ltype = spec.get("type")
    if not isinstance(ltype, str):
        raise ConfigError(f"'type' must be the name of a torch.nn layer, got {ltype!r}", i)
    if ltype not in ALLOWED_LAYERS and ltype not in SEQ_LAYERS:
        hint = difflib.get_close_matches(ltype, [*ALLOWED_LAYERS, *SEQ_LAYERS], n=3)
        tail = f"; did you mean {' or '.join(map(repr, hint))}?" if hint else \
            "; use a torch.nn layer class such as 'Conv2d', 'ReLU', 'Flatten' or 'Linear'"
        raise ConfigError(f"unknown layer type {ltype!r}{tail}", i)
    kwargs = {}
    for key, value in spec.items():
        if key == "type":
            continue
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"argument name {key!r} is not a Python identifier", i, ltype)
        if key in _FORBIDDEN_KEYS or key.startswith("_"):
            raise ConfigError(f"argument {key!r} is not allowed; remove it (the evaluator "
                              "chooses device and dtype)", i, ltype)
        try:
            kwargs[key] = _check_value(value, key)
        except ValueError as e:
            raise ConfigError(str(e), i, ltype) from None
    return ltype, SEQ_LAYERS.get(ltype) or ALLOWED_LAYERS[ltype], kwargs


def _torch_message(e: BaseException) -> str:
    # torch appends C++ stack frames to some messages; the first line says what matters.
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _signature(cls: type[nn.Module]) -> inspect.Signature:
    return inspect.signature(cls.__init__)


def _bad_args(i: int, ltype: str, cls: type[nn.Module], e: TypeError, given: dict) -> ConfigError:
    params = [p for p in _signature(cls).parameters if p not in ("self", *_FORBIDDEN_KEYS)]
    unknown = [k for k in given if k not in params]
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, params, n=1)
        hints.append(f"{k!r} is not an argument" + (f", did you mean {close[0]!r}?" if close else ""))
    detail = "; ".join(hints) if hints else _torch_message(e)
    prefix = "" if ltype in SEQ_LAYERS else "nn."
    return ConfigError(f"{detail} ({prefix}{ltype} takes: {', '.join(params)})", i, ltype)


# ---- shape inference ----

def _infer_kwargs(i: int, ltype: str, kwargs: dict, in_shape: tuple[int, ...], vocab_size: int | None) -> dict:
    """Fill in the argument that follows from the input (B, *in_shape), or check a given one."""
    if EXPECTS.get(ltype) == "ids" and vocab_size:
        return infer_token_kwargs(i, ltype, kwargs, in_shape, vocab_size)
    if ltype not in _INFERRED:
        return kwargs
    name, dim = _INFERRED[ltype]
    full = (_PROBE_BATCH, *in_shape)
    if dim >= len(full) or len(full) < 2:
        raise ConfigError(f"input {fmt_shape(in_shape)} has no dim {dim} to take {name} from; "
                          "check the layers before this one", i, ltype)
    inferred = full[dim]
    given = kwargs.get(name)
    if given is None:
        return {name: inferred, **kwargs}
    if name == "normalized_shape":  # may also cover trailing dims: LayerNorm([C, H, W])
        given_t = given if isinstance(given, tuple) else (given,)
        ok = full[len(full) - len(given_t):] == given_t and len(given_t) < len(full)
    else:
        ok = given == inferred
    if not ok:
        raise ConfigError(f"{name}={given!r} disagrees with the input {fmt_shape(in_shape)}, "
                          f"which gives {name}={inferred}; drop {name} to have it inferred", i,
                          ltype)
    return kwargs


def _ordered(cls: type[nn.Module], kwargs: dict) -> dict:
    """Arguments in the constructor's order, so the emitted source reads like the torch docs."""
    order = {p: n for n, p in enumerate(_signature(cls).parameters)}
    return dict(sorted(kwargs.items(), key=lambda kv: order.get(kv[0], len(order))))


def _shape_error(i: int, ltype: str, kwargs: dict, in_shape: tuple[int, ...],
                 e: Exception) -> ConfigError:
    msg = _torch_message(e)
    small = "too small" in msg or "Kernel size can't be greater" in msg
    if small and "kernel_size" in kwargs:
        return ConfigError(f"input {fmt_shape(in_shape)} is too small for "
                           f"kernel_size={kwargs['kernel_size']!r} (torch: {msg}); use a smaller "
                           "kernel_size, add padding, or remove a pooling layer before it", i,
                           ltype)
    return ConfigError(f"input {fmt_shape(in_shape)} does not fit this layer (torch: {msg}); "
                       "check its arguments and the layers before it", i, ltype)


def _probe(config: Any, max_params: int) -> tuple[str, tuple[int, ...], list[tuple], list, bool]:
    """Validate and run the config on meta; return (class_name, input_shape, layers, shapes, text).

    ``layers`` holds (type, ordered kwargs including inferred ones) per layer.
    """
    name, in_shape, num_classes, vocab_size, specs = _check_top(config)
    layers: list[tuple[str, dict]] = []
    shapes: list[tuple[int, ...]] = []
    shape = in_shape
    total_params = 0
    # The `meta` device makes every parameter and activation a shape without storage.
    with torch.device("meta"), torch.no_grad():
        if vocab_size:  # token ids and the mask the generated forward builds from them
            x = torch.zeros(_PROBE_BATCH, *in_shape, dtype=torch.long)
            mask = x != 0
        else:
            x, mask = torch.empty(_PROBE_BATCH, *in_shape), None
        seq_len = in_shape[0] if vocab_size else None
        for i, spec in enumerate(specs):
            ltype, cls, kwargs = _check_layer(i, spec)
            check_input(i, ltype, x, seq_len)
            kwargs = _ordered(cls, _infer_kwargs(i, ltype, kwargs, shape, vocab_size))
            try:
                module = cls(**kwargs)
            except TypeError as e:
                if "__init__()" in str(e):  # names or count of arguments, not their values
                    raise _bad_args(i, ltype, cls, e, kwargs) from None
                raise ConfigError(f"bad argument value: {_torch_message(e)}", i, ltype) from None
            except Exception as e:  # torch raises RuntimeError/ValueError/... for bad values
                raise ConfigError(f"bad argument value: {_torch_message(e)}", i, ltype) from None
            total_params += sum(p.numel() for p in module.parameters())
            if total_params > max_params:
                raise ConfigError(f"the model reaches {total_params:,} parameters here, over the "
                                  f"limit of {max_params:,}; use fewer or smaller layers", i, ltype)
            try:
                y = module(x, mask) if getattr(module, "takes_mask", False) else module(x)
            except Exception as e:
                raise _shape_error(i, ltype, kwargs, shape, e) from None
            if not isinstance(y, torch.Tensor) or y.dim() < 2 or y.shape[0] != _PROBE_BATCH:
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ConfigError(f"must return one tensor (B, ...) with the batch dim first and "
                                  f"at least one more dim, got {got} for batch {_PROBE_BATCH}",
                                  i, ltype)
            x, shape = y, tuple(y.shape[1:])
            layers.append((ltype, kwargs))
            shapes.append(shape)
    if num_classes is not None and shape != (num_classes,):
        raise ConfigError(f"the model outputs {fmt_shape(shape)} but num_classes={num_classes} "
                          f"needs (B, {num_classes}); end with Flatten and "
                          f"Linear(out_features={num_classes})")
    return name, in_shape, layers, shapes, vocab_size is not None


def infer_shapes(config: dict, *, max_params: int = DEFAULT_MAX_PARAMS) -> list[tuple[int, ...]]:
    """The output shape of each layer, without the batch dim. Raises ConfigError."""
    return _probe(config, max_params)[3]


# ---- source emission ----

def _render(name: str, in_shape: tuple[int, ...], layers: list, shapes: list) -> str:
    lines = [
        '"""Generated by the pytorch-researcher assembler from a model_config."""',
        "",
        "import torch",
        "from torch import nn",
        "",
        "",
        f"class {name}(nn.Module):",
        f'    """Input {fmt_shape(in_shape)} -> output {fmt_shape(shapes[-1])}."""',
        "",
        "    def __init__(self):",
        "        super().__init__()",
        "        self.layers = nn.Sequential(",
    ]
    for (ltype, kwargs), shape in zip(layers, shapes):
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        lines.append(f"            nn.{ltype}({args}),  # -> {fmt_shape(shape)}")
    lines += [
        "        )",
        "",
        "    def forward(self, x):",
        "        return self.layers(x)",
        "",
    ]
    return "\n".join(lines)


def assemble(config: dict, *, max_params: int = DEFAULT_MAX_PARAMS) -> AssembledModel:
    """Validate ``config`` and emit the module source. Raises ConfigError with what to fix."""
    name, in_shape, layers, shapes, text = _probe(config, max_params)
    render = render_text if text else _render
    return AssembledModel(class_name=name, source=render(name, in_shape, layers, shapes),
                          output_shape=shapes[-1], layer_shapes=shapes)
