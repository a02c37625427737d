"""What the Docker socket proxy passes: the calls the sandbox and evaluator services make, on
their own containers, and container creations that cannot reach the host. No I/O here: the proxy
(socket_proxy.py) asks `Policy.check`, and tests call it with plain bytes.

Whoever may POST /containers/create may ask for a privileged container with the host's / mounted,
so a create is judged by its body, field by field, against what the services send; a field the
policy does not know is refused rather than passed. The body forwarded is the one checked,
re-encoded, so the engine never reads bytes the policy read differently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from shared.errors import RefusedCall
from shared.sandboxing.create_policy import check_create, folded_keys, normalise_image, parse_body
from shared.sandboxing.containers import OWNER_LABEL

# API versions below this had other meanings for the same calls (before 1.24, a start's body was
# a HostConfig applied at start: a privileged container made from one the create check passed).
MIN_API_VERSION = (1, 40)
MAX_BODY_BYTES = 1 << 20  # a create with a seccomp profile is some 30 KB
_ID = r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_VERSION = re.compile(r"^/v(?P<major>[0-9]+)\.(?P<minor>[0-9]+)(?=/)")
UPDATE_FIELDS = ("CpuShares",)  # a pooled container given its job: the default CPU weight

# (method, path) -> what the call is; the path without the version prefix, percent-decoded
ROUTES: list[tuple[str, re.Pattern, str]] = [(method, re.compile(f"^{path}$"), kind) for method, path, kind in [
    ("GET", "/_ping", "engine"), ("HEAD", "/_ping", "engine"), ("GET", "/version", "engine"), ("GET", "/info", "engine"),
    ("GET", r"/images/(?P<image>[^?#]+)/json", "image"),
    ("GET", "/containers/json", "list"),
    ("POST", "/containers/create", "create"),
    ("GET", f"/containers/{_ID}/json", "inspect"),
    ("POST", f"/containers/{_ID}/(start|stop|kill|wait|attach|resize)", "owned"),
    ("GET", f"/containers/{_ID}/logs", "owned"),
    ("GET", f"/containers/{_ID}/stats", "owned"),  # a training container's cost, read before it exits
    ("POST", f"/containers/{_ID}/update", "update"),
    ("DELETE", f"/containers/{_ID}", "owned"),
]]

# Why the calls a compromised service would want are refused, for the message it gets.
REASONS: list[tuple[re.Pattern, str]] = [(re.compile(pattern), why) for pattern, why in [
    (r"^/containers/[^/]+/exec$|^/exec/", "exec runs a command inside a container (nats, the planner, any other): "
     "the services never exec"),
    (r"^/images/create$|^/images/[^/].*/(push|tag)$", "the services never pull, push or tag images: build the sandbox "
     "image on the host (`make images`)"),
    (r"^/build|^/images/load$|^/commit$", "the services never build or load images"),
    (r"^/images/", "the services only inspect the sandbox image"),
    (r"^/(volumes|networks)(/|$)", "the services use no volumes and no networks (their containers run with network none)"),
    (r"^/(swarm|services|nodes|tasks|secrets|configs)(/|$)", "the services use no swarm"),
    (r"^/plugins", "plugins run as root on the host"),
    (r"/prune$|^/system/", "pruning and the engine's own state are the host's operator's"),
    (r"^/containers/[^/]+/(archive|export|changes|copy|rename|pause|unpause|restart|top|attach/ws)$",
     "the services never make this call on a container"),
]]


@dataclass(frozen=True)
class Call:
    """A call the proxy may forward. `container` is set for one that acts on an existing
    container: the proxy inspects it first and forwards only when it carries the owner label,
    naming it by its full id (`target(id)`), so no other container can take its name meanwhile."""

    method: str
    prefix: str  # "/v1.41", or "" when the client named no version
    path: str  # percent-decoded, without the version prefix
    query: list[tuple[str, str]]
    body: bytes = b""
    container: str | None = None
    foreign_inspect: bool = False  # an inspect answered redacted (compose labels only) for another's container

    def target(self, container_id: str | None = None) -> str:
        path = self.path if container_id is None else self.path.replace(f"/containers/{self.container}", f"/containers/{container_id}", 1)
        return self.prefix + path + (f"?{urlencode(self.query)}" if self.query else "")


class Policy:
    """The allow-list: `images` are the names a container may be created from (the sandbox image)."""

    def __init__(self, images: Iterable[str], runtimes: Iterable[str] = ("", "runc", "runsc")) -> None:
        self.images = frozenset(normalise_image(image) for image in images)
        self.runtimes = frozenset(runtimes)
        self._kinds: dict[str, Callable[[Call, dict], Call]] = {
            "engine": lambda call, match: call, "image": self._image, "list": self._list, "create": self._create,
            "inspect": self._inspect, "owned": self._owned, "update": self._update}

    def check(self, method: str, target: str, body: bytes = b"") -> Call:
        """-> the call to forward, or RefusedCall saying why not."""
        split = urlsplit(target)
        path = unquote(split.path)
        prefix, path = self._version(method, path)
        if any(segment in ("", ".", "..") for segment in path.split("/")[1:]):
            raise RefusedCall(method, path, "the path is not in its clean form (empty, '.' or '..' segments)")
        query = parse_qsl(split.query, keep_blank_values=True)
        call = Call(method=method, prefix=prefix, path=path, query=query, body=body)
        for route_method, pattern, kind in ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                if body and kind not in ("create", "update"):
                    raise RefusedCall(method, path, "this call takes no body (an old API's start took a HostConfig)")
                return self._kinds[kind](call, match.groupdict())
        why = next((why for pattern, why in REASONS if pattern.search(path)),
                   "not a call the sandbox and evaluator services make, so not on the proxy's allow-list")
        raise RefusedCall(method, path, why)

    def _version(self, method: str, path: str) -> tuple[str, str]:
        match = _VERSION.match(path)
        if match is None:
            return "", path
        version = (int(match["major"]), int(match["minor"]))
        if version < MIN_API_VERSION:
            raise RefusedCall(method, path, f"API version {version[0]}.{version[1]} is older than the "
                              f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} the proxy passes")
        return match.group(0), path[match.end():]

    def _image(self, call: Call, match: dict) -> Call:
        if normalise_image(match["image"]) not in self.images:
            raise RefusedCall(call.method, call.path, f"only the sandbox image may be inspected ({', '.join(sorted(self.images))})")
        return call

    def _list(self, call: Call, match: dict) -> Call:
        """Only a listing by the owner label: its answer holds sandbox containers alone (label
        filters are ANDed, so any further filter only narrows it)."""
        filters = [value for key, value in call.query if key == "filters"]
        if len(filters) == 1:
            try:
                labels = json.loads(filters[0]).get("label")
            except (ValueError, AttributeError):
                labels = None
            names = labels if isinstance(labels, list) else list(labels) if isinstance(labels, dict) else []
            if any(isinstance(name, str) and name.split("=", 1)[0] == OWNER_LABEL for name in names):
                return call
        raise RefusedCall(call.method, call.path, f"a listing must filter on the label {OWNER_LABEL} "
                          f"(filters={{\"label\": [\"{OWNER_LABEL}\"]}}), once, so that it shows sandbox containers only")

    def _create(self, call: Call, match: dict) -> Call:
        if len(call.body) > MAX_BODY_BYTES:
            raise RefusedCall(call.method, call.path, f"the body is over {MAX_BODY_BYTES:,} bytes")
        try:
            checked = check_create(parse_body(call.body), self.images, self.runtimes)
        except ValueError as exc:
            raise RefusedCall(call.method, call.path, str(exc)) from None
        if any(key not in ("name", "platform") for key, _ in call.query):
            raise RefusedCall(call.method, call.path, "a create takes only the query parameters name and platform")
        body = json.dumps(checked, separators=(",", ":")).encode()
        return Call(method=call.method, prefix=call.prefix, path=call.path, query=call.query, body=body)

    def _inspect(self, call: Call, match: dict) -> Call:
        return Call(method=call.method, prefix=call.prefix, path=call.path, query=call.query,
                    container=match["id"], foreign_inspect=True)

    def _owned(self, call: Call, match: dict) -> Call:
        if call.method == "DELETE" and any(key == "link" and value.strip().lower() not in ("", "0", "no", "false", "none")
                                           for key, value in call.query):  # the engine's reading of a boolean
            raise RefusedCall(call.method, call.path, "removing a link is not a call the services make")
        return Call(method=call.method, prefix=call.prefix, path=call.path, query=call.query, container=match["id"])

    def _update(self, call: Call, match: dict) -> Call:
        try:
            fields = folded_keys(parse_body(call.body), UPDATE_FIELDS, "the update")
        except ValueError as exc:
            raise RefusedCall(call.method, call.path, str(exc)) from None
        body = json.dumps(fields, separators=(",", ":")).encode()
        return Call(method=call.method, prefix=call.prefix, path=call.path, query=call.query, body=body, container=match["id"])


def owned(inspect: dict[str, Any]) -> bool:
    """A container's inspect answer -> whether it is a sandbox container (carries the owner label)."""
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    return isinstance(labels, dict) and bool(labels.get(OWNER_LABEL))


def redacted(inspect: dict[str, Any]) -> dict[str, Any]:
    """Another container's inspect, cut to its id, name and compose labels: what a service reads
    of its own container to name its replica (engine.stable_replica_name), and nothing of its
    environment, mounts or command."""
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    compose = {key: value for key, value in labels.items() if key.startswith("com.docker.compose.")}
    return {"Id": inspect.get("Id"), "Name": inspect.get("Name"), "Config": {"Labels": compose}}
