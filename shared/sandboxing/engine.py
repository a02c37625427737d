"""The Docker engine: the connection every runner uses, and the name a service's containers are
owned by."""

from __future__ import annotations

import os
import socket

import docker
from docker.errors import DockerException

from shared.errors import SandboxUnavailableError
from shared.runtime.config import replica_name


def connect_engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except DockerException as exc:
        raise SandboxUnavailableError(
            f"cannot reach the Docker engine ({exc}); start it (`dockerd`, see README) or set DOCKER_HOST"
        ) from exc


def stable_replica_name(client=None) -> str:
    """The name a service's containers are owned by: RESEARCHER_REPLICA when set; in a compose
    container, <project>-<service>-<number>, which a recreated container keeps (its id, and so its
    host name, change), so the new one removes its predecessor's strays; else the host name."""
    name = replica_name()
    if os.environ.get("RESEARCHER_REPLICA"):
        return name
    try:
        labels = (client or connect_engine()).containers.get(socket.gethostname()).labels
    except (DockerException, SandboxUnavailableError):  # not a container, or the engine cannot say
        return name
    parts = [labels.get(f"com.docker.compose.{key}") for key in ("project", "service", "container-number")]
    return "-".join(parts) if all(parts) else name
