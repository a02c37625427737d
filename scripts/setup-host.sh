#!/usr/bin/env bash
# The machine's own set-up, before any venv or image: the system packages (make, Python 3.11 with
# venv, the Docker engine and client, compose, debootstrap for the local base image), a
# running Docker engine, and gVisor's runsc registered with it where Debian has it. Called by `make test`, `make run` and .ci/run (`make setup` alone).
#
# Idempotent: what is there is left alone, so a second call costs a fraction of a second. It
# installs with apt-get as root, or through passwordless sudo; where it cannot (another user, no
# apt-get), it changes nothing and stops at once with the commands to type.
#
# Environment: PY (default python3.11) and VENV (default .venv), as the Makefile passes them;
# DOCKERD_LOG (default /var/log/dockerd.log) where a dockerd it starts writes.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PY="${PY:-python3.11}"
VENV="${VENV:-.venv}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
ENGINE_WAIT_S=60

T_PHASE=0
phase_start() { T_PHASE=$(date +%s); echo "==> [setup] $*"; }
phase_end()   { echo "    [setup] $* ($(( $(date +%s) - T_PHASE ))s)"; }

# How this script becomes root: "" (it is root), "sudo -n" (passwordless sudo), or "none".
if [ "$(id -u)" -eq 0 ]; then
    ROOT_VIA=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    ROOT_VIA="sudo -n"
else
    ROOT_VIA="none"
fi
as_root() { if [ -z "$ROOT_VIA" ]; then "$@"; else $ROOT_VIA "$@"; fi; }
# A prefix for the commands printed for a person: "" as root, "sudo " otherwise.
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo "; fi

# cannot WHY COMMAND...: stop, changing nothing, with the commands that would do it by hand.
cannot() {
    local why=$1
    shift
    {
        echo "error: $why"
        echo "Type these, then run the make target (or .ci/run) again:"
        printf '    %s\n' "$@"
    } >&2
    exit 1
}

# ---- 1. system packages ----
phase_start "system packages"
missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
# A venv needs Python 3.11 with ensurepip, which Debian ships apart (python3.11-venv); not needed
# once the venv exists.
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$PY" = python3.11 ]; then
        missing+=(python3.11 python3.11-venv)
    else
        echo "error: PY=$PY cannot make a venv (no such command, or no ensurepip/venv module); give a Python 3.11 that can: make test PY=/path/to/python3.11" >&2
        exit 1
    fi
fi
# A Docker client alone (e.g. /usr/local/bin/docker) is no engine: dockerd must be there too.
{ command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; } || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
# debootstrap makes the local base image where no registry is reachable (scripts/build-images.sh);
# installed where apt-get can, never a reason to stop elsewhere.
if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then missing+=(debootstrap); fi
# Chromium and its driver: the dashboard's browser test (tests/integration/test_dashboard_browser.py,
# Selenium) drives Debian's build, since no browser can be downloaded here; like debootstrap, only
# where apt-get can.
if command -v apt-get >/dev/null 2>&1; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    phase_end "make, Python 3.11, docker, compose, debootstrap and chromium already installed"
elif ! command -v apt-get >/dev/null 2>&1; then
    needs=()
    for pkg in "${missing[@]}"; do
        case $pkg in
            make) needs+=("make");;
            python3.11) needs+=("Python 3.11 with its venv module");;
            docker.io) needs+=("the Docker Engine and its client (dockerd, docker)");;
            docker-compose) needs+=("Docker Compose (docker-compose, or the docker compose plugin)");;
        esac
    done
    needed=$(printf '%s; ' "${needs[@]}")
    cannot "this machine has no apt-get, so this script cannot install what is missing: ${needed%; }." \
        "# install those with this system's package manager (the Docker Engine: https://docs.docker.com/engine/install/), then:" \
        "${SUDO}systemctl start docker    # or, without systemd: ${SUDO}sh -c 'setsid dockerd >$DOCKERD_LOG 2>&1 &'"
elif [ "$ROOT_VIA" = none ]; then
    cannot "missing: ${missing[*]}; installing them needs root, and $(id -un) is not root and has no passwordless sudo." \
        "sudo apt-get update && sudo apt-get install -y ${missing[*]}" \
        "sudo usermod -aG docker $(id -un)    # then log in again, so that $(id -un) may use the engine"
else
    echo "    installing with apt-get: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    phase_end "installed ${missing[*]}"
fi

# ---- 2. the Docker engine ----
phase_start "docker engine"
engine_answers() { docker info >/dev/null 2>&1; }
# The engine runs but this user may not use its socket: no amount of starting it will help.
# (Not `docker info | grep`: under pipefail, docker's own failure would fail the pipe.)
denied() { case "$(docker info 2>&1)" in *"ermission denied"*) return 0;; *) return 1;; esac; }

if engine_answers; then
    phase_end "already running"
else
    if denied; then
        cannot "the Docker engine runs, but $(id -un) may not use it (permission denied on its socket)." \
            "sudo usermod -aG docker $(id -un)    # then log in again (or: newgrp docker)"
    fi
    if [ "$ROOT_VIA" = none ]; then
        cannot "the Docker engine does not answer (docker info), and starting it needs root; $(id -un) is not root and has no passwordless sudo." \
            "sudo systemctl start docker    # or, without systemd: sudo sh -c 'setsid dockerd >$DOCKERD_LOG 2>&1 &'" \
            "sudo usermod -aG docker $(id -un)    # once, then log in again, so that $(id -un) may use the engine"
    fi
    # systemd, where it is PID 1, owns the engine (apt-get's docker.io enables its unit);
    # elsewhere (containers, CI machines) dockerd runs detached from this shell.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        echo "    systemctl start docker"
        as_root systemctl start docker || true
    fi
    if ! engine_answers && ! denied; then
        echo "    starting dockerd (log: $DOCKERD_LOG)"
        as_root sh -c "setsid dockerd >'$DOCKERD_LOG' 2>&1 </dev/null &"
    fi
    for _ in $(seq 1 "$ENGINE_WAIT_S"); do
        if engine_answers || denied; then break; fi
        sleep 1
    done
    if denied; then
        cannot "the Docker engine now runs, but $(id -un) may not use it (permission denied on its socket)." \
            "sudo usermod -aG docker $(id -un)    # then log in again (or: newgrp docker)"
    fi
    if ! engine_answers; then
        echo "error: the Docker engine did not answer within ${ENGINE_WAIT_S} s; last lines of $DOCKERD_LOG:" >&2
        as_root tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    phase_end "started $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?')"
fi

# ---- 3. gVisor (runsc), where Debian has it ----
# The sandbox runs generated code under gVisor when the engine lists runsc (and a probe container
# runs under it), else under runc with its own seccomp profile (shared/sandboxing/boundary.py):
# so nothing here is a reason to fail. GVISOR=no skips it. Registering keeps every other
# daemon.json setting, and a runsc entry that is there already is the owner's and left alone.
phase_start "gVisor (runsc)"
engine_runtimes() { docker info --format '{{range $name, $_ := .Runtimes}}{{$name}} {{end}}' 2>/dev/null || true; }
has_runsc() { case " $(engine_runtimes) " in *" runsc "*) return 0;; *) return 1;; esac; }
if [ "${GVISOR:-yes}" = no ]; then
    phase_end "skipped (GVISOR=no): the sandbox runs under runc with its seccomp profile"
elif has_runsc; then
    phase_end "the engine lists runsc already"
else
    if ! command -v runsc >/dev/null 2>&1 && [ "$ROOT_VIA" != none ] && command -v apt-get >/dev/null 2>&1 \
            && apt-cache show runsc >/dev/null 2>&1; then
        echo "    installing with apt-get: runsc"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc || echo "    (runsc did not install: runc it is)"
    fi
    py=$(command -v python3 || command -v "$PY" || true)
    if ! command -v runsc >/dev/null 2>&1; then
        phase_end "runsc is not installed (not in this system's packages): the sandbox runs under runc with its seccomp profile"
    elif [ "$ROOT_VIA" = none ] || [ -z "$py" ]; then
        phase_end "runsc is installed but not registered with the engine (needs root and python3): the sandbox runs under runc"
    else
        here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
        if changed=$(as_root "$py" "$here/register-runsc.py" "$(command -v runsc)"); then
            if [ "$changed" = registered ]; then
                # dockerd rereads daemon.json's runtimes on SIGHUP; running containers are untouched
                if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker; then
                    as_root systemctl reload docker || true
                else
                    as_root kill -HUP $(pidof dockerd) || true
                fi
                for _ in $(seq 1 20); do has_runsc && break; sleep 0.5; done
            fi
            if has_runsc; then phase_end "runsc registered with the engine (/etc/docker/daemon.json)"
            else phase_end "runsc is in daemon.json but the engine does not list it yet (restart dockerd): runc meanwhile"; fi
        else
            phase_end "daemon.json left as it was (see above): the sandbox runs under runc with its seccomp profile"
        fi
    fi
fi
