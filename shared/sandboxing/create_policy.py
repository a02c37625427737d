"""The body of POST /containers/create, judged as the engine will read it.

The engine decodes it with Go's encoding/json: a field name matches case-insensitively (with
Unicode folding: "ſ" is "s", "K" is "k") and the last of two duplicates wins. So a body with two
keys that differ only in case is refused, every field name is folded to its canonical spelling,
and a field the policy does not know is refused: the engine would read it, the policy could not
judge it. The top level is container.Config plus HostConfig and NetworkingConfig; the engine also
reads HostConfig's fields at the top level when no HostConfig is given (a compatibility path), so
HostConfig must be given and none of its fields may appear beside it.

Raises ValueError with the reason; the proxy answers it as a refusal.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from shared.sandboxing.containers import OWNER_LABEL

Check = Callable[[Any], str | None]  # a field's value -> why it is refused, or None


def parse_body(body: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: dict[str, str] = {}
        for key, _ in items:
            if key.casefold() in seen:
                raise ValueError(f"the body names both {seen[key.casefold()]!r} and {key!r}: the engine reads keys "
                                 "regardless of case and keeps the last, so keys that differ only in case are refused")
            seen[key.casefold()] = key
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(f"the body holds {name}, which is not JSON")

    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not one JSON value: {exc}") from None


def folded_keys(obj: Any, known: Iterable[str], where: str) -> dict[str, Any]:
    """`obj`'s keys in their canonical spelling; a key that is none of `known` is refused."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object")
    canonical = {name.casefold(): name for name in known}
    out = {}
    for key, value in obj.items():
        name = canonical.get(key.casefold())
        if name is None:
            raise ValueError(f"{where} has the field {key!r}, which the proxy does not pass "
                             f"(it passes only the fields it checks: {', '.join(sorted(canonical.values()))})")
        out[name] = value
    return out


def normalise_image(name: str) -> str:
    """`repo` and `repo:latest` are one image; a digest or an id is never an allowed name."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in name else f"{name}:latest"


def _empty(value: Any) -> bool:
    return value in (None, False, 0, "", [], {})


def empty(what: str) -> Check:
    return lambda value: None if _empty(value) else f"{what}; the services set none"


def absent(what: str) -> Check:  # where even an empty value means something: [] MaskedPaths unmasks /proc
    return lambda value: None if value is None else what


def one_of(allowed: Iterable[str], what: str) -> Check:
    allowed = tuple(allowed)
    return lambda value: None if (value or "") in allowed else f"{what} must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}"


def anything(value: Any) -> None:
    return None


def security_opt(value: Any) -> str | None:
    """As the engine parses them: "no-new-privileges", else key=value (or the old key:value)."""
    for opt in value or []:
        if not isinstance(opt, str):
            return f"SecurityOpt holds {opt!r}, not a string"
        if opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            continue
        key, _, setting = opt.partition("=" if "=" in opt else ":")
        if key in ("seccomp", "apparmor") and setting.strip().casefold() == "unconfined":
            return f"SecurityOpt {opt!r} lifts the {key} confinement"
        if key == "seccomp":
            try:
                profile = json.loads(setting)
            except ValueError:
                return "SecurityOpt seccomp= must be a JSON profile"
            action = str(profile.get("defaultAction", "")) if isinstance(profile, dict) else ""
            if action.upper() in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"):
                return f"a seccomp profile whose default action is {action} confines nothing"
            continue
        if key == "apparmor":
            continue
        return f"SecurityOpt {opt!r} is not passed (only no-new-privileges, seccomp=<profile>, apparmor=<profile>)"
    return None


def device_requests(value: Any) -> str | None:
    for request in value or []:
        try:
            request = folded_keys(request, ("Driver", "Count", "DeviceIDs", "Capabilities", "Options"), "a DeviceRequest")
        except ValueError as exc:
            return str(exc)
        sets = request.get("Capabilities") or []
        if request.get("Driver") not in (None, "", "nvidia") or not sets or not all(
                isinstance(caps, list) and "gpu" in caps for caps in sets) or not _empty(request.get("Options")):
            return f"only GPU device requests pass (driver nvidia, capabilities [[\"gpu\"]]), not {request!r}"
    return None


def oom_score_adj(value: Any) -> str | None:
    return None if value is None or (isinstance(value, int) and value >= 0) else "a negative OomScoreAdj makes the host's own processes die first"


def nested(known: dict[str, Check], where: str) -> Check:
    def check(value: Any) -> str | None:
        try:
            fields = folded_keys(value, known, where)
        except ValueError as exc:
            return str(exc)
        return next((why for name, field in fields.items() if (why := known[name](field))), None)
    return check


CONFIG_ANY = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
              "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "WorkingDir", "Entrypoint",
              "NetworkDisabled", "MacAddress", "OnBuild", "StopSignal", "StopTimeout", "Shell", "Labels")
# HostConfig fields that only size or shape the container itself
HOST_ANY = ("AutoRemove", "CapDrop", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "PublishAllPorts",
            "ReadonlyRootfs", "Tmpfs", "ShmSize", "ConsoleSize", "Init", "StorageOpt", "CpuShares", "Memory", "NanoCpus",
            "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
            "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "KernelMemory",
            "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness", "PidsLimit", "Ulimits",
            "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth", "ContainerIDFile")
HOST_CHECKED: dict[str, Check] = {
    "Privileged": empty("a privileged container is root on the host"),
    "CapAdd": empty("CapAdd gives capabilities back"),
    "Binds": empty("Binds mount host paths"), "Mounts": empty("Mounts mount host paths or volumes"),
    "VolumesFrom": empty("VolumesFrom mounts another container's volumes"), "VolumeDriver": empty("VolumeDriver"),
    "Devices": empty("Devices pass host devices"), "DeviceCgroupRules": empty("DeviceCgroupRules open host devices"),
    "DeviceRequests": device_requests,
    "Links": empty("Links reach other containers"), "PortBindings": empty("PortBindings publish ports"),
    "Sysctls": empty("Sysctls change kernel settings"), "CgroupParent": empty("CgroupParent moves it out of its cgroup"),
    "Cgroup": empty("Cgroup joins another cgroup"), "OomKillDisable": empty("OomKillDisable lets it exhaust the host's memory"),
    "CpuRealtimePeriod": empty("real-time CPU time"), "CpuRealtimeRuntime": empty("real-time CPU time"),
    "MaskedPaths": absent("MaskedPaths, even empty, unmasks /proc and /sys paths"),
    "ReadonlyPaths": absent("ReadonlyPaths, even empty, makes /proc paths writable"),
    "NetworkMode": lambda value: None if value == "none" else f"NetworkMode must be 'none' (no network), not {value!r}",
    "PidMode": one_of(("",), "PidMode (the host's or another container's processes)"),
    "UTSMode": one_of(("",), "UTSMode"), "UsernsMode": one_of(("",), "UsernsMode"),
    "IpcMode": one_of(("", "private", "none"), "IpcMode"), "CgroupnsMode": one_of(("", "private"), "CgroupnsMode"),
    "Isolation": one_of(("", "default"), "Isolation"),
    "SecurityOpt": security_opt, "OomScoreAdj": oom_score_adj,
    "RestartPolicy": nested({"Name": one_of(("", "no"), "RestartPolicy.Name"), "MaximumRetryCount": anything}, "RestartPolicy"),
    "LogConfig": nested({"Type": one_of(("", "none", "json-file", "local"), "LogConfig.Type (a log driver that ships "
                                        "logs elsewhere reaches the network)"), "Config": anything}, "LogConfig"),
}


def check_create(body: Any, images: frozenset[str], runtimes: frozenset[str]) -> dict[str, Any]:
    """-> the body in canonical spelling, to forward; ValueError saying what is refused."""
    runtime = one_of(sorted(runtimes), "Runtime (an OCI runtime)")
    if isinstance(body, dict) and body and all(key.casefold() != "hostconfig" for key in body):
        raise ValueError("the create has no HostConfig: the engine would read host settings from the top level")
    top = folded_keys(body, (*CONFIG_ANY, "Image", "Volumes", "HostConfig", "NetworkingConfig", "Runtime"), "the create")
    image = top.get("Image")
    if not isinstance(image, str) or normalise_image(image) not in images:
        raise ValueError(f"containers may be created only from {', '.join(sorted(images))}, not {image!r}")
    labels = top.get("Labels")
    if not isinstance(labels, dict) or not labels.get(OWNER_LABEL):
        raise ValueError(f"a container must carry the label {OWNER_LABEL} (the proxy passes calls on such containers only)")
    host_checks = {**{name: anything for name in HOST_ANY}, **HOST_CHECKED, "Runtime": runtime}
    host = folded_keys(top.get("HostConfig"), host_checks, "HostConfig")
    host.setdefault("NetworkMode", None)  # absent is the default bridge network
    why = (next((why for name, value in host.items() if (why := host_checks[name](value))), None)
           or empty("Config.Volumes makes volumes")(top.get("Volumes")) or runtime(top.get("Runtime"))
           or nested({"EndpointsConfig": empty("EndpointsConfig joins networks")}, "NetworkingConfig")(top.get("NetworkingConfig")))
    if why:
        raise ValueError(why)
    top["HostConfig"] = host
    return top
