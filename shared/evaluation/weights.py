"""A seed's trained weights: a safetensors file written in the training container, checked here.

The file comes from the generated code's own process, so nothing in it is trusted. Its size is
bounded before a byte of it is decoded; its header is read with msgspec and checked (tensor count,
dtypes, shapes, the bytes they add up to) before the safetensors library's own parser builds a
single tensor; never pickle. A file that fails is a recorded reason on the seed, never an error of
the evaluator, and the seed's scores stand without it.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import msgspec
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from shared.messaging.messages import Preprocessing
from shared.sandboxing.protocol import TrainJob, TrainOutcome, b64_len

# safetensors dtype -> bytes per element: floating and integer tensors only (no bool, complex or
# float8: a state dict of a classifier needs none, and each is one more thing to get wrong)
ITEM_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1}
MAX_TENSORS = 10_000  # a state dict's entries; ResNet-152 has about 1,000
MAX_DIMS = 8  # of one tensor
HEADER_LEN_BYTES = 8  # a little-endian u64 opens every safetensors file


class BadWeights(ValueError):
    """A weights file this side will not keep; the message says what is wrong with it."""


def check_weights(data: bytes, max_bytes: int) -> dict[str, torch.Tensor]:
    """safetensors bytes -> their tensors, or BadWeights saying why not."""
    if len(data) > max_bytes:
        raise BadWeights(f"{len(data):,} bytes, over the limit of {max_bytes:,} (evaluator.max_weights_bytes)")
    if len(data) < HEADER_LEN_BYTES:
        raise BadWeights(f"{len(data)} bytes: too short for the 8-byte header length a safetensors file opens with")
    header_len = int.from_bytes(data[:HEADER_LEN_BYTES], "little")
    if header_len > len(data) - HEADER_LEN_BYTES:
        raise BadWeights(f"the header length says {header_len:,} bytes; the file has {len(data) - HEADER_LEN_BYTES:,} after it")
    _check_header(data[HEADER_LEN_BYTES:HEADER_LEN_BYTES + header_len], max_bytes)
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise BadWeights(f"the safetensors parser rejects it: {str(exc)[:300]}") from None


def _check_header(header: bytes, max_bytes: int) -> None:
    """Every entry a tensor of an allowed dtype whose shape fits the limit, before any is built."""
    try:
        entries: dict[str, Any] = msgspec.json.decode(header, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise BadWeights(f"the header is not a JSON object: {exc}") from None
    entries.pop("__metadata__", None)
    if not entries:
        raise BadWeights("it holds no tensors")
    if len(entries) > MAX_TENSORS:
        raise BadWeights(f"{len(entries):,} tensors, more than the {MAX_TENSORS:,} a model's state dict may hold")
    total = 0
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            raise BadWeights(f"entry {name[:100]!r} is not a tensor (no dtype, shape and data_offsets)")
        dtype, shape = entry.get("dtype"), entry["shape"]
        if dtype not in ITEM_BYTES:
            raise BadWeights(f"tensor {name[:100]!r} has dtype {str(dtype)[:20]!r}; only floating and integer "
                             f"tensors are kept ({', '.join(ITEM_BYTES)})")
        if len(shape) > MAX_DIMS or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise BadWeights(f"tensor {name[:100]!r} has shape {str(shape)[:100]}: at most {MAX_DIMS} non-negative sizes")
        total += math.prod(shape) * ITEM_BYTES[dtype]  # Python ints: a huge declared shape cannot overflow
        if total > max_bytes:
            raise BadWeights(f"its tensors' shapes add up to more than the limit of {max_bytes:,} bytes "
                             f"(at tensor {name[:100]!r})")


def kept_weights(result: TrainOutcome, job: TrainJob) -> tuple[bytes | None, str | None]:
    """The harness's answer -> (the checked safetensors file, None) or (None, why there is none;
    None too when the job did not ask)."""
    limit = job.max_weights_bytes
    if limit <= 0:
        return None, None
    if result.weights_error:
        return None, f"the training container kept none: {result.weights_error}"
    if result.weights_b64 is None:
        return None, ("the training container returned none: its image predates saving weights "
                      "(rebuild it: make images)")
    if len(result.weights_b64) > b64_len(limit):
        return None, (f"{len(result.weights_b64):,} characters of base64, more than the limit of {limit:,} bytes "
                      "(evaluator.max_weights_bytes) can take")
    try:
        data = base64.b64decode(result.weights_b64, validate=True)
        check_weights(data, limit)
    except binascii.Error as exc:
        return None, f"the weights are not base64: {exc}"
    except BadWeights as exc:
        return None, f"the weights were rejected: {exc}"
    return data, None


def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """A checked safetensors file written again with `metadata` in its header (the trusted side's: a text
    seed's tokenizer, so the exported weights carry what their inputs were made with)."""
    from safetensors.torch import save

    return save(load_safetensors(data), metadata=metadata)


def preprocessing(mean: np.ndarray, std: np.ndarray, encoding: dict[str, Any] | None = None) -> Preprocessing:
    """A split's normalisation, (1, C, 1, 1) or (1, F), as the record keeps it: without the batch axis;
    with the encoding fitted before it, if any (Split.encoding)."""
    return Preprocessing(shape=list(mean.shape[1:]), mean=mean.ravel().tolist(), std=std.ravel().tolist(),
                         encoding=encoding)
