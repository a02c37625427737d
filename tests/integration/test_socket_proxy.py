"""The Docker socket proxy on the real engine, with the real docker SDK as its client: each kind
of forbidden call is refused with 403 and nothing is created, and the sandbox's real work (a
warm pool, an attached job, its removal) passes through it."""

import json
import socket
import uuid

import docker
import pytest
from docker.errors import APIError

from shared.modelspec.assemble import assemble
from shared.messaging.messages import ValidateRequest
from shared.sandboxing.containers import OWNER_LABEL, ContainerRunner, Limits
from shared.sandboxing.socket_policy import Policy
from shared.sandboxing.socket_proxy import SocketProxy
from shared.sandboxing.validate import validate
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker]
MODEL = {"class_name": "Tiny", "input_shape": [1, 8, 8], "num_classes": 10,
         "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}


@pytest.fixture(scope="module")
def proxy_socket(docker_engine, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("proxy") / "docker.sock")
    proxy = SocketProxy(path, "/var/run/docker.sock", Policy([SANDBOX_IMAGE]))
    proxy.start()
    try:
        yield path
    finally:
        proxy.close()


@pytest.fixture
def client(proxy_socket):
    client = docker.DockerClient(base_url=f"unix://{proxy_socket}")
    yield client
    client.close()


@pytest.fixture
def tag(docker_engine):
    """A label on every container a test tries to create, to find what the engine made."""
    value = uuid.uuid4().hex
    yield value
    for container in docker_engine.containers.list(all=True, filters={"label": f"test-proxy={value}"}):
        container.remove(force=True)


def refused(call, fragment: str) -> None:
    with pytest.raises(APIError) as caught:
        call()
    assert caught.value.status_code == 403
    assert "the Docker socket proxy refused" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"privileged": True}, "root on the host"),
    ({"volumes": {"/": {"bind": "/host", "mode": "rw"}}}, "Binds mount host paths"),
    ({"network_mode": "host"}, "NetworkMode must be 'none'"),
    ({"image": "pytorch-researcher/service:latest"}, "created only from"),
    ({"labels": {}}, f"must carry the label {OWNER_LABEL}"),
])
def test_forbidden_creates_are_refused_and_nothing_is_created(client, docker_engine, tag, kwargs, fragment):
    args = {"image": SANDBOX_IMAGE, "command": ["true"], "network_mode": "none", **kwargs}
    args["labels"] = {**args.get("labels", {OWNER_LABEL: "tests-proxy"}), "test-proxy": tag}
    refused(lambda: client.containers.create(**args), fragment)
    assert not docker_engine.containers.list(all=True, filters={"label": f"test-proxy={tag}"})


@pytest.mark.parametrize("host_config, fragment", [
    ({"NetworkMode": "none", "privileged": True}, "root on the host"),  # Go reads field names in any case
    ({"NetworkMode": "none", "Privileged": False, "PRIVILEGED": True}, "differ only in case"),  # and keeps the last
])
def test_case_and_duplicate_key_tricks_are_refused(client, docker_engine, tag, host_config, fragment):
    body = {"Image": SANDBOX_IMAGE, "Cmd": ["true"], "Labels": {OWNER_LABEL: "tests-proxy", "test-proxy": tag},
            "HostConfig": host_config}
    refused(lambda: client.api._result(client.api._post_json(client.api._url("/containers/create"), data=body), True), fragment)
    assert not docker_engine.containers.list(all=True, filters={"label": f"test-proxy={tag}"})


def test_calls_on_a_container_without_the_owner_label_are_refused(client, docker_engine, tag):
    """Another service's container (here one made on the engine directly): no exec, no kill, no
    removal; its inspect shows its compose labels only, never its environment."""
    other = docker_engine.containers.create(SANDBOX_IMAGE, ["sleep", "60"], network_mode="none", environment={"SECRET": "s3"},
                                            labels={"test-proxy": tag, "com.docker.compose.service": "nats"})
    refused(lambda: client.api.exec_create(other.id, ["true"]), "exec runs a command")
    refused(lambda: client.api.kill(other.id), "is not a sandbox container")
    refused(lambda: client.api.stats(other.id, stream=False, one_shot=True), "is not a sandbox container")
    refused(lambda: client.api.remove_container(other.id, force=True), "is not a sandbox container")
    seen = client.containers.get(other.id)
    assert seen.labels == {"com.docker.compose.service": "nats"} and "SECRET" not in json.dumps(seen.attrs)
    assert docker_engine.containers.get(other.id).status == "created"


def test_pulls_volumes_and_unfiltered_listings_are_refused(client):
    refused(lambda: client.images.pull("alpine", tag="latest"), "never pull")
    refused(lambda: client.volumes.create("proxy-test"), "no volumes")
    refused(lambda: client.containers.list(all=True), "must filter on the label")
    assert isinstance(client.containers.list(all=True, filters={"label": OWNER_LABEL}), list)


def test_a_second_request_on_a_kept_alive_connection_is_checked_too(proxy_socket, docker_engine, tag):
    body = json.dumps({"Image": SANDBOX_IMAGE, "Labels": {OWNER_LABEL: "tests-proxy", "test-proxy": tag},
                       "HostConfig": {"NetworkMode": "none", "Privileged": True}}).encode()
    create = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy_socket)
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n" + create)  # pipelined, one write
        answer = b""
        while answer.count(b"HTTP/1.1 ") < 2 or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 403" in answer and b"root on the host" in answer
    assert not docker_engine.containers.list(all=True, filters={"label": f"test-proxy={tag}"})


def test_the_sandboxs_real_work_passes_through_the_proxy(proxy_socket, docker_engine, monkeypatch):
    """A warm pool (create, attach, start, update), one job on it with its cost read (stats), and
    the clean-up."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy_socket}")
    owner = f"tests-proxy-{uuid.uuid4().hex[:8]}"
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="512m"), owner=owner, pool_size=1, measure_cost=True)
    outcomes, run = [], runner.run
    runner.run = lambda *args, **kwargs: outcomes.append(run(*args, **kwargs)) or outcomes[-1]  # keeps what it returns
    try:
        runner.start_pool()
        assert runner.wait_warm(1)
        model = assemble(MODEL)
        request = ValidateRequest(source=model.source, class_name=model.class_name, input_shape=[2, 1, 8, 8])
        result = validate(request, runner, 60.0, "512m", "flag")
        assert result.ok, result.error
        assert result.output_shape == [2, 10]
        assert outcomes[0].cost.cpu_s is not None and outcomes[0].cost.peak_memory_bytes, outcomes[0].cost
    finally:
        runner.close()
    assert not docker_engine.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})
