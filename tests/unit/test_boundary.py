"""The sandbox's seccomp profile as shipped, the runtime setting, runsc's registration in
daemon.json (scripts/register-runsc.py) and the health check's note; no engine needed."""

import importlib.util
import json
from pathlib import Path

import pytest

from shared.runtime.health import check
from shared.sandboxing.boundary import Boundary, flag_on, registered_runsc, runtime_setting
from shared.sandboxing.seccomp import PROFILE_JSON, PROFILE_PATH, REMOVED, allowed_names, derive

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "register-runsc.py"
spec = importlib.util.spec_from_file_location("register_runsc", SCRIPT)
register_runsc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(register_runsc)

PROFILE = json.loads(PROFILE_PATH.read_text())


# ---- the profile ----
def test_the_shipped_profile_allows_none_of_what_it_removes():
    assert allowed_names(PROFILE) & set(REMOVED) == set()
    assert {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= set(REMOVED)


@pytest.mark.parametrize("name", ["bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
                                  "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "mount",
                                  "umount2", "unshare", "setns", "open_by_handle_at", "clone3"])
def test_what_a_model_never_needs_is_not_allowed(name):
    assert name not in allowed_names(PROFILE)


def test_what_torch_and_the_harness_use_is_allowed():
    assert {"clone", "futex", "mmap", "select", "pselect6", "poll", "pipe2", "prctl", "wait4", "sched_getaffinity",
            "memfd_create", "socketpair", "sendfile", "getrandom"} <= allowed_names(PROFILE)


def test_clone_is_allowed_only_without_namespace_flags_and_clone3_says_enosys():
    clone = [rule for rule in PROFILE["syscalls"] if rule["names"] == ["clone"] and not rule.get("includes")]
    assert clone[0]["args"] == [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]
    clone3 = [rule for rule in PROFILE["syscalls"] if rule["names"] == ["clone3"] and not rule.get("includes")]
    assert (clone3[0]["action"], clone3[0]["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)  # glibc then falls back to clone


def test_no_rule_depends_on_a_capability_and_personality_keeps_only_the_default_and_the_query():
    assert not [rule for rule in PROFILE["syscalls"] if (rule.get("includes") or {}).get("caps")]
    personalities = {rule["args"][0]["value"] for rule in PROFILE["syscalls"] if rule["names"] == ["personality"]}
    assert personalities == {0, 0xFFFFFFFF}
    x86_64 = next(arch for arch in PROFILE["archMap"] if arch["architecture"] == "SCMP_ARCH_X86_64")
    assert x86_64["subArchitectures"] == []  # no 32-bit system calls


def test_derive_is_what_made_the_shipped_file():
    """Deriving again from the shipped profile changes nothing: the file is derive's output."""
    assert derive(PROFILE) == PROFILE
    assert json.loads(PROFILE_JSON) == PROFILE


def test_every_container_gets_no_new_privileges_and_the_profile_under_either_runtime():
    for runtime in ("runc", "runsc"):
        assert Boundary(runtime, "test").security_opt == ["no-new-privileges:true", f"seccomp={PROFILE_JSON}"]


# ---- the setting and the engine's runsc ----
@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("auto", "auto"), (" RunSC ", "runsc"),
                                             ("runc", "runc")])
def test_runtime_setting(value, expected):
    assert runtime_setting(value) == expected


def test_an_unknown_runtime_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match="sandbox.runtime must be auto, runsc or runc, not 'kata'"):
        runtime_setting("kata")


def test_runsc_flags_as_daemon_json_gives_them():
    assert flag_on(["--network=none", "--nvproxy"], "nvproxy")
    assert flag_on(["-nvproxy=true"], "nvproxy")
    assert not flag_on(["--nvproxy=false"], "nvproxy")
    assert not flag_on(["--network=none"], "oci-seccomp")
    assert registered_runsc({"runc": {"path": "runc"}}) is None
    assert registered_runsc({"runsc": {"path": "/usr/bin/runsc"}}) == {"path": "/usr/bin/runsc"}


# ---- scripts/register-runsc.py ----
def test_registering_keeps_every_other_setting_and_is_idempotent(tmp_path):
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"log-driver": "local", "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}))
    assert register_runsc.register(daemon, "/usr/bin/runsc") is True
    written = json.loads(daemon.read_text())
    assert written["log-driver"] == "local"
    assert written["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime"},
                                   "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}
    before = daemon.read_text()
    assert register_runsc.register(daemon, "/usr/bin/runsc") is False
    assert daemon.read_text() == before


def test_an_owners_runsc_entry_is_left_as_it_is(tmp_path):
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"runtimes": {"runsc": {"path": "/opt/runsc", "runtimeArgs": ["--nvproxy"]}}}')
    assert register_runsc.main(["/usr/bin/runsc", "--daemon-json", str(daemon)]) == 0
    assert json.loads(daemon.read_text())["runtimes"]["runsc"]["path"] == "/opt/runsc"


def test_a_missing_daemon_json_is_created(tmp_path):
    daemon = tmp_path / "docker" / "daemon.json"
    assert register_runsc.register(daemon, "/usr/bin/runsc") is True
    assert json.loads(daemon.read_text())["runtimes"]["runsc"]["runtimeArgs"] == ["--network=none"]


def test_a_daemon_json_that_is_not_json_is_left_alone_with_what_to_add(tmp_path, capsys):
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"log-driver": "local",')
    assert register_runsc.main(["/usr/bin/runsc", "--daemon-json", str(daemon)]) == 2
    assert daemon.read_text() == '{"log-driver": "local",'
    assert "add runsc by hand" in capsys.readouterr().err


# ---- the health check says which runtime ----
def test_the_health_check_prints_the_services_note(tmp_path):
    ready = tmp_path / "health"
    ready.write_text("containers: runsc (gVisor)")
    ok, why = check(ready)
    assert ok and why.endswith("; containers: runsc (gVisor)")
