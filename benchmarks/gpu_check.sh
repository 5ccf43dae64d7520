#!/usr/bin/env bash
# One command for a lent GPU (< 8 minutes): the toolchain (the image's packages, or wheels carried in
# .whl/), the test suite on the CUDA backend, the static report, then bench_gpu.py and the roofline
# beside measured times.
# Everything lands in ONE results file: $OUT/gpu_check.md (OUT defaults to ./gpu_check_out).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
RES="$OUT/gpu_check.md"
PY="${PY:-python3}"
# 0, not unset: tests/conftest.py switches the simulator on unless its own argv says --backend
# cuda, and xdist workers do not see that argv; it only sets the variable where it is unset
export NUMBA_ENABLE_CUDASIM=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

section() { printf '\n## %s\n\n```\n' "$1" >>"$RES"; }
endsec() { printf '```\n' >>"$RES"; }
# One call must finish in under 8 minutes: every step gets min(its cap, what is left of 465 s),
# and a step with under 10 s left is skipped (and fails the check) instead of overrunning.
BUDGET=465  # + the 5 s KILL grace of the last step: under 480 s
left() { local cap=$1 rem=$((BUDGET - SECONDS)); [ "$rem" -lt "$cap" ] && cap=$rem; echo "$cap"; }
run() {  # run CAP CMD...: the command under the remaining budget
  local t; t=$(left "$1"); shift
  if [ "$t" -lt 10 ]; then echo "skipped: out of time" >>"$RES"; return 1; fi
  timeout -k 5 "$t" "$@"  # TERM at the cap, KILL 5 s later (a hung CUDA call ignores TERM)
}

{
  echo "# GPU check ($(date -u +%FT%TZ))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  echo '```'
} >"$RES"

# A lent machine reaches no package index: the image's python3 and packages are used as they
# are (the project's pins do not apply), and a missing package can only come from wheels carried
# in .whl/ (installed without an index into a scratch folder). No pip call goes to the network.
section "toolchain"
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"  # nvdisasm for the report
if ! "$PY" -c "import cupy, numba_cuda" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing the carried wheels in .whl/ (no index)" >>"$RES"
  run 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site \
    .whl/*.whl >>"$RES" 2>&1 || status=1
  export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"
fi
toolchain=0
run 60 "$PY" - >>"$RES" 2>&1 <<'PYEOF' || toolchain=1
import importlib, sys
print("python", sys.version.split()[0])
missing = []
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "pytest", "xdist"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - report every missing piece, then fail
        missing.append(name)
        print(name, "MISSING:", type(e).__name__, e)
if not {"numba_cuda", "cupy"} & set(missing):
    from numba import cuda

    ok = cuda.is_available()
    print("numba sees a GPU:", ok, cuda.get_current_device().name if ok else "")
    missing += [] if ok else ["a CUDA device"]
sys.exit(1 if {"numba_cuda", "cupy", "a CUDA device"} & set(missing) else 0)
PYEOF
endsec
if [ "$toolchain" -ne 0 ]; then  # nothing below means anything without them: save the lease
  echo "gpu_check: toolchain incomplete (see above), stopped after ${SECONDS}s" | tee -a "$RES"
  exit 1
fi

# The suite is sized for 2 CPU cores in 10 minutes: spread over the machine's cores (xdist, one
# file per worker, all on the one GPU) it fits its cap; no -x, so one failure shows them all.
section "tests on the CUDA backend (kernels vs CPU, scheme, mhe, dmhe)"
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "$(( $(nproc) > 12 ? 12 : $(nproc) ))" --dist loadfile)
run 205 "$PY" -m pytest -q -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} -m "not slow" --backend cuda \
  --durations=15 tests >>"$RES" 2>&1 || status=1
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
