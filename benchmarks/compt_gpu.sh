#!/usr/bin/env bash
# One call on a GPU machine: CoMPT's training throughput beside GPS (graphs/s, batch 32), then
# the whole BBBP attribution table (benchmarks/suites/compt-attribution-bbbp.yaml: 6 columns x
# 5 seeds, CoMPT under the GraphSAM paper's protocol) and its GPS control
# (compt-attribution-bbbp-gps.yaml), one cell at a time on the GPU.
#
#   benchmarks/compt_gpu.sh [OUT_DIR]
#
# The GPU machine may lack RDKit: featurize here first into a cache folder that travels with
# the tree, and point MOLSAM_CACHE_DIR at it there (the stores are found by the data file's hash):
#   MOLSAM_CACHE_DIR=.molsam_cache MOLSAM_DATA_DIR=../shared/data/moleculenet/raw \
#     molsam featurize bbbp --out /tmp/unused   # GPS store; CoMPT's: molsam train ... --set train.epochs=1
# Environment: PYTHON (default python3), MOLSAM_DATA_DIR (default ../shared/data/moleculenet/raw),
# MOLSAM_CACHE_DIR (default .molsam_cache), BENCH_TIMEOUT and GRID_TIMEOUT (seconds).
set -uo pipefail
OUT_DIR=${1:-${OUT:-compt_gpu_out}}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MOLSAM_DATA_DIR=${MOLSAM_DATA_DIR:-$PWD/../shared/data/moleculenet/raw}
export MOLSAM_CACHE_DIR=${MOLSAM_CACHE_DIR:-$PWD/.molsam_cache}
status=0
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT_DIR/env.txt" 2>&1
timeout "${BENCH_TIMEOUT:-300}" "$PY" benchmarks/compt_throughput.py --device cuda --rounds 3 \
  2>&1 | tee "$OUT_DIR/throughput.txt" || status=1
# The grid resumes cell by cell: a call cut short by GRID_TIMEOUT continues on the next call.
for suite in compt-attribution-bbbp compt-attribution-bbbp-gps; do  # CoMPT, then its GPS control
  timeout "${GRID_TIMEOUT:-3000}" "$PY" -m molsam benchmark "benchmarks/suites/$suite.yaml" \
    --out "$OUT_DIR/$suite" --jobs 1 > "$OUT_DIR/$suite.log" 2>&1 || status=1
  tail -30 "$OUT_DIR/$suite.log"
done
exit $status
