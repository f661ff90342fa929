#!/usr/bin/env bash
# The reduced paper grid of docs/RESULTS.md, at the lowest CPU priority and one thread (a shared
# machine: a niced job with two threads stalls whenever one core is taken). Rerun to resume.
# The full protocol: molsam benchmark benchmarks/suites/paper.yaml --out runs/paper
set -euo pipefail
cd "$(dirname "$0")/.."
export MOLSAM_DATA_DIR="${MOLSAM_DATA_DIR:-/work/shared/data/moleculenet/raw}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
MOLSAM="${MOLSAM:-.venv/bin/molsam}"
nice -n 19 "$MOLSAM" benchmark benchmarks/suites/paper-reduced-small.yaml --out runs/paper-reduced-small
nice -n 19 "$MOLSAM" benchmark benchmarks/suites/paper-reduced-large.yaml --out runs/paper-reduced-large
