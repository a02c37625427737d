"""Trained weights from a container, checked strictly: real safetensors files written by the
library, and hostile ones built byte by byte, each refused with a reason."""

from __future__ import annotations

import base64
import json
import struct

import pytest
import torch
from safetensors.torch import save
from torch import nn

from shared.evaluation.weights import BadWeights, check_weights, kept_weights, preprocessing
from shared.sandboxing.protocol import Hparams, TrainJob, TrainOutcome, max_report_bytes

LIMIT = 1 << 20  # bytes


def handmade(header: dict | bytes, payload: bytes = b"", declared_len: int | None = None) -> bytes:
    """A safetensors file as its format defines it: u64 header length, JSON header, tensor bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared_len is None else declared_len) + raw + payload


def test_a_state_dict_written_by_the_library_loads_back_equal():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))  # float weights and an int64 counter
    state = model.state_dict()
    tensors = check_weights(save(dict(state)), LIMIT)
    assert set(tensors) == set(state)
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    assert tensors["1.num_batches_tracked"].dtype == torch.int64


def test_too_big_is_refused_before_it_is_parsed():
    data = save({"w": torch.zeros(1024)})  # 4 KiB of float32
    with pytest.raises(BadWeights, match=r"over the limit of 1,000 \(evaluator.max_weights_bytes\)"):
        check_weights(data, 1000)


@pytest.mark.parametrize("declared", [2**64 - 1, 10_000])
def test_a_header_length_past_the_end_of_the_file(declared):
    data = handmade({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, declared_len=declared)
    with pytest.raises(BadWeights, match=f"the header length says {declared:,} bytes; the file has"):
        check_weights(data, LIMIT)


def test_too_short_for_a_header_length():
    with pytest.raises(BadWeights, match="too short for the 8-byte header length"):
        check_weights(b"\x01\x02", LIMIT)


def test_a_huge_declared_shape_is_refused_from_the_header_alone():
    header = {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}
    with pytest.raises(BadWeights, match="shapes add up to more than the limit of 1,048,576 bytes .at tensor 'w'"):
        check_weights(handmade(header, b"\0" * 4), LIMIT)


def test_a_shape_that_disagrees_with_its_bytes_is_refused_by_the_library_parser():
    header = {"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 4]}}  # 8 floats need 32 bytes
    with pytest.raises(BadWeights, match="the safetensors parser rejects it"):
        check_weights(handmade(header, b"\0" * 4), LIMIT)


@pytest.mark.parametrize("dtype", ["BOOL", "C64", "F8_E4M3", "OBJ", None])
def test_dtypes_other_than_floating_or_integer_are_refused(dtype):
    header = {"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 1]}}
    with pytest.raises(BadWeights, match="has dtype .*only floating and integer tensors are kept"):
        check_weights(handmade(header, b"\0"), LIMIT)


@pytest.mark.parametrize("entry", ["a string", 7, {"dtype": "F32"}, {"dtype": "F32", "shape": "[1]"}])
def test_an_entry_that_is_not_a_tensor_is_refused(entry):
    with pytest.raises(BadWeights, match="entry 'w' is not a tensor"):
        check_weights(handmade({"w": entry}), LIMIT)


@pytest.mark.parametrize("shape", [[-1], [1.5], [1] * 9])
def test_bad_shapes_are_refused(shape):
    header = {"w": {"dtype": "U8", "shape": shape, "data_offsets": [0, 1]}}
    with pytest.raises(BadWeights, match="has shape"):
        check_weights(handmade(header, b"\0"), LIMIT)


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'"text"'])
def test_a_header_that_is_not_a_json_object(header):
    with pytest.raises(BadWeights, match="the header is not a JSON object"):
        check_weights(handmade(header), LIMIT)


def test_no_tensors_and_too_many_tensors():
    with pytest.raises(BadWeights, match="it holds no tensors"):
        check_weights(handmade({"__metadata__": {"a": "b"}}), LIMIT)
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(10_001)}
    with pytest.raises(BadWeights, match="10,001 tensors, more than the 10,000"):
        check_weights(handmade(many), 1 << 30)


# ---- the harness's answer, as the evaluator reads it ----
def job(limit: int) -> TrainJob:
    return TrainJob(source="", class_name="M", seed=0, n_val=10, num_classes=3, max_weights_bytes=limit,
                    hparams=Hparams(epochs=1, batch_size=8, lr=0.01, optimizer="adam", weight_decay=0.0))


def outcome(**fields) -> TrainOutcome:
    return TrainOutcome(ok=True, **fields)


def test_kept_weights_returns_the_checked_file():
    data = save({"w": torch.ones(3)})
    assert kept_weights(outcome(weights_b64=base64.b64encode(data).decode()), job(LIMIT)) == (data, None)


def test_kept_weights_says_why_there_are_none():
    assert kept_weights(outcome(weights_b64="AAAA"), job(0)) == (None, None)  # the job did not ask
    assert kept_weights(outcome(weights_error="too big"), job(LIMIT))[1] == "the training container kept none: too big"
    assert "its image predates saving weights (rebuild it: make images)" in kept_weights(outcome(), job(LIMIT))[1]
    assert "more than the limit of 100 bytes" in kept_weights(outcome(weights_b64="A" * 200), job(100))[1]
    assert kept_weights(outcome(weights_b64="!!!!"), job(LIMIT))[1].startswith("the weights are not base64")
    hostile = base64.b64encode(handmade({"w": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}, b"\0")).decode()
    assert kept_weights(outcome(weights_b64=hostile), job(LIMIT))[1].startswith("the weights were rejected: tensor 'w'")


def test_the_report_bound_makes_room_for_the_weights_asked_for():
    assert max_report_bytes(job(LIMIT), 1000) - max_report_bytes(job(0), 1000) == 4 * ((LIMIT + 2) // 3)


def test_preprocessing_keeps_the_shape_without_the_batch_axis():
    import numpy as np

    p = preprocessing(np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1), np.ones((1, 3, 1, 1), np.float32))
    assert (p.shape, p.mean, p.std) == ([3, 1, 1], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0])
