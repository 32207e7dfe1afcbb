#!/usr/bin/env bash
# One call that verifies the whole GPU path (issue 15): the GPU tests (pytest -m gpu), then the GPU benchmarks
# (MNIST-LR paper setting: reference loop vs chunk-outer, time-outer and reverse; full Fashion-MNIST LR side by side
# and the 15-epoch precompute into a verified store; the paper's CNN settings). Target: under 8 minutes on one GPU.
# Writes one results file: benchmarks/results/gpu_check.json (or --out FILE).
#
#   benchmarks/gpu_check.sh                  # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --cpu-quick      # the same steps on the CPU at toy sizes (smoke test; the suite runs it)
#
# Exit codes: 0 all steps passed; 1 a step failed (named on the last line, details in the results file);
# 2 bad arguments; 3 no CUDA GPU (and no --cpu-quick).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
quick=()
out=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-quick) quick=(--cpu-quick) ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a file name" >&2; exit 2; }; out=(--out "$2"); shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --cpu-quick, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#quick[@]} -eq 0 ] && ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA GPU visible to torch (torch.cuda.is_available() is False): run it on a GPU machine, or pass --cpu-quick for the CPU smoke form" >&2
  exit 3
fi
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu_check.py "${quick[@]}" "${out[@]}"
