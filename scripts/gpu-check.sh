#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the engine's CUDA path against plain and reference loops,
# its GPU figures against torch.cuda and nvidia-smi, and quick-evaluator end to end, as one table.
# Made for a bare GPU machine with Python and CUDA torch but no Docker and no package index: it runs
# from the working tree, with the packages the machine lacks carried beside it as wheels.
#
#   scripts/gpu-check.sh [--device cuda|cpu] [--json FILE]   run the check (default: cuda)
#   scripts/gpu-check.sh wheels                               fill $GPU_WHEELS here (needs pip and the index)
#
# On a lent device machine (a checkout whose build/gpu-wheels was filled first; build/ is ignored, so carry it):
#   run(command="bash scripts/gpu-check.sh --json $OUT/gpu-check.json", carry=["build/gpu-wheels"], timeout_s=540)
# Exit status: 0 every step ok; 1 a step failed or timed out (its row says why; --json keeps its stderr);
# 2 this machine lacks a package; 3 no CUDA here, nothing measured.
#
# Environment:
#   PYTHON            the interpreter that has torch (default: python3)
#   GPU_WHEELS        the wheels folder (default: build/gpu-wheels); installed with --target into
#                     GPU_CHECK_SITE (default /tmp/gpu-check-site) when it holds any
#   GPU_CHECK_TIMEOUT seconds for the whole check (default 470: under 8 minutes)
#   WHEEL_PYTHON      the target machine's Python for `wheels` (default 3.12)
#   VENV_PY           the environment whose versions `wheels` fetches (default .venv/bin/python)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
WHEELS="${GPU_WHEELS:-$ROOT/build/gpu-wheels}"

if [ "${1:-}" = wheels ]; then
    # What the check imports beyond torch, numpy, scikit-learn and scipy (which a GPU machine's PyTorch
    # image has): the versions this checkout's environment runs, for the target's CPython and
    # manylinux x86_64. No torch: the machine has its own CUDA build, and the wheels must stay small.
    VENV_PY="${VENV_PY:-$ROOT/.venv/bin/python}"
    PIP="${PIP:-$VENV_PY -m pip}"
    specs="$("$VENV_PY" -c 'import importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in ("msgspec", "structlog", "nats-py")))')" \
        || { echo "gpu-check: cannot read the versions from $VENV_PY (run make venv first, or set VENV_PY)" >&2; exit 2; }
    mkdir -p "$WHEELS"
    platforms=""
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms="$platforms --platform $p"
    done
    # shellcheck disable=SC2086  # the words of $PIP, $platforms and $specs are meant to split
    $PIP download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp \
        $platforms -d "$WHEELS" $specs || { echo "gpu-check: pip download of $specs failed" >&2; exit 2; }
    du -sh "$WHEELS"
    exit 0
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE="${GPU_CHECK_SITE:-/tmp/gpu-check-site}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "gpu-check: installing the wheels of $WHEELS into $SITE failed (see above)" >&2; exit 2; }
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
missing="$("$PYTHON" -c 'import importlib.util as u; print(" ".join(n for n in ("torch", "numpy", "sklearn", "scipy", "msgspec", "structlog", "nats") if u.find_spec(n) is None))')"
if [ -n "$missing" ]; then
    echo "gpu-check: $PYTHON lacks: $missing; carry them as wheels in $WHEELS (scripts/gpu-check.sh wheels)" >&2
    exit 2
fi
exec timeout -k 10 "${GPU_CHECK_TIMEOUT:-470}" "$PYTHON" -m benchmarks.gpu_check "$@"
