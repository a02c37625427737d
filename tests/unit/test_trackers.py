"""The tracker exports' command line and mapping, without a registry: a missing extra is a message
that says what to install, and the names trackers get stay within their limits."""

import os
import sys

import pytest

from researcher import cli
from researcher.trackers.mlflow_export import MAX_KEY, key, tracking_uri
from researcher.trackers.view import flatten


@pytest.mark.parametrize("option, module, extra", [("--mlflow", "mlflow", "mlflow"),
                                                    ("--tensorboard", "tensorboard", "tensorboard")])
def test_a_tracker_without_its_extra_says_what_to_install(option, module, extra, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # how Python marks a module that cannot be imported
    monkeypatch.delenv("NATS_URL", raising=False)
    assert cli.main(["export", "some-run", option, str(tmp_path / "out"), "--home", str(tmp_path / "home")]) == 1
    err = capsys.readouterr().err
    assert f"error: {option} needs the {module!r} package, which is not installed: " \
           f"pip install 'pytorch-researcher[{extra}]'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_export_without_a_destination_is_a_usage_error(capsys):
    assert cli.main(["export", "some-run"]) == 2
    assert "needs where to write: a DIRECTORY, --mlflow URI or --tensorboard DIR" in capsys.readouterr().err


def test_a_config_flattens_to_the_keys_researchers_filter_on():
    config = {"class_name": "Net", "layers": [{"type": "Conv2d", "kernel_size": [3, 3]}, {"type": "Flatten"}],
              "lr": 0.01, "augment": False, "scheduler": None, "extra": {}}
    assert flatten(config) == {"class_name": "Net", "layers.0.type": "Conv2d", "layers.0.kernel_size.0": "3",
                               "layers.0.kernel_size.1": "3", "layers.1.type": "Flatten", "lr": "0.01",
                               "augment": "false", "scheduler": "null", "extra": "{}"}


def test_mlflow_keys_keep_to_its_characters_and_length():
    assert key("layers.0.type") == "layers.0.type"
    assert key("val_accuracy/ci_low") == "val_accuracy/ci_low"
    assert key("a<b>|c..d") == "a_b__c__d"  # no character MLflow refuses, no parent-folder step
    long_a, long_b = "p" * 300 + "a", "p" * 300 + "b"
    assert len(key(long_a)) == MAX_KEY and key(long_a) != key(long_b)


def test_a_path_is_an_mlflow_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # unset, and unset again after the test
    assert tracking_uri(str(tmp_path / "mlruns")) == (tmp_path / "mlruns").as_uri()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # naming a file store is the consent MLflow 3 asks for
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking_uri("http://localhost:5000") == "http://localhost:5000"
