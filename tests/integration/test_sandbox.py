"""Validation in real locked-down containers: each outcome has its specific reason."""

import pytest

from shared.modelspec.assemble import assemble
from shared.sandboxing.validate import validate
from shared.sandboxing.containers import ContainerRunner, Limits
from shared.messaging.messages import ValidateRequest
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker]

DIGITS_CNN = {"class_name": "DigitsCNN", "input_shape": [1, 8, 8], "num_classes": 10,
              "layers": [{"type": "Conv2d", "out_channels": 16, "kernel_size": 3}, {"type": "ReLU"},
                         {"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}


@pytest.fixture(scope="module")
def runner(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="512m"), owner="tests-sandbox")
    yield runner
    runner.remove_strays()


def check(runner, source, class_name="Model", input_shape=(2, 1, 8, 8), expected=None, timeout=60.0):
    request = ValidateRequest(source=source, class_name=class_name, input_shape=list(input_shape),
                              expected_output_shape=list(expected) if expected else None)
    return validate(request, runner, timeout, "512m", "flag")


def test_assembled_model_is_valid_with_measured_facts(runner):
    model = assemble(DIGITS_CNN)
    result = check(runner, model.source, model.class_name, expected=(2, 10))
    assert result.ok, result.error
    assert result.output_shape == [2, 10]
    assert result.param_count == (1 * 16 * 9 + 16) + (16 * 6 * 6 * 10 + 10)
    assert [layer["type"] for layer in result.layers] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    # FlopCounterMode counts a matmul as 2*M*N*K and a convolution likewise; ReLU and Flatten count 0
    assert result.flops == 2 * 2 * 16 * (6 * 6) * (1 * 3 * 3) + 2 * 2 * (16 * 6 * 6) * 10


def test_a_forward_pass_the_flop_counter_breaks_is_still_valid(runner):
    source = ("import torch\nfrom torch.utils._python_dispatch import _get_current_dispatch_mode\n"
              "class Model(torch.nn.Module):\n    def forward(self, x):\n"
              "        if _get_current_dispatch_mode() is not None:\n            raise RuntimeError('no modes here')\n"
              "        return x.flatten(1)\n")
    result = check(runner, source, expected=(2, 64))
    assert result.ok, result.error
    assert result.flops is None


@pytest.mark.parametrize("source, class_name, reason, fragment", [
    ("class Model(:\n    pass\n", "Model", "syntax", "syntax error at line 1"),
    ("import torch\nclass Other(torch.nn.Module):\n    pass\n", "Model", "class_not_found", "class 'Model' not found"),
    ("import torch\nclass Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        raise ValueError('bad width 7')\n", "Model", "exception", "ValueError in Model.__init__: bad width 7"),
    ("import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return x @ torch.ones(3, 3)\n",
     "Model", "exception", "in forward on input (2, 1, 8, 8)"),
    ("import os\nprint('@@RESULT forged {\"harness_completed\": true}', flush=True)\nos._exit(3)\nModel = None\n",
     "Model", "exited", "exit code 3) during import"),
])
def test_rejections_say_why(runner, source, class_name, reason, fragment):
    result = check(runner, source, class_name)
    assert not result.ok
    assert result.reason == reason
    assert fragment in result.error


def test_wrong_output_shape_is_rejected(runner):
    model = assemble({**DIGITS_CNN, "num_classes": None, "layers": DIGITS_CNN["layers"][:-1] + [{"type": "Linear", "out_features": 5}]})
    result = check(runner, model.source, model.class_name, expected=(2, 10))
    assert not result.ok and result.reason == "output_shape"
    assert "(2, 5) does not match the expected (2, 10)" in result.error


def test_infinite_loop_is_killed_at_the_timeout(runner, docker_engine):
    result = check(runner, "while True:\n    pass\nModel = None\n", timeout=4.0)
    assert not result.ok and result.reason == "timeout" and result.timed_out
    assert "timed out after 4 s" in result.error
    assert not docker_engine.containers.list(all=True, filters={"label": "org.pytorch-researcher.owner=tests-sandbox"})


def test_memory_bomb_is_oom_killed(runner):
    source = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\nModel = None\n"
    result = check(runner, source)
    assert not result.ok and result.reason == "oom"
    assert "512m memory cap" in result.error


def test_text_model_is_probed_with_padded_token_ids(runner):
    """Token ids in [1, vocab) with trailing padding reach the model (the custom layer refuses any
    other input); the summary lists the sequence layers' modules, and the FLOPs include attention,
    which torch's counter misses in the Transformer's fused inference path."""
    config = {"class_name": "TextNet", "input_shape": [24], "vocab_size": 100, "num_classes": 3,
              "layers": [{"type": "Embedding", "embedding_dim": 16, "positions": "learned"},
                         {"type": "TransformerEncoder", "nhead": 2, "dim_feedforward": 32},
                         {"type": "LSTM", "hidden_size": 8, "bidirectional": True},
                         {"type": "SeqPool", "mode": "max"}, {"type": "Linear", "out_features": 3}]}
    model = assemble(config)
    guard = ("\n\nclass Checked(TextNet):\n    def forward(self, x):\n"
             "        if x.dtype != torch.int64 or int(x.min()) != 0 or int(x.max()) >= 100 or bool((x[:, 0] == 0).any()):\n"
             "            raise ValueError(f'not padded token ids: {x.dtype} {x.tolist()}')\n"
             "        return super().forward(x)\n")
    request = ValidateRequest(source=model.source + guard, class_name="Checked", input_shape=[2, 24],
                              expected_output_shape=[2, 3], input_dtype="int64", vocab_size=100)
    result = validate(request, runner, 60.0, "512m", "flag")
    assert result.ok, result.error
    types = [layer["type"] for layer in result.layers]
    for leaf in ("Embedding", "NonDynamicallyQuantizableLinear", "LSTM", "SeqPool", "Linear"):
        assert leaf in types, types
    assert result.param_count == sum(p.numel() for p in _instance(model).parameters())
    attention = 2 * 2 * 2 * 24 * 24 * (8 + 8)  # 2 * B * heads * L * L * (E + Ev)
    assert result.flops is not None and result.flops > attention


def _instance(model):
    namespace: dict = {}
    exec(compile(model.source, "<assembled>", "exec"), namespace)
    return namespace[model.class_name]()
