#!/usr/bin/env python3
"""Write a compose override with one evaluator per GPU, each pinned to its GPU.

    GPUS=0,1 python3 scripts/gpu-compose.py [--standalone] [--out build/compose.gpu.yaml]

GPU ids (indices or UUIDs) come from $GPUS (or --gpus), else from
`nvidia-smi --query-gpu=index --format=csv,noheader`. Service `evaluator-gpu<i>` reserves GPU
<i> for itself (deploy.resources.reservations.devices) and sets RESEARCHER_EVALUATOR__GPUS=<i>,
so the training containers it starts through the host's engine get that same GPU.

Without --standalone the services join compose.yaml's stack (NATS at tls://nats:4222, started
after it); with it, compose.evaluator.yaml's (NATS_URL from the environment). Run the result on
top of that file with the CPU evaluator scaled to 0:

    docker-compose -f compose.yaml -f build/compose.gpu.yaml up -d --scale evaluator=0

The services are written out in full: YAML anchors do not reach across files, and `extends`
does not carry depends_on in docker-compose 1.29. Keep them in step with compose.yaml's
evaluator (tests/unit/test_gpu_settings.py compares them). Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

HEAD_NATS = "tls://nats:4222"
STANDALONE_NATS = ("${NATS_URL:?set NATS_URL to the head machine's NATS, "
                   "e.g. NATS_URL=tls://10.0.0.5:4222}")
# the evaluator's credential: the stack's own on the head, a copy of the head's elsewhere
HEAD_CREDENTIAL = "${RESEARCHER_CREDENTIALS:?make up sets it to the stack credentials directory (researcher credentials)}/roles/evaluator"
STANDALONE_CREDENTIAL = ("${NATS_CREDENTIALS:?set NATS_CREDENTIALS to the evaluator's credential copied from the "
                         "head (researcher credentials evaluator, on the head)}")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")  # 0, GPU-<uuid>, MIG-<uuid>


def q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def service_name(gpu_id: str) -> str:
    if gpu_id.isdigit():
        return f"evaluator-gpu{gpu_id}"
    return "evaluator-" + re.sub(r"[^a-z0-9]+", "-", gpu_id.lower()).strip("-")


def parse_ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    bad = [i for i in ids if not ID_PATTERN.match(i)]
    if bad:
        raise SystemExit(f"gpu-compose: error: not a GPU index or UUID: {', '.join(bad)}; "
                         "expected e.g. GPUS=0,1 or GPUS=GPU-6f1c2d3e-...")
    if len(set(ids)) != len(ids):
        raise SystemExit(f"gpu-compose: error: a GPU is listed twice in {text!r}; list each once, e.g. GPUS=0,1")
    return ids


def detect_ids() -> list[str]:
    cmd = ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"gpu-compose: error: GPUS is not set and `{' '.join(cmd)}` cannot run ({exc}); "
                         "list the GPUs yourself: GPUS=0,1") from None
    if out.returncode != 0:
        raise SystemExit(f"gpu-compose: error: `{' '.join(cmd)}` failed ({out.stderr.strip() or out.returncode}); "
                         "list the GPUs yourself: GPUS=0,1")
    return parse_ids(out.stdout)


def evaluator_service(gpu_id: str, standalone: bool) -> str:
    nats_url = STANDALONE_NATS if standalone else HEAD_NATS
    credential = STANDALONE_CREDENTIAL if standalone else HEAD_CREDENTIAL
    depends = "    depends_on:\n" + ("" if standalone else (
        "      nats:\n"
        "        condition: service_healthy\n")) + (
        "      dockerproxy:\n"
        "        condition: service_healthy\n")
    return (
        f"  {service_name(gpu_id)}:\n"
        "    image: pytorch-researcher/service:latest\n"
        "    init: true\n"
        "    restart: unless-stopped\n"
        "    user: root\n"
        '    entrypoint: ["python", "-m", "shared.security.entrypoint", "--user", "10002:10002", "--"]\n'
        "    tmpfs:\n"
        "      - /run/nats:mode=0700,size=1m\n"
        "    security_opt:\n"
        "      - no-new-privileges:true\n"
        '    command: ["python", "-m", "services.evaluator.main"]\n'
        "    environment:\n"
        f"      NATS_URL: {q(nats_url)}\n"
        "      RESEARCHER_DATA__DIR: /data\n"
        "      RESEARCHER_HEALTH_FILE: /tmp/researcher-health\n"
        "      # the training containers this evaluator starts get this GPU too\n"
        f"      RESEARCHER_EVALUATOR__GPUS: {q(gpu_id)}\n"
        "      DOCKER_HOST: unix:///run/docker-proxy/docker.sock\n"
        "    volumes:\n"
        "      - docker-proxy:/run/docker-proxy\n"
        "      - ${RESEARCHER_DATA_DIR:-./data}:/data:ro\n"
        "      - /sys/fs/cgroup:/sys/fs/cgroup:ro\n"
        f"      - {credential}:/run/secrets/nats:ro\n"
        f"{depends}"
        "    healthcheck:\n"
        '      test: ["CMD", "python", "-m", "shared.runtime.health"]\n'
        "      interval: 10s\n"
        "      timeout: 5s\n"
        "      retries: 6\n"
        "      start_period: 60s\n"
        "    stop_grace_period: 45s\n"
        "    logging:\n"
        "      driver: json-file\n"
        "      options:\n"
        '        max-size: "10m"\n'
        '        max-file: "3"\n'
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "            - driver: nvidia\n"
        f"              device_ids: [{q(gpu_id)}]\n"
        "              capabilities: [gpu]\n")


def render(ids: list[str], standalone: bool) -> str:
    base = "compose.evaluator.yaml" if standalone else "compose.yaml"
    header = (f"# Generated by scripts/gpu-compose.py for GPUs {', '.join(ids)}: do not edit.\n"
              f"# Use on top of {base}, with its CPU evaluator scaled to 0 (--scale evaluator=0).\n")
    return header + "services:\n" + "".join(evaluator_service(i, standalone) for i in ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default=os.environ.get("GPUS", ""),
                        help="comma-separated GPU indices or UUIDs (default: $GPUS, else nvidia-smi)")
    parser.add_argument("--standalone", action="store_true",
                        help="for compose.evaluator.yaml: NATS_URL from the environment, no nats service")
    parser.add_argument("--out", default="build/compose.gpu.yaml", help="file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    ids = parse_ids(args.gpus) if args.gpus.strip() else detect_ids()
    if not ids:
        raise SystemExit("gpu-compose: error: no GPU found; list them yourself: GPUS=0,1")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(render(ids, args.standalone))
    print(f"gpu-compose: wrote {args.out}: {', '.join(service_name(i) for i in ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
