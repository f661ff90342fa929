#!/usr/bin/env bash
# One call on a GPU machine: the CUDA test suite, then the training throughput table
# (PyG GPSConv + DataLoader vs molsam eager vs molsam captured; adam/sam/graphsam; fp32/bf16;
# batch 32/128/512; hidden 256 x 4 layers), then the cost of train.deterministic.
#
#   benchmarks/gpu_check.sh STORE [OUT_DIR]
#
# STORE is a store featurized on any machine (the GPU machine may lack RDKit), e.g.
#   molsam featurize bbbp --out featurized/bbbp      # writes featurized/bbbp/store.pt
# OUT_DIR (default: $OUT, else gpu_check_out) receives gpu_tests.txt, throughput.txt/.json,
# deterministic.txt/.json and env.txt. Environment: PYTHON (default python3), TESTS_TIMEOUT,
# BENCH_TIMEOUT, DET_TIMEOUT (seconds), BENCH_ARGS and DET_ARGS (extra arguments, last wins),
# DEVICE (default cuda; DEVICE=cpu with small *_ARGS is a smoke test of this script).
set -uo pipefail
STORE=${1:?usage: benchmarks/gpu_check.sh STORE.pt [OUT_DIR]}
OUT_DIR=${2:-${OUT:-gpu_check_out}}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
cd "$(dirname "$0")/.."
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MOLSAM_TEST_STORE="$STORE"
status=0

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" - <<'PYEOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "numpy", "sklearn", "yaml", "pytest", "torch_geometric", "rdkit"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # report, never stop: the tests skip what cannot run
        print(f"{name} MISSING ({type(exc).__name__}: {exc})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
} 2>&1 | tee "$OUT_DIR/env.txt"

echo "== CUDA tests (tests/gpu, store $STORE)"
timeout "${TESTS_TIMEOUT:-200}" "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 \
  | tee "$OUT_DIR/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== throughput (graphs/s)"
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-330}" "$PY" benchmarks/train_throughput.py --store "$STORE" \
  --device "$DEVICE" --hidden 256 --layers 4 --batch-sizes 32 128 512 --precisions fp32 bf16 \
  --optimizers adam sam graphsam --modes pyg eager static --warmup-epochs 2 --rounds 3 \
  --json "$OUT_DIR/throughput.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT_DIR/throughput.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# shellcheck disable=SC2086
echo "== train.deterministic cost (graphsam, batch 128; compare with the table above)"
timeout "${DET_TIMEOUT:-90}" "$PY" benchmarks/train_throughput.py --store "$STORE" \
  --device "$DEVICE" --hidden 256 --layers 4 --batch-sizes 128 --precisions fp32 bf16 \
  --optimizers graphsam --modes eager static --warmup-epochs 2 --rounds 3 --deterministic \
  --json "$OUT_DIR/deterministic.json" ${DET_ARGS:-} 2>&1 | tee "$OUT_DIR/deterministic.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

exit $status
