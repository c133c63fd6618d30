#!/usr/bin/env bash
# Every measurement behind BENCHMARKS.md, in the order it reports them (about 2 h on 2 cores).
# Each script prints its table and writes bench/results/<name>.json; see its docstring for details.
# Usage: bench/run_all.sh [FASHION_MNIST_DIR]   (default: Debian's dataset-fashion-mnist location)
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="${1:-/usr/share/datasets/fashion-mnist}"
PY=.venv/bin/python
export DVC_NO_ANALYTICS=1
$PY -m bench.train_speed --model mlp --source "$SOURCE" --rounds 3 --epochs 3
$PY -m bench.step_time --rounds 3
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 3 --epochs 2 --variants baseline,pipeline,pipeline+spe1,pipeline+spe1+no-onednn
$PY -m bench.accuracy --source "$SOURCE" --recipe fashion-mlp --recipe fashion-cnn-small
$PY -m bench.overhead --source "$SOURCE" --rounds 5
$PY -m bench.npz_format --source "$SOURCE" --rounds 3
$PY -m bench.scaling --source "$SOURCE" --epochs 1
