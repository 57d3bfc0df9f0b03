#!/usr/bin/env bash
# The GPU check in one call: proves hytron's CUDA paths and records tokens/s, MFU and peak memory.
#   bash bench/gpu.sh --out DIR             one H200: <= 8 minutes (global budget 480 s, per-stage budgets)
#   bash bench/gpu.sh --dry-run --out DIR   CPU, tiny sizes, every stage executed (CI runs this)
# Writes DIR/summary.json (rewritten after every stage), DIR/summary.md, DIR/tests.log and
# DIR/run.log (this output). Other arguments go to bench/gpu_check.py (--budget, --stages, --batch, --seq).
set -uo pipefail
cd "$(dirname "$0")/.."
out=""
prev=""
for a in "$@"; do
  [[ "$prev" == "--out" ]] && out="$a"
  [[ "$a" == --out=* ]] && out="${a#--out=}"
  prev="$a"
done
if [[ -z "$out" ]]; then
  echo "bench/gpu.sh: --out DIR is required" >&2
  exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
python3 bench/gpu_check.py "$@" 2>&1 | tee "$out/run.log"
