"""The assembler: shape inference on meta, error messages that say what to fix, and source
that parses, runs and gives the predicted shapes."""

import ast
import copy
import time

import pytest
import torch

from shared.modelspec.assemble import (ALLOWED_LAYERS, MAX_LAYERS, AssembledModel,
                                         ConfigError, assemble, infer_shapes)

SEED = {
    "class_name": "DigitsCNN", "input_shape": [1, 8, 8], "num_classes": 10,
    "layers": [{"type": "Conv2d", "out_channels": 16, "kernel_size": 3}, {"type": "ReLU"},
               {"type": "Flatten"}, {"type": "Linear", "out_features": 10}],
    "optimizer": "adam", "lr": 0.001, "epochs": 10, "batch_size": 64,
}


def config(layers, input_shape=(1, 8, 8), num_classes=None, **top):
    cfg = {"class_name": "Net", "input_shape": list(input_shape), "layers": layers, **top}
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    return cfg


def run_source(model: AssembledModel, input_shape, batch=4) -> torch.Tensor:
    """Exec the emitted module (our own trusted output) and do a real forward pass."""
    ast.parse(model.source)
    namespace: dict = {}
    exec(compile(model.source, "<assembled>", "exec"), namespace)
    net = namespace[model.class_name]()
    net.eval()
    with torch.no_grad():
        return net(torch.randn(batch, *input_shape))


def error_of(cfg, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        assemble(cfg, **kw)
    return info.value


# ---- good configs ----

def test_seed_example_assembles_and_runs():
    model = assemble(SEED)
    assert model.class_name == "DigitsCNN"
    assert model.output_shape == (10,)
    assert model.layer_shapes == [(16, 6, 6), (16, 6, 6), (576,), (10,)]
    assert run_source(model, (1, 8, 8)).shape == (4, 10)
    src = model.source
    assert "import torch\nfrom torch import nn" in src
    assert '"""Input (B, 1, 8, 8) -> output (B, 10)."""' in src
    assert "nn.Conv2d(in_channels=1, out_channels=16, kernel_size=3),  # -> (B, 16, 6, 6)" in src
    assert "nn.Linear(in_features=576, out_features=10),  # -> (B, 10)" in src
    assert "def forward(self, x):\n        return self.layers(x)" in src


def test_source_is_deterministic_and_config_untouched():
    before = copy.deepcopy(SEED)
    assert assemble(SEED).source == assemble(copy.deepcopy(SEED)).source
    assert SEED == before


def test_in_features_inferred_after_flatten_and_pooling():
    cfg = config([{"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
                  {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
                  {"type": "Linear", "out_features": 32}, {"type": "Linear", "out_features": 3}],
                 num_classes=3)
    model = assemble(cfg)
    assert "nn.Linear(in_features=128, out_features=32)" in model.source
    assert "nn.Linear(in_features=32, out_features=3)" in model.source
    assert run_source(model, (1, 8, 8)).shape == (4, 3)


def test_norm_sizes_inferred():
    cfg = config([{"type": "Conv2d", "out_channels": 12, "kernel_size": 3},
                  {"type": "BatchNorm2d"}, {"type": "GroupNorm", "num_groups": 3},
                  {"type": "InstanceNorm2d"}, {"type": "Flatten"}, {"type": "LayerNorm"},
                  {"type": "Linear", "out_features": 16}, {"type": "BatchNorm1d"},
                  {"type": "Linear", "out_features": 2}], num_classes=2)
    model = assemble(cfg)
    for text in ("nn.BatchNorm2d(num_features=12)", "nn.GroupNorm(num_groups=3, num_channels=12)",
                 "nn.InstanceNorm2d(num_features=12)", "nn.LayerNorm(normalized_shape=432)",
                 "nn.BatchNorm1d(num_features=16)"):
        assert text in model.source
    assert run_source(model, (1, 8, 8)).shape == (4, 2)


def test_tabular_mlp_and_infer_shapes():
    cfg = config([{"type": "Linear", "out_features": 64}, {"type": "BatchNorm1d"},
                  {"type": "GELU"}, {"type": "Dropout", "p": 0.2},
                  {"type": "Linear", "out_features": 2}], input_shape=(30,), num_classes=2)
    assert infer_shapes(cfg) == [(64,), (64,), (64,), (64,), (2,)]
    assert run_source(assemble(cfg), (30,)).shape == (4, 2)


def test_argument_values_round_trip_through_repr():
    cfg = config([{"type": "Conv2d", "out_channels": 4, "kernel_size": [3, 3], "padding": "same",
                   "bias": False, "padding_mode": "reflect"},
                  {"type": "LeakyReLU", "negative_slope": 0.2},
                  {"type": "Upsample", "scale_factor": 2.0, "mode": "nearest"},
                  {"type": "AdaptiveAvgPool2d", "output_size": [2, None]},
                  {"type": "Flatten", "start_dim": 1}],
                 input_shape=(3, 5, 5))
    model = assemble(cfg)
    assert "kernel_size=(3, 3), padding='same', bias=False, padding_mode='reflect'" in model.source
    assert "output_size=(2, None)" in model.source
    assert model.output_shape == (4 * 2 * 10,)
    assert run_source(model, (3, 5, 5)).shape == (4, 80)


def test_explicit_matching_in_features_is_accepted():
    cfg = copy.deepcopy(SEED)
    cfg["layers"][3]["in_features"] = 576
    cfg["layers"][0]["in_channels"] = 1
    assert assemble(cfg).output_shape == (10,)


def test_allow_list():
    for name in ("Conv2d", "Linear", "ReLU", "Identity", "BatchNorm1d", "Flatten", "Dropout"):
        assert name in ALLOWED_LAYERS
    for name in ("Sequential", "ModuleList", "Module", "LSTM", "GRUCell", "RNN", "Bilinear",
                 "MultiheadAttention", "TransformerEncoderLayer", "LazyLinear", "CrossEntropyLoss",
                 "Container", "ParameterDict"):
        assert name not in ALLOWED_LAYERS
    assert not any(name.startswith("_") for name in ALLOWED_LAYERS)


# ---- errors that say what to fix ----

def test_unknown_type_suggests_close_match():
    cfg = copy.deepcopy(SEED)
    cfg["layers"][0]["type"] = "Conv2dd"
    err = error_of(cfg)
    assert err.layer_index == 0
    assert str(err).startswith("layer 0: unknown layer type 'Conv2dd'; did you mean 'Conv2d'")


def test_unknown_argument_names_layer_and_suggests():
    cfg = copy.deepcopy(SEED)
    cfg["layers"][0]["kernal_size"] = cfg["layers"][0].pop("kernel_size")
    msg = str(error_of(cfg))
    assert msg.startswith("layer 0 (Conv2d): 'kernal_size' is not an argument")
    assert "did you mean 'kernel_size'?" in msg


def test_missing_argument_is_named():
    cfg = copy.deepcopy(SEED)
    del cfg["layers"][3]["out_features"]
    msg = str(error_of(cfg))
    assert msg.startswith("layer 3 (Linear): ") and "out_features" in msg


def test_bad_argument_value():
    cfg = copy.deepcopy(SEED)
    cfg["layers"][0]["padding"] = "wide"
    msg = str(error_of(cfg))
    assert msg.startswith("layer 0 (Conv2d): bad argument value") and "'wide'" in msg


def test_kernel_too_big_for_input():
    cfg = config([{"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
                  {"type": "MaxPool2d", "kernel_size": 4},
                  {"type": "Conv2d", "out_channels": 8, "kernel_size": 5}])
    err = error_of(cfg)
    assert err.layer_index == 2
    assert str(err).startswith(
        "layer 2 (Conv2d): input (B, 16, 2, 2) is too small for kernel_size=5")


def test_pooling_to_nothing_is_reported():
    layers = [{"type": "MaxPool2d", "kernel_size": 2}] * 4
    msg = str(error_of(config(layers)))
    assert msg.startswith("layer 3 (MaxPool2d): input (B, 1, 1, 1) is too small for kernel_size=2")


def test_output_shape_must_match_num_classes():
    cfg = copy.deepcopy(SEED)
    cfg["num_classes"] = 5
    err = error_of(cfg)
    assert err.layer_index is None
    assert "outputs (B, 10) but num_classes=5" in str(err)
    no_flatten = config([{"type": "Conv2d", "out_channels": 10, "kernel_size": 8}], num_classes=10)
    assert "outputs (B, 10, 1, 1)" in str(error_of(no_flatten))


def test_explicit_in_features_disagreeing():
    cfg = copy.deepcopy(SEED)
    cfg["layers"][3]["in_features"] = 500
    msg = str(error_of(cfg))
    assert msg.startswith("layer 3 (Linear): in_features=500 disagrees")
    assert "in_features=576" in msg


def test_linear_on_image_input_is_a_shape_error():
    msg = str(error_of(config([{"type": "Linear", "in_features": 64, "out_features": 10}])))
    assert msg.startswith("layer 0 (Linear): in_features=64 disagrees with the input (B, 1, 8, 8)")


@pytest.mark.parametrize("key, value, fragment", [
    ("class_name", "class", "class_name must be a Python identifier"),
    ("class_name", "my net", "class_name"),
    ("class_name", "nn", "class_name"),
    ("class_name", None, "class_name"),
    ("input_shape", [], "input_shape must be"),
    ("input_shape", [1, 2, 3, 4], "input_shape must be"),
    ("input_shape", [1, 0, 8], "input_shape must be"),
    ("input_shape", [1, 8.0, 8], "input_shape must be"),
    ("input_shape", "1x8x8", "input_shape must be"),
    ("layers", [], "layers must be a non-empty list"),
    ("layers", {"type": "ReLU"}, "layers must be a non-empty list"),
    ("num_classes", 0, "num_classes must be"),
    ("num_classes", True, "num_classes must be"),
    ("standardize", "yes", "standardize must be true (scale the inputs by the training split's mean and std) or "
                           "false (train on the raw values), got 'yes'"),
    ("standardize", 1, "standardize must be true"),
    ("standardize", None, "standardize must be true"),
    ("class_weights", "balanced", "class_weights must be true (the loss weighs each class by n_samples / (n_classes "
                                  "* its count) in the training split) or false (unweighted), got 'balanced'"),
])
def test_bad_top_level(key, value, fragment):
    cfg = copy.deepcopy(SEED)
    cfg[key] = value
    err = error_of(cfg)
    assert err.layer_index is None and fragment in str(err)


@pytest.mark.parametrize("value", [True, False])
def test_standardize_either_way_builds_the_same_module(value):
    assert assemble({**SEED, "standardize": value}).source == assemble(SEED).source


# ---- hostile configs ----

@pytest.mark.parametrize("layer, fragment", [
    ({"type": "Conv2d", "out_channels": 4, "kernel_size": {"a": 1}}, "dict values are not allowed"),
    ({"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "device": "cuda"}, "'device'"),
    ({"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "dtype": "float64"}, "'dtype'"),
    ({"type": "ReLU", "_modules": None}, "'_modules' is not allowed"),
    ({"type": "Dropout", "p": float("nan")}, "nan is not allowed"),
    ({"type": "Conv2d", "out_channels": 4, "kernel_size": list(range(1000))}, "at most 16 items"),
    ({"type": "Conv2d", "out_channels": 4, "kernel_size": [[[3]]]}, "nest 2 deep"),
    ({"type": "Conv2d", "out_channels": 10**30, "kernel_size": 3}, "bad argument value"),
    ({"type": "Conv2d", "out_channels": -3, "kernel_size": 3}, "bad argument value"),
    ({"type": "Sequential"}, "unknown layer type 'Sequential'"),
    ({"type": "__import__"}, "unknown layer type"),
    ({"type": ["ReLU"]}, "'type' must be the name"),
    ("ReLU", "must be an object"),
])
def test_hostile_layers_rejected(layer, fragment):
    err = error_of(config([layer]))
    assert err.layer_index == 0 and fragment in str(err)


def test_huge_model_rejected_fast_without_allocating():
    # 10^6 x 10^6 weights would be 4 TB as float32; on meta it is only a shape.
    cfg = config([{"type": "Linear", "out_features": 10**6},
                  {"type": "Linear", "out_features": 10**6}], input_shape=(30,))
    start = time.perf_counter()
    err = error_of(cfg)
    assert time.perf_counter() - start < 2.0
    assert err.layer_index == 1 and "1,000,032,000,000 parameters" in str(err)
    assert "limit of 200,000,000" in str(err)
    small = config([{"type": "Linear", "out_features": 100}], input_shape=(30,))
    assert "limit of 1,000" in str(error_of(small, max_params=1_000))


def test_too_many_layers():
    err = error_of(config([{"type": "ReLU"}] * (MAX_LAYERS + 1)))
    assert f"limit of {MAX_LAYERS}" in str(err)


def test_batch_mixing_layer_rejected():
    msg = str(error_of(config([{"type": "Flatten", "start_dim": 0}], input_shape=(30,))))
    assert msg.startswith("layer 0 (Flatten): must return one tensor (B, ...)")
