# The two commands of the README, and the pieces they are made of.
# Every target sets up what it needs itself: a fresh machine runs `make demo` or `make test` and nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV = $(shell bash scripts/setup-env.sh)
SPEC ?= examples/digits-pbt.yaml

.PHONY: demo test k8s-tools bench bench-quick bench-operator crds

## demo: a real search on a built-in workload with the embedded engine, ending with the best schedule.
demo:
	@venv="$(VENV)"; \
	"$$venv/bin/schedsearch" run $(SPEC) && \
	"$$venv/bin/schedsearch" best $$("$$venv/bin/python" -c "import yaml,sys; print(yaml.safe_load(open('$(SPEC)'))['metadata']['name'])") && \
	echo && echo "To see it in a browser: $$venv/bin/schedsearch ui, then open http://127.0.0.1:8080/"

## test: lint, type checks, then every test layer (unit, real API server, end to end).
test:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	echo "== lint"; python -m ruff check .; python -m ruff format --check .; \
	echo "== types"; python -m mypy schedsearch controller trainers; \
	echo "== test cluster binaries"; export SCHEDSEARCH_K8S_BIN="$$(bash scripts/build-k8s-tools.sh)"; \
	echo "== browser for the UI test"; export SCHEDSEARCH_CHROMEDRIVER="$$(bash scripts/install-browser.sh || true)"; \
	echo "== tests"; python -m pytest -q -p no:cacheprovider tests

## k8s-tools: build (once per pinned version) etcd, kube-apiserver, kube-controller-manager, kubectl, helm.
k8s-tools:
	@bash scripts/build-k8s-tools.sh

## bench-quick / bench: the benchmark report (search quality against tuned baselines, overhead).
bench-quick:
	@venv="$(VENV)"; "$$venv/bin/python" -m schedsearch.bench --profile quick --out benchmarks/quick

bench:
	@venv="$(VENV)"; "$$venv/bin/python" -m schedsearch.bench --profile full --out benchmarks/full

## bench-operator: the operator's overhead on the test cluster (apply -> pods, controller CPU/RSS).
bench-operator:
	@venv="$(VENV)"; export SCHEDSEARCH_K8S_BIN="$$(bash scripts/build-k8s-tools.sh)"; \
	"$$venv/bin/python" -m tests.cluster.bench --out benchmarks/operator

## crds / chart-manifest: regenerate what is generated from the spec models and the chart.
crds:
	@venv="$(VENV)"; "$$venv/bin/python" -m schedsearch.api.crd --out operator/crds && \
	"$$venv/bin/python" -m schedsearch.chart_crds --src operator/crds --out charts/schedsearch/templates/crds && \
	"$$venv/bin/python" -m schedsearch.chart_values --out charts/schedsearch/values.schema.json --values charts/schedsearch/values.yaml && \
	bash scripts/render-install-manifest.sh
