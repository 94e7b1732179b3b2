# aoetl developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .state/bootstrap
KAFKA_VERSION := 4.1.1
AOETL_CACHE_DIR ?= $(HOME)/.cache/aoetl
export AOETL_CACHE_DIR

# Broker jars live in a cache outside the repo; their completion marker doubles as the make stamp.
ifeq ($(strip $(KAFKA_HOME)$(KAFKA_BOOTSTRAP_SERVERS)),)
KAFKA_JARS := $(AOETL_CACHE_DIR)/kafka/$(KAFKA_VERSION)/libs/.complete
endif

# S3Proxy, the S3-compatible server of the object-storage tests (tests/support/s3_server.py), from Maven
# Central into the same cache; the jar itself is the stamp.
S3PROXY_VERSION := 3.1.0
S3PROXY_JAR := $(AOETL_CACHE_DIR)/s3proxy/$(S3PROXY_VERSION)/s3proxy-$(S3PROXY_VERSION)-jar-with-dependencies.jar

PYTEST_ARGS ?=

.PHONY: bootstrap system-deps helm test test-secure test-slow lint typecheck dashboards k8s-render demo bench bench-startup bench-peers bench-concurrent chaos chaos-cluster screenshots dev-up dev-down clean

## bootstrap: venv + editable install, system tools (JRE, Maven, PostgreSQL), Kafka jars, S3Proxy, Helm.
## Idempotent. The example plugin is installed too: the tests load it through its entry points, like a real plugin.
EXAMPLE_PLUGIN := examples/plugins/aoetl-example-plugin
bootstrap: $(STAMPS)/venv system-deps $(KAFKA_JARS) $(S3PROXY_JAR) helm

$(STAMPS)/venv: pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e $(EXAMPLE_PLUGIN)
	@touch $@

# Cheap checks (a few ms); installs only what is missing.
system-deps:
	@scripts/bootstrap-system.sh

# Helm for the chart's tests and k8s-render: built from its Go module into .state/bin, only when missing.
helm:
	@scripts/bootstrap-helm.sh

$(KAFKA_JARS): | $(STAMPS)/venv system-deps
	$(PY) -m aoetl.devstack.kafka

$(S3PROXY_JAR): | $(STAMPS)/venv system-deps
	$(PY) -m tests.support.s3_server

## test: everything but slow tests; fixtures start a private broker/PostgreSQL unless
## KAFKA_BOOTSTRAP_SERVERS / AOETL_POSTGRES_DSN are set. "No tests collected" (exit 5) fails loudly.
test: bootstrap
	@rc=0; $(PY) -m pytest -m "not slow" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

## test-secure: the end-to-end suite once more, against the secured dev stack (aoetl dev up --secure: TLS,
## a SCRAM user per service, least-privilege ACLs), plus the secure stack's slow tests. AOETL_TEST_SECURE=1
## makes the session's broker that stack (its own: KAFKA_BOOTSTRAP_SERVERS must be unset).
test-secure: bootstrap
	AOETL_TEST_SECURE=1 $(PY) -m pytest -m "(e2e and not slow) or secure" $(PYTEST_ARGS)

## test-slow: the slow tests that are not fault tests (those are `make chaos`): stacks started from scratch,
## e.g. `aoetl dev up --services --replicas 2` as the README shows it.
test-slow: bootstrap
	$(PY) -m pytest -m "slow and not faults" $(PYTEST_ARGS)

## lint: ruff, then the import contracts of pyproject.toml [tool.importlinter] (the layering).
lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMPS)/venv
	$(VENV)/bin/mypy -p shared -p services -p aoetl

## dashboards: regenerate the Grafana dashboards (deploy/grafana/dashboards/*.json) from
## deploy/grafana/build_dashboards.py; the unit tests fail while the committed JSON is out of date.
dashboards: $(STAMPS)/venv
	$(PY) -m deploy.grafana.build_dashboards

## k8s-render: regenerate the plain manifests k8s/services.yaml and k8s/network-policies.yaml from the Helm
## chart k8s/helm/aoetl (k8s/render.py); the unit tests fail while the committed files are out of date.
k8s-render: $(STAMPS)/venv helm
	$(PY) -m k8s.render

## demo: the end-to-end demo (aoetl/demo.py); DEMO_ARGS=--keep leaves the stack and the web console running.
demo: bootstrap
	$(PY) -m aoetl.demo $(DEMO_ARGS)

## bench: throughput/latency benchmarks (bench/), results in bench/results/.
bench: bootstrap
	$(PY) -m bench

## bench-startup: cold start of the aoetl command (no broker needed; BENCH_ARGS=--submit also times
## `aoetl submit` against the broker in KAFKA_BOOTSTRAP_SERVERS), results in bench/results/bench_startup.json.
bench-startup: bootstrap
	$(PY) bench/bench_startup.py $(BENCH_ARGS)

## screenshots: one PNG per page of the web console under bench/results/ui/, taken by the console's browser
## test (tests/e2e/test_console.py: the real stack, a real run, headless Chromium) as it goes.
screenshots: bootstrap
	AOETL_UI_SCREENSHOTS=$(CURDIR)/bench/results/ui $(PY) -m pytest tests/e2e/test_console.py -q $(PYTEST_ARGS)

## bench-peers: aoetl against psql \copy, dlt (pyarrow + csv loader) and dlt's default path on one batch load
## (bench/bench_peers.py; BENCH_ARGS="--rows N --rounds R"), then an aoetl continuous pipeline against
## quix-streams draining one pre-produced topic of JSON events (bench/bench_peers_stream.py;
## STREAM_BENCH_ARGS="--events N --rounds R"), the peers in their own venv under .state/, results in
## bench/results/bench_peers.json and bench/results/bench_peers_stream.json.
PEERS_VENV := .state/peers-venv
$(PEERS_VENV)/.installed: bench/peers-requirements.txt
	@test -x $(PEERS_VENV)/bin/python || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q -r bench/peers-requirements.txt
	@touch $@

bench-peers: bootstrap $(PEERS_VENV)/.installed
	$(PY) bench/bench_peers.py $(BENCH_ARGS)
	$(PY) bench/bench_peers_stream.py $(STREAM_BENCH_ARGS)

## bench-concurrent: many small runs (3-row CSV -> PostgreSQL) submitted at once through the requests topic,
## exactly one result per run, with 1 then 2 orchestrator replicas (bench/bench_concurrent.py;
## BENCH_ARGS="--runs 10000 --rounds 1 --replicas 1,2" are the defaults), in bench/results/bench_concurrent.json.
bench-concurrent: bootstrap
	$(PY) bench/bench_concurrent.py $(BENCH_ARGS)

## chaos: every fault-injection test, including the slow ones; with SOAK_MINUTES=N also the seeded soak
## (tests/faults/soak.py; SOAK_SEED=S repeats a seed; SOAK_BROKERS=3 soaks a three-broker KRaft cluster with
## the broker faults in its matrix), which writes bench/results/soak.json.
chaos: bootstrap
	$(PY) -m pytest -m faults $(PYTEST_ARGS)
ifneq ($(strip $(SOAK_MINUTES)),)
	$(PY) -m tests.faults.soak --minutes $(SOAK_MINUTES) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) $(if $(SOAK_BROKERS),--brokers $(SOAK_BROKERS))
endif

## chaos-cluster: only the broker faults on a private three-broker KRaft cluster (part of `make chaos` too).
chaos-cluster: bootstrap
	$(PY) -m pytest tests/faults/test_faults_cluster.py -m faults $(PYTEST_ARGS)

dev-up: bootstrap
	$(VENV)/bin/aoetl dev up

dev-down:
	$(VENV)/bin/aoetl dev down

## clean: stop the dev stack, drop state and tool caches (keeps the venv and the Kafka jar cache).
clean:
	-@test -x $(VENV)/bin/aoetl && $(VENV)/bin/aoetl dev down
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

## agent-eval: the agent's evaluation set against the model in AOETL_LLM_MODEL (not part of make test).
.PHONY: agent-eval
agent-eval: bootstrap
	$(PY) -m tests.agent_eval
