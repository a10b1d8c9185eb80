# The README's commands. `make help` lists every target.
PY      ?= .venv/bin/python
SCALE   ?= quick
PYTEST  ?= $(PY) -m pytest
ARGS    ?=
FMNIST  := /usr/share/datasets/fashion-mnist
# taken before set-up, so the report's wall time includes it
START   := $(shell date +%s)

# Some machines set PYTHONDONTWRITEBYTECODE=1: then every process compiles all it imports again (a worker's
# imports: 13.6 s instead of 3.9 s, measured on a fresh venv). The venv is ours; its bytecode is kept.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup data reproduce reference test test-fast bench figures clean gpu-check gpu-wheels

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	@# pip byte-compiles every file on one core (38 of its 67 s here); instead each module is compiled when
	@# first imported and its bytecode kept (PYTHONDONTWRITEBYTECODE is unexported below)
	.venv/bin/pip install -q --no-compile -e ".[test]"
	touch $@

setup: .venv/.installed data  ## venv with symexp installed editable, plus the Fashion-MNIST package

data:  ## Debian's dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist)
	@test -d $(FMNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "note: could not install dataset-fashion-mnist (not root?); image experiments will say so"

reproduce: setup  ## every experiment at SCALE (quick: CPU, paper: GPU), figures, claims, report; ARGS="--only T"
	$(PY) scripts/reproduce.py --scale $(SCALE) --started $(START) $(ARGS)

reference: reproduce  ## refresh the committed results/reference from a SCALE=quick reproduce
	rm -rf results/reference && mkdir -p results/reference
	cp -r results/REPORT.md results/claims.csv results/jobs.csv results/figures results/reference/
	mkdir -p results/reference/audit && cp results/audit/agreement.csv results/reference/audit/

test: setup  ## the test suite (CPU; what .ci/run calls): installs what it needs first (venv, package, data)
	$(PYTEST) -q

test-fast: setup  ## the suite without the `slow` end-to-end tests
	$(PYTEST) -q -m "not slow"

bench: .venv/.installed  ## benchmarks; results under results/bench/
	$(PY) scripts/bench_ensemble.py
	$(PY) scripts/bench_resnet.py --width 0.0625 --batch 32 --steps 5 --compile

figures: .venv/.installed  ## redraw every figure and the claim ledger from the collected tables
	$(PY) -m symexp.cli plot all
	$(PY) -m symexp.cli claims

BUDGET ?= 400
gpu-check:  ## CUDA GPU: time every paper-scale experiment + the ensemble/ResNet benches within BUDGET s -> results/bench/gpu_<gpu>.json|md (bare GPU machine: make gpu-check PY=python3)
	$(PY) scripts/gpu_check.py --budget-s $(BUDGET)

gpu-wheels: .venv/.installed  ## hydra-core, omegaconf, antlr4 wheels for a GPU machine without a package index -> .gpu_wheels/
	PYTHON=$(PY) bash scripts/gpu_wheels.sh .gpu_wheels

clean:  ## remove run directories and collected tables (keeps results/reference)
	rm -rf results/runs results/tables
