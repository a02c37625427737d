"""The LLM roles' settings: defaults, inheritance of the tools role, errors, and the CLI flags."""

import pytest

from researcher.cli import parser
from researcher.goals import llm_env
from shared.runtime.config import load_config
from shared.errors import ConfigFileError
from shared.llm.client import llm_settings


def settings(env, role):
    return llm_settings(load_config(path="/dev/null", environ=env), role)


def test_no_llm_by_default():
    assert settings({}, "planning") is None and settings({}, "tools") is None


def test_the_tools_role_inherits_each_unset_key_from_planning():
    env = {"RESEARCHER_LLM__PLANNING__BASE_URL": "http://gpu:8000/v1", "RESEARCHER_LLM__PLANNING__MODEL": "qwen",
           "RESEARCHER_LLM__PLANNING__TIMEOUT_S": "30", "RESEARCHER_LLM__TOOLS__MODEL": "coder"}
    planning, tools = settings(env, "planning"), settings(env, "tools")
    assert (planning.base_url, planning.model, planning.timeout_s) == ("http://gpu:8000/v1", "qwen", 30.0)
    assert (tools.base_url, tools.model, tools.timeout_s) == ("http://gpu:8000/v1", "coder", 30.0)
    assert tools.api_key_env == "OPENAI_API_KEY" and tools.max_retries == 2
    assert tools.response_format == "json_schema" and tools.cap("code") == 3072 and tools.cap("decide") == 1024
    assert tools.step_budget("code") == 300.0 and tools.step_budget("check") is None


def test_the_response_format_and_the_older_json_mode_key():
    base = {"RESEARCHER_LLM__PLANNING__BASE_URL": "http://x/v1", "RESEARCHER_LLM__PLANNING__MODEL": "m"}
    assert settings({**base, "RESEARCHER_LLM__PLANNING__JSON_MODE": "false"}, "planning").response_format == "text"
    assert settings({**base, "RESEARCHER_LLM__PLANNING__RESPONSE_FORMAT": "json_object"},
                    "tools").response_format == "json_object"
    assert settings({**base, "RESEARCHER_LLM__REPLY_TOKENS__PLAN": "300",
                     "RESEARCHER_LLM__PLANNING__MAX_REPLY_TOKENS": "200"}, "planning").cap("propose") == 200
    with pytest.raises(ConfigFileError, match="response_format"):
        settings({**base, "RESEARCHER_LLM__PLANNING__RESPONSE_FORMAT": "yaml"}, "planning")
    with pytest.raises(ConfigFileError, match="reply_tokens"):
        settings({**base, "RESEARCHER_LLM__REPLY_TOKENS__CODE": "3"}, "planning")


def test_the_tools_role_can_be_switched_off_alone():
    env = {"RESEARCHER_LLM__PLANNING__BASE_URL": "http://x/v1", "RESEARCHER_LLM__PLANNING__MODEL": "m",
           "RESEARCHER_LLM__TOOLS__ENABLED": "false"}
    assert settings(env, "planning") is not None and settings(env, "tools") is None


def test_tools_alone():
    env = {"RESEARCHER_LLM__TOOLS__BASE_URL": "http://x/v1", "RESEARCHER_LLM__TOOLS__MODEL": "coder"}
    assert settings(env, "planning") is None and settings(env, "tools").model == "coder"


def test_an_endpoint_without_a_model_is_a_clear_error():
    with pytest.raises(ConfigFileError, match=r"llm.planning.base_url is set but no model is"):
        load_config(path="/dev/null", environ={"RESEARCHER_LLM__PLANNING__BASE_URL": "http://x/v1"})


def test_unknown_llm_keys_are_rejected(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("llm:\n  planning:\n    url: http://x\n")
    with pytest.raises(ConfigFileError, match="url"):
        load_config(path=f, environ={})


def test_the_yaml_file_configures_both_roles(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("llm:\n  planning: {base_url: 'http://localhost:11434/v1', model: 'llama3.1:8b', token_budget: 5000}\n"
                 "  tools: {model: 'qwen2.5-coder:7b'}\n  code_attempts: 2\n")
    config = load_config(path=f, environ={})
    assert llm_settings(config, "tools").model == "qwen2.5-coder:7b"
    assert llm_settings(config, "tools").token_budget == 5000 and config.llm.code_attempts == 2


def test_cli_flags_become_the_embedded_stack_environment_and_the_key_its_own_variable():
    args = parser().parse_args(["run", "g", "--llm-base-url", "http://localhost:11434/v1", "--llm-model", "llama",
                                "--llm-api-key", "sk-1", "--tools-llm-model", "coder"])
    env = llm_env(args)
    assert env == {"RESEARCHER_LLM__PLANNING__BASE_URL": "http://localhost:11434/v1",
                   "RESEARCHER_LLM__PLANNING__MODEL": "llama",
                   "RESEARCHER_PLANNING_LLM_API_KEY": "sk-1",
                   "RESEARCHER_LLM__PLANNING__API_KEY_ENV": "RESEARCHER_PLANNING_LLM_API_KEY",
                   "RESEARCHER_LLM__TOOLS__MODEL": "coder"}
    config = load_config(path="/dev/null", environ=env)
    assert llm_settings(config, "tools").api_key_env == "RESEARCHER_PLANNING_LLM_API_KEY"  # inherited
    assert "sk-1" not in repr(config)  # the settings never hold the key


def test_a_bad_key_in_the_environment_is_one_line_from_the_cli(monkeypatch, capsys):
    from researcher.cli import main

    monkeypatch.setenv("RESEARCHER_LLM__PLANNING__RESPONSE_FORMAT", "yaml")
    assert main(["run", "a goal", "--dataset", "wine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("researcher: configuration environment") and "$.llm.planning.response_format" in err
    assert "Traceback" not in err
