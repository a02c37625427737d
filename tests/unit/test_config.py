"""Configuration: defaults, one YAML file over them, the environment over that; unknown keys
rejected with the key to fix."""

import pytest

from shared.runtime.config import Config, EvaluatorConfig, PlannerConfig, SandboxConfig, load_config
from shared.errors import ConfigFileError


@pytest.fixture
def no_default_file(tmp_path, monkeypatch):
    """load_config falls back to config/researcher.yaml relative to the working directory."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text: str):
    path = tmp_path / "researcher.yaml"
    path.write_text(text)
    return path


def test_defaults_with_no_file_and_no_environment(no_default_file):
    config = load_config(environ={})
    assert config == Config()
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.sandbox.memory == "2g"
    assert config.sandbox.cpus == 1.0
    assert config.data.val_fraction == 0.2
    assert config.assembler.concurrency == 8
    assert config.planner == PlannerConfig()


def test_file_overrides_nested_keys_and_keeps_the_other_defaults(tmp_path):
    path = write(tmp_path, "log_level: debug\nsandbox:\n  memory: 1g\n  pids: 64\nplanner:\n  max_epochs: 7\n")
    config = load_config(path, environ={})
    assert config.log_level == "debug"
    assert config.sandbox.memory == "1g"
    assert config.sandbox.pids == 64
    assert config.sandbox.cpus == SandboxConfig().cpus
    assert config.sandbox.image == SandboxConfig().image
    assert config.planner.max_epochs == 7
    assert config.planner.min_epochs == PlannerConfig().min_epochs
    assert config.evaluator == EvaluatorConfig()


def test_file_can_be_named_by_researcher_config(tmp_path, no_default_file):
    path = write(tmp_path, "evaluator:\n  gpus: none\n")
    assert load_config(environ={"RESEARCHER_CONFIG": str(path)}).evaluator.gpus == "none"


def test_an_explicit_path_wins_over_researcher_config(tmp_path):
    chosen = write(tmp_path, "log_level: warning\n")
    other = tmp_path / "other.yaml"
    other.write_text("log_level: error\n")
    assert load_config(chosen, environ={"RESEARCHER_CONFIG": str(other)}).log_level == "warning"


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_environment_overrides_a_nested_key(no_default_file):
    config = load_config(environ={"RESEARCHER_SANDBOX__MEMORY": "4g"})
    assert config.sandbox.memory == "4g"


def test_nats_url_from_the_environment(no_default_file):
    assert load_config(environ={"NATS_URL": "nats://bus:4222"}).nats_url == "nats://bus:4222"


def test_environment_beats_the_file(tmp_path):
    path = write(tmp_path, "nats_url: nats://from-file:4222\nsandbox:\n  memory: 1g\n  pids: 64\n")
    config = load_config(path, environ={"RESEARCHER_SANDBOX__MEMORY": "4g", "NATS_URL": "nats://from-env:4222"})
    assert config.sandbox.memory == "4g"
    assert config.nats_url == "nats://from-env:4222"
    assert config.sandbox.pids == 64  # the rest of the file's section survives the override


def test_numbers_from_environment_strings(no_default_file):
    config = load_config(environ={"RESEARCHER_SANDBOX__CPUS": "0.5", "RESEARCHER_SANDBOX__PIDS": "32",
                                  "RESEARCHER_PLANNER__EVAL_TIMEOUT_S": "90"})
    assert config.sandbox.cpus == 0.5
    assert isinstance(config.sandbox.cpus, float)
    assert config.sandbox.pids == 32
    assert isinstance(config.sandbox.pids, int)
    assert config.planner.eval_timeout_s == 90.0


def test_a_top_level_key_from_the_environment(no_default_file):
    assert load_config(environ={"RESEARCHER_LOG_LEVEL": "debug"}).log_level == "debug"


@pytest.mark.parametrize("value", ["", "null", "None"])
def test_empty_or_null_in_the_environment_means_none(no_default_file, value):
    assert load_config(environ={"RESEARCHER_SANDBOX__RUNTIME": value}).sandbox.runtime is None


def test_a_string_that_is_not_a_number_names_the_key(no_default_file):
    with pytest.raises(ConfigFileError) as caught:
        load_config(environ={"RESEARCHER_SANDBOX__CPUS": "lots"})
    assert "$.sandbox.cpus" in str(caught.value)


def test_unknown_key_in_the_file_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "sandbox:\n  memroy: 2g\n")
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "memroy" in message
    assert "sandbox" in message
    assert str(path) in message
    assert caught.value.path == str(path)


def test_unknown_section_in_the_file_is_rejected(tmp_path):
    with pytest.raises(ConfigFileError, match="sandbx"):
        load_config(write(tmp_path, "sandbx:\n  memory: 2g\n"), environ={})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_file_that_is_not_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError, match="mapping") as caught:
        load_config(path, environ={})
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_yaml(tmp_path):
    path = write(tmp_path, "sandbox: [unclosed\n")
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, environ={})
    assert str(path) in str(caught.value)


def test_a_missing_file_raises_config_file_error(tmp_path):
    with pytest.raises(ConfigFileError):
        load_config(tmp_path / "absent.yaml", environ={})


def test_researcher_variables_that_are_not_settings_are_ignored(no_default_file):
    config = load_config(environ={"RESEARCHER_REPLICA": "x", "RESEARCHER_CONFIG_NOTE": "y", "HOME": "/root"})
    assert config == Config()


def test_unknown_key_from_the_environment_is_rejected(no_default_file):
    with pytest.raises(ConfigFileError, match="memroy"):
        load_config(environ={"RESEARCHER_SANDBOX__MEMROY": "4g"})


def test_a_bad_environment_variable_is_not_blamed_on_the_file(tmp_path):
    path = write(tmp_path, "sandbox:\n  memory: 1g\n")
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, environ={"RESEARCHER_SANDBOX__MEMROY": "4g"})
    # the file is fine: the message must point at the variable, not tell the reader to edit the file
    assert caught.value.path != str(path)
    assert str(path) not in str(caught.value)


# ---- keys that moved ----
@pytest.mark.parametrize("key, moved_to", [("data_dir", "data.dir"), ("val_fraction", "data.val_fraction")])
def test_an_old_file_with_a_moved_key_is_told_where_it_went(tmp_path, key, moved_to):
    path = write(tmp_path, f"evaluator:\n  memory: 4g\n  {key}: /srv/data\n")
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, environ={})
    assert f"evaluator.{key} has moved to {moved_to}" in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_old_variable_with_a_moved_key_names_the_new_variable(no_default_file):
    with pytest.raises(ConfigFileError, match="RESEARCHER_EVALUATOR__DATA_DIR has moved: set RESEARCHER_DATA__DIR"):
        load_config(environ={"RESEARCHER_EVALUATOR__DATA_DIR": "/data"})


def test_the_data_section_from_file_and_environment(tmp_path):
    path = write(tmp_path, "data:\n  dir: /srv/data\n  val_fraction: 0.25\n")
    config = load_config(path, environ={"RESEARCHER_DATA__DIR": "/data"})
    assert config.data.dir == "/data" and config.data.val_fraction == 0.25


# ---- settings that were constants in modules ----
def test_consumer_and_concurrency_settings_are_configurable(tmp_path):
    path = write(tmp_path, "planner:\n  ack_wait_s: 30\n  max_deliver: 7\n  fetch_batch: 2\n  nak_delay_s: 0.5\n"
                           "assembler:\n  concurrency: 3\n")
    config = load_config(path, environ={"RESEARCHER_EVALUATOR__NAK_DELAY_S": "4"})
    assert (config.planner.ack_wait_s, config.planner.max_deliver, config.planner.fetch_batch,
            config.planner.nak_delay_s) == (30.0, 7, 2, 0.5)
    assert config.assembler.concurrency == 3 and config.evaluator.nak_delay_s == 4.0


@pytest.mark.parametrize("text, key", [("planner:\n  fetch_batch: 0\n", "planner.fetch_batch"),
                                       ("assembler:\n  concurrency: 0\n", "assembler.concurrency"),
                                       ("data:\n  val_fraction: 1.5\n", "data.val_fraction"),
                                       ("evaluator:\n  ack_wait_s: 0\n", "evaluator.ack_wait_s"),
                                       ("evaluator:\n  max_weights_bytes: -1\n", "evaluator.max_weights_bytes"),
                                       ("evaluator:\n  max_weights_bytes: 300000000\n", "evaluator.max_weights_bytes")])
def test_out_of_range_settings_name_their_key(tmp_path, text, key):
    with pytest.raises(ConfigFileError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text), environ={})


def test_the_shipped_file_holds_no_repeated_defaults():
    """config/researcher.yaml lists only overrides: as shipped it changes nothing."""
    from pathlib import Path

    shipped = Path(__file__).parents[2] / "config" / "researcher.yaml"
    assert load_config(shipped, environ={}) == Config()
