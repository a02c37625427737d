"""The name a service's containers are owned by, which decides whose strays a starting service removes."""

import socket

import docker
import pytest

from shared.sandboxing.containers import stable_replica_name


class _Containers:
    def __init__(self, labels):
        self.labels, self.asked = labels, None

    def get(self, name):
        self.asked = name
        if self.labels is None:
            raise docker.errors.NotFound("no such container")
        return type("C", (), {"labels": self.labels})()


class _Client:
    def __init__(self, labels):
        self.containers = _Containers(labels)


COMPOSE = {"com.docker.compose.project": "lab", "com.docker.compose.service": "evaluator",
           "com.docker.compose.container-number": "2"}


@pytest.fixture(autouse=True)
def no_explicit_name(monkeypatch):
    monkeypatch.delenv("RESEARCHER_REPLICA", raising=False)


def test_a_compose_container_is_named_by_its_slot_which_survives_recreation():
    client = _Client(COMPOSE)
    assert stable_replica_name(client) == "lab-evaluator-2"
    assert client.containers.asked == socket.gethostname()  # a container's host name is its id


def test_outside_a_container_it_is_the_host_name():
    assert stable_replica_name(_Client(None)) == socket.gethostname()


def test_a_container_not_from_compose_is_the_host_name():
    assert stable_replica_name(_Client({"com.docker.compose.project": "lab"})) == socket.gethostname()


def test_an_explicit_name_wins(monkeypatch):
    monkeypatch.setenv("RESEARCHER_REPLICA", "gpu-box-0")
    assert stable_replica_name(_Client(COMPOSE)) == "gpu-box-0"
