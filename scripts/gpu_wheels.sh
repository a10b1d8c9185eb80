#!/usr/bin/env bash
# The pure-Python packages symexp needs that the GPU machine's Python 3.12 lacks, as wheels in one
# folder that a device run carries (it reaches no package index): hydra-core and omegaconf at the
# versions installed here, and their antlr4 runtime (4.9.3, published as source only: built here into
# a py3-none-any wheel). wandb and submitit stay behind: with logger=none and the basic launcher
# nothing imports them.
#
#   bash scripts/gpu_wheels.sh [DIR]          # default .gpu_wheels (git-ignored); prints its size
#
# On the GPU machine, before `python3 scripts/gpu_check.py ...`:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail

dir=${1:-.gpu_wheels}
py=${PYTHON:-.venv/bin/python}
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }

rm -rf "$dir" && mkdir -p "$dir"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
    --abi none --platform any -d "$dir" "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
"$py" -m pip wheel -q --no-deps -w "$dir" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -l "$dir"
du -sh "$dir"
