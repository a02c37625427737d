"""The Docker socket proxy's policy on paths and create bodies, with the bodies the docker SDK
itself writes (no engine needed: socket_policy does no I/O)."""

import json

import docker
import pytest

from shared.errors import RefusedCall
from shared.sandboxing.containers import OWNER_LABEL
from shared.sandboxing.socket_policy import Policy

IMAGE = "pytorch-researcher/sandbox:latest"
POLICY = Policy([IMAGE])
API = docker.APIClient(base_url="unix:///nonexistent", version="1.41")  # builds bodies, connects to nothing
SECCOMP = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]})


def create_body(image=IMAGE, labels=None, **host) -> bytes:
    """What containers.create sends: the SDK's own ContainerConfig and HostConfig."""
    host = {"network_mode": "none", "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], **host}
    config = API.create_container_config(image, ["true"], labels={OWNER_LABEL: "t"} if labels is None else labels,
                                         host_config=API.create_host_config(**host))
    return json.dumps(config).encode()


def refusal(body: bytes, target="/v1.41/containers/create", method="POST") -> str:
    with pytest.raises(RefusedCall) as caught:
        POLICY.check(method, target, body)
    return caught.value.why


def test_what_the_sandbox_sends_passes_and_is_forwarded_as_checked():
    body = create_body(runtime="runsc", security_opt=["no-new-privileges:true", f"seccomp={SECCOMP}"],
                       device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
                       tmpfs={"/tmp": "rw,size=64m"}, mem_limit="512m", pids_limit=128)
    call = POLICY.check("POST", "/v1.41/containers/create?name=x", body)
    forwarded = json.loads(call.body)
    assert forwarded["HostConfig"]["NetworkMode"] == "none" and forwarded["HostConfig"]["Runtime"] == "runsc"
    assert forwarded["Image"] == IMAGE and call.target() == "/v1.41/containers/create?name=x"


@pytest.mark.parametrize("host, fragment", [
    ({"privileged": True}, "privileged container is root on the host"),
    ({"binds": ["/:/host"]}, "Binds mount host paths"),
    ({"mounts": [docker.types.Mount("/host", "/", type="bind")]}, "Mounts mount"),
    ({"network_mode": "host"}, "NetworkMode must be 'none'"),
    ({"network_mode": "container:nats"}, "NetworkMode must be 'none'"),
    ({"pid_mode": "host"}, "PidMode"),
    ({"ipc_mode": "host"}, "IpcMode"),
    ({"userns_mode": "host"}, "UsernsMode"),
    ({"uts_mode": "host"}, "UTSMode"),
    ({"cap_add": ["SYS_ADMIN"]}, "CapAdd"),
    ({"devices": ["/dev/sda:/dev/sda"]}, "Devices pass host devices"),
    ({"volumes_from": ["nats"]}, "VolumesFrom"),
    ({"security_opt": ["seccomp=unconfined"]}, "lifts the seccomp confinement"),
    ({"security_opt": ["apparmor:unconfined"]}, "lifts the apparmor confinement"),
    ({"security_opt": ["label=disable"]}, "is not passed"),
    ({"security_opt": ['seccomp={"defaultAction": "SCMP_ACT_ALLOW"}']}, "confines nothing"),
    ({"runtime": "kata"}, "Runtime"),
    ({"device_requests": [docker.types.DeviceRequest(driver="foo", count=1, capabilities=[["tpu"]])]}, "only GPU"),
    ({"cgroup_parent": "/"}, "CgroupParent"),
    ({"sysctls": {"kernel.shm_rmid_forced": "1"}}, "Sysctls"),
    ({"log_config": docker.types.LogConfig(type="syslog", config={"syslog-address": "udp://1.2.3.4:514"})}, "LogConfig.Type"),
    ({"oom_score_adj": -1000}, "OomScoreAdj"),
])
def test_a_create_that_reaches_the_host_is_refused(host, fragment):
    assert fragment in refusal(create_body(**host))


def test_another_image_and_a_container_without_the_owner_label_are_refused():
    assert "only from pytorch-researcher/sandbox:latest" in refusal(create_body(image="pytorch-researcher/service:latest"))
    assert "only from" in refusal(create_body(image="sha256:0123"))  # an id names any image
    assert f"must carry the label {OWNER_LABEL}" in refusal(create_body(labels={}))


def sdk_config() -> dict:
    return json.loads(create_body())


@pytest.mark.parametrize("change, fragment", [
    # Go matches field names case-insensitively: the spelling does not hide a field
    (lambda c: c["HostConfig"].update(privileged=True), "privileged container"),
    (lambda c: c["HostConfig"].update({"ſecurityOpt": ["seccomp=unconfined"]}) or c["HostConfig"].pop("SecurityOpt"),
     "lifts the seccomp"),  # Go folds ſ to s
    # ... and the last of two duplicates wins: keys that differ only in case are refused
    (lambda c: c["HostConfig"].update(networkmode="host"), "differ only in case"),
    (lambda c: c.update(image="alpine"), "differ only in case"),
    # without HostConfig the engine reads its fields at the top level
    (lambda c: (c.pop("HostConfig"), c.update(Privileged=True)), "has no HostConfig"),
    (lambda c: c.update(Privileged=True), "the create has the field 'Privileged'"),
    (lambda c: c["HostConfig"].update(MaskedPaths=[]), "unmasks /proc"),
    (lambda c: c["HostConfig"].update(Annotations={"x": "y"}), "does not pass"),
    (lambda c: c.update(NetworkingConfig={"EndpointsConfig": {"bridge": {}}}), "EndpointsConfig"),
])
def test_case_and_duplicate_key_tricks_are_refused(change, fragment):
    config = sdk_config()
    change(config)
    assert fragment in refusal(json.dumps(config).encode())


def test_a_literal_duplicate_key_and_non_json_are_refused():
    body = json.dumps(sdk_config())[:-1] + ', "Image": "alpine"}'
    assert "differ only in case" in refusal(body.encode())
    assert "not one JSON value" in refusal(json.dumps(sdk_config()).encode() + b" {}")
    assert "not UTF-8" in refusal(b"\xff\xfe{}")


@pytest.mark.parametrize("method, target, fragment", [
    ("POST", "/v1.41/containers/abc/exec", "exec runs a command"),
    ("POST", "/v1.41/images/create?fromImage=alpine", "never pull"),
    ("POST", "/v1.41/build", "never build"),
    ("DELETE", "/v1.41/images/pytorch-researcher/sandbox:latest", "only inspect the sandbox image"),
    ("POST", "/v1.41/volumes/create", "no volumes"),
    ("POST", "/v1.41/swarm/init", "no swarm"),
    ("POST", "/v1.41/plugins/pull", "plugins"),
    ("POST", "/v1.41/containers/prune", "pruning"),
    ("GET", "/v1.41/containers/json?all=1", "must filter on the label"),
    ("GET", '/v1.41/containers/json?filters={"label":["com.docker.compose.service"]}', "must filter on the label"),
    ("GET", "/v1.41/images/alpine/json", "only the sandbox image"),
    ("POST", "/v1.23/containers/abc/start", "older than"),
    ("POST", "/v1.41/containers/abc/../../containers/abc/exec", "clean form"),
    ("POST", "/v1.41/containers/abc%2F..%2Fexec/start", "clean form"),
    ("DELETE", "/v1.41/containers/abc?link=1", "link"),
    ("GET", "/v1.41/containers/abc/top", "never make this call"),
])
def test_calls_the_services_never_make_are_refused_saying_why(method, target, fragment):
    assert fragment in refusal(b"", target, method)


def test_a_start_with_a_body_is_refused_and_an_update_passes_only_cpu_shares():
    assert "takes no body" in refusal(b'{"Privileged": true}', "/v1.41/containers/abc/start")
    call = POLICY.check("POST", "/v1.41/containers/abc/update", b'{"cpushares": 1024}')
    assert json.loads(call.body) == {"CpuShares": 1024} and call.container == "abc"
    assert "does not pass" in refusal(b'{"Memory": 1}', "/v1.41/containers/abc/update")


def test_calls_on_containers_name_the_container_to_check():
    call = POLICY.check("POST", "/v1.41/containers/abc/kill", b"")
    assert call.container == "abc" and call.target("f" * 64) == f"/v1.41/containers/{'f' * 64}/kill"
    stats = POLICY.check("GET", "/v1.41/containers/abc/stats?stream=0&one-shot=1")  # a training container's cost
    assert stats.container == "abc" and stats.target("f" * 64) == f"/v1.41/containers/{'f' * 64}/stats?stream=0&one-shot=1"
    assert POLICY.check("GET", '/v1.41/containers/json?all=1&filters={"label":["org.pytorch-researcher.owner=x"]}').container is None
