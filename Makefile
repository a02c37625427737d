# pytorch-researcher: developer entry points (GNU make). `make help` lists the targets.

PY          ?= python3.11
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
GOAL        ?= small CNN for the digits data reaching 90% accuracy
DATASET     ?= digits
TARGET      ?= 0.90
ITERATIONS  ?= 4
SEEDS       ?= 2
PYTEST_ARGS ?=
# Docker Compose: the v2 plugin where it exists, else docker-compose 1.29 (Debian's).
# Evaluated only when used.
COMPOSE     ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
                       elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

export TORCH_SPEC

.DEFAULT_GOAL := help
.PHONY: help venv images test run clean bench-sandbox bench-eval

help:
	@echo "Targets:"
	@echo "  venv    create $(VENV) ($(PY)), install $(TORCH_SPEC), then -e '.[test]'"
	@echo "  images  build the base image, the wheelhouse and the sandbox image (scripts/build-images.sh)"
	@echo "  test    venv + images, then $(VENV)/bin/pytest -q \$$(PYTEST_ARGS)"
	@echo "  run     venv + images, then researcher run \"\$$(GOAL)\" (DATASET, TARGET, ITERATIONS, SEEDS)"
	@echo "  clean   remove build/ and $(VENV)"
	@echo "  bench-sandbox  validation latency of a small CNN, cold and pooled (p50, p95, ratio)"
	@echo "  bench-eval     training samples/s of the engine against a plain PyTorch loop, and the ratio"
	@echo "  service-image  build the image the compose stack runs from (scripts/build-images.sh service)"
	@echo "  up      images + service-image, then $(COMPOSE) up -d (compose.yaml; NATS on 127.0.0.1:4222)"
	@echo "  down    $(COMPOSE) down (the JetStream volume stays)"
	@echo "  logs    $(COMPOSE) logs \$$(LOGS_ARGS) (default: -f --tail=200)"
	@echo "  ps      $(COMPOSE) ps"
	@echo "Variables: PY=$(PY) VENV=$(VENV) TORCH_SPEC=$(TORCH_SPEC) DATASET=$(DATASET) TARGET=$(TARGET)"
	@echo "           ITERATIONS=$(ITERATIONS) SEEDS=$(SEEDS) GOAL=\"$(GOAL)\""

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
	  echo "  Install it:  apt-get update && apt-get install -y docker.io docker-compose debootstrap" >&2; \
	  echo "  Start it:    setsid dockerd >/var/log/dockerd.log 2>&1 &   (then wait for 'docker info')" >&2; \
	  echo "  (.ci/run does both.)" >&2; \
	  exit 1; }
	bash scripts/build-images.sh

# pytest's own exit status is kept in build/pytest.rc (make itself exits 2 on any failure).
test: venv images
	@mkdir -p build; rm -f build/pytest.rc
	$(VENV)/bin/pytest -q $(PYTEST_ARGS); rc=$$?; echo $$rc > build/pytest.rc; exit $$rc

run: venv images
	$(VENV)/bin/researcher run "$(GOAL)" --dataset $(DATASET) --target-accuracy $(TARGET) \
	  --max-iterations $(ITERATIONS) --num-seeds $(SEEDS)

clean:
	rm -rf build $(VENV)

BENCH_ARGS ?=
bench-sandbox: venv images
	$(VENV)/bin/python -m benchmarks.bench_sandbox $(BENCH_ARGS)

bench-eval: venv
	$(VENV)/bin/python -m benchmarks.bench_eval $(BENCH_ARGS)

# ---------------------------------------------------------------------------------------------
# The compose stack (compose.yaml): nats + planner, assembler, sandbox, evaluator, all from
# pytorch-researcher/service:latest (services/Dockerfile). Not part of `images`/`test`: CI never
# builds the service image.
# ---------------------------------------------------------------------------------------------
.PHONY: service-image up down logs ps compose-check
LOGS_ARGS ?= -f --tail=200

compose-check:
	@test -n "$(COMPOSE)" || { echo "error: neither 'docker compose' (v2) nor docker-compose (1.29) is installed;" \
	  "apt-get install -y docker-compose" >&2; exit 1; }

# Base image, build/service-wheels and the service image; skipped when up to date.
service-image:
	@docker info >/dev/null 2>&1 || { echo "error: the Docker engine does not answer (docker info); see 'make images'." >&2; exit 1; }
	bash scripts/build-images.sh service

# The sandbox image (the services start its containers) and the service image, then the stack.
up: compose-check images
	@$(MAKE) --no-print-directory service-image
	$(COMPOSE) up -d

# Stops and removes the containers; the JetStream volume stays (`$(COMPOSE) down -v` drops it).
down: compose-check
	$(COMPOSE) down

logs: compose-check
	$(COMPOSE) logs $(LOGS_ARGS)

ps: compose-check
	$(COMPOSE) ps
