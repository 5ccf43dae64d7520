#!/usr/bin/env bash
# One command for a lent GPU (< 8 minutes): install the gpu extra if needed, the test suite on
# the CUDA backend, the static report, then bench_gpu.py and the roofline beside measured times.
# Everything lands in ONE results file: $OUT/gpu_check.md (OUT defaults to ./gpu_check_out).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
RES="$OUT/gpu_check.md"
PY="${PY:-python3}"
unset NUMBA_ENABLE_CUDASIM
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

section() { printf '\n## %s\n\n```\n' "$1" >>"$RES"; }
endsec() { printf '```\n' >>"$RES"; }
# One call must finish in under 8 minutes: every step gets min(its cap, what is left of 470 s),
# and a step with under 10 s left is skipped (and fails the check) instead of overrunning.
BUDGET=470
left() { local cap=$1 rem=$((BUDGET - SECONDS)); [ "$rem" -lt "$cap" ] && cap=$rem; echo "$cap"; }
run() {  # run CAP CMD...: the command under the remaining budget
  local t; t=$(left "$1"); shift
  if [ "$t" -lt 10 ]; then echo "skipped: out of time" >>"$RES"; return 1; fi
  timeout "$t" "$@"
}

{
  echo "# GPU check ($(date -u +%FT%TZ))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  echo '```'
} >"$RES"

if ! "$PY" -c "import cupy, numba_cuda" 2>/dev/null; then
  section "install (.[gpu,dev])"
  run 120 "$PY" -m pip install -q -e ".[gpu,dev]" >>"$RES" 2>&1 || status=1
  endsec
fi

section "tests on the CUDA backend (kernels vs CPU, scheme, mhe, dmhe)"
run 200 "$PY" -m pytest -q -x -m "not slow" --backend cuda tests >>"$RES" 2>&1 || status=1
endsec

section "static report (sm_90)"
run 60 "$PY" benchmarks/gpu_static.py --cc 90 --jobs 8 --out "$OUT/GPU_STATIC.md" \
  --json "$OUT/static.json" >/dev/null 2>>"$RES" || status=1
endsec

section "bench_gpu.py --quick --verify (NTT, K-way sum, encrypt, decrypt, decryption share, 100M-value round)"
run 160 "$PY" benchmarks/bench_gpu.py --quick --verify --out "$OUT/bench.md" >>"$RES" 2>&1 \
  || status=1
endsec
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md" >>"$RES"

section "roofline: predicted vs measured"
run 40 "$PY" benchmarks/roofline.py --static "$OUT/static.json" --measure >>"$RES" 2>&1 \
  || status=1
endsec

echo "gpu_check: exit $status after ${SECONDS}s, results in $RES" | tee -a "$RES"
exit "$status"
