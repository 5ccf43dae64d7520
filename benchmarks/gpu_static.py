"""Compile every CUDA kernel to SASS without a GPU and measure it: registers, shared and local
memory, spills, occupancy at its launch size, SASS instructions per item in the hot loop, 64-bit
div/rem. Writes benchmarks/GPU_STATIC.md; exits 1 on a compile error, a spill, or local memory.

    python benchmarks/gpu_static.py [--cc 90 80] [--out benchmarks/GPU_STATIC.md]

Toolchain (the `gpu-static` extra): numba-cuda with NVVM (PTX, for an explicit compute
capability, so no driver is asked), nvJitLink (PTX -> cubin, ptxas statistics) and nvdisasm
(cubin -> SASS), all from PyPI wheels. The signatures are those of ``kernels.cuda._sigs``, the
table the simulator tests check against what the launchers pass.

Hot loop: the innermost loop (a backward branch) that holds the kernel's item marker (a store of
one output word by default; see ITEMS); a kernel with no such loop is measured whole. The count
per item divides the loop's instructions (NOPs excluded) by the markers in it over markers per
item, so unrolled loops are counted per item too. Calls to the 64-bit division routines are not
inlined: each is counted as one instruction plus one in the div/rem column.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# kernel -> (SASS opcode that marks an item, markers per item, what an item is)
ITEMS: dict[str, tuple[str, int, str]] = {
    # one Shoup multiply (its high-half product) per butterfly or N^-1 scaling: every loop
    # that multiplies is measured (radix-4 stages, fused first/last stages, scaling), the
    # worst one reported; a store marker would miss the values kept in registers across stages
    "_fwd_group": ("IMAD.HI", 1, "butterfly"),
    "_inv_group": ("IMAD.HI", 1, "butterfly"),
    "_sum_batch": ("LDG", 1, "input word"),
    # one Shoup multiply (its high-half product) per input limb; a load marker would count
    # each of the limb's five table and data loads as an item
    "_base_convert": ("IMAD.HI", 1, "input limb"),
    "_hps_scale_to_r": ("DADD", 1, "input limb"),  # one rounding-sum add per limb
    "_scale_round_to_t": ("DADD", 1, "input limb"),  # one rounding-sum add per limb
}
DEFAULT_ITEM = ("STG", 1, "output word")
# kernel -> an opcode the hot loop must also hold (none at present)
REQUIRES: dict[str, str] = {}

# Per-SM limits: (registers, threads, blocks, shared bytes usable, shared reserved per block)
SM_LIMITS = {90: (65536, 2048, 32, 228 * 1024, 1024), 80: (65536, 2048, 32, 164 * 1024, 1024)}

_DIVREM = re.compile(r"__cuda_sm\d+_(div|rem)_[su]64")
_PTX_DIVREM = re.compile(r"^\s*(?:@%p\d+\s+)?(div|rem)\.[su]64\b", re.M)
_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"`\((\.L_x_\d+)\)")


@dataclasses.dataclass
class KernelStats:
    """What one kernel compiles to for one compute capability."""

    module: str
    name: str
    cc: int
    threads: int
    registers: int = 0
    shared: int = 0
    local: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    occupancy: float = 0.0
    sass_total: int = 0
    hot_sass: int = 0
    hot_items: float = 0.0
    item: str = ""
    in_loop: bool = False
    divrem_ptx: int = 0
    divrem_hot: int = 0
    local_in_loops: int = 0
    round_loop: int = 0  # samplers: SASS of the ChaCha20 double-round loop (runs 10 times)
    error: str = ""

    @property
    def per_item(self) -> float:
        """SASS instructions per item in the hot region."""
        return self.hot_sass / self.hot_items if self.hot_items else float("nan")

    @property
    def chacha_per_word(self) -> float:
        """Samplers: executed ChaCha20 SASS per 32-bit keystream word (10 double rounds of the
        round loop per 16-word block; the static whole-kernel count holds the loop once)."""
        return self.round_loop * 10 / 16 if self.round_loop else float("nan")


def nvdisasm_path() -> str | None:
    """nvdisasm from the nvidia-cuda-nvdisasm wheel, else from PATH."""
    try:
        import nvidia.cu13 as cu13  # type: ignore[import-not-found]

        for base in cu13.__path__:
            p = Path(base) / "bin" / "nvdisasm"
            if p.exists():
                return str(p)
    except ImportError:
        pass
    return shutil.which("nvdisasm")


def toolchain_missing() -> str | None:
    """None when the static toolchain is complete, else which piece is missing and how to get it."""
    hint = 'pip install -e ".[gpu-static]"'
    try:
        from numba import cuda

        if "numba_cuda" not in (cuda.__file__ or ""):
            return f"numba-cuda is not installed (numba's built-in CUDA target is used); {hint}"
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return f"NVVM (libnvvm) not found; {hint}"
    except Exception as e:  # noqa: BLE001 - any import/loading failure means: not available
        return f"numba-cuda unusable ({type(e).__name__}: {e}); {hint}"
    try:
        from cuda.bindings import nvjitlink

        nvjitlink.version()
    except Exception as e:  # noqa: BLE001
        return f"nvJitLink not usable ({type(e).__name__}: {e}); {hint}"
    if nvdisasm_path() is None:
        return f"nvdisasm not found (wheel nvidia-cuda-nvdisasm); {hint}"
    return None


def ptx_to_cubin(ptx: str, cc: int) -> tuple[bytes, str]:
    """Link PTX into a cubin for sm_<cc> with nvJitLink; returns (cubin, ptxas info log)."""
    from cuda.bindings import nvjitlink as nj

    h = nj.create(2, [f"-arch=sm_{cc}", "-verbose"])
    try:
        data = ptx.encode()
        nj.add_data(h, nj.InputType.PTX, data, len(data), "kernel")
        try:
            nj.complete(h)
        except Exception as e:
            n = nj.get_error_log_size(h)
            buf = bytearray(n)
            nj.get_error_log(h, buf)
            raise RuntimeError(f"nvJitLink failed: {buf.decode(errors='replace')}") from e
        cub = bytearray(nj.get_linked_cubin_size(h))
        nj.get_linked_cubin(h, cub)
        log = bytearray(nj.get_info_log_size(h))
        nj.get_info_log(h, log)
        return bytes(cub), log.decode(errors="replace")
    finally:
        nj.destroy(h)


def sass_of(cubin: bytes) -> str:
    """SASS text of a cubin (nvdisasm -c)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run(
            [nvdisasm_path() or "nvdisasm", "-c", f.name], capture_output=True, text=True
        )
    if res.returncode:
        raise RuntimeError(f"nvdisasm failed: {res.stderr.strip()}")
    return res.stdout


def kernel_sass(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode, operands) of the kernel entry function, labels as ('', label) rows."""
    out: list[tuple[int, str, str]] = []
    in_entry = False
    for line in sass.splitlines():
        if re.match(r"\s*\.section\s", line):
            in_entry = ".text._Z" in line
            continue
        if not in_entry:
            continue
        m = _LABEL.match(line.strip())
        if m:
            out.append((-1, "LABEL", m.group(1)))
            continue
        m = _INSN.search(line)
        if m:
            out.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return out


def loops(rows: list[tuple[int, str, str]]) -> list[tuple[int, int]]:
    """Row-index ranges [start, end] of loops: a branch back to an earlier label."""
    where: dict[str, int] = {}
    res = []
    for i, (_, op, rest) in enumerate(rows):
        if op == "LABEL":
            where[rest] = i
        elif op.startswith("BRA"):
            m = _BRANCH.search(rest)
            if m and m.group(1) in where:
                res.append((where[m.group(1)], i))
    return res


def analyze(st: KernelStats, sass: str, ptx: str, log: str) -> None:
    """Fill `st` from the SASS, the PTX and the ptxas log."""
    m = re.search(r"used (\d+) registers", log)
    st.registers = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) bytes smem", log)
    st.shared = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) bytes lmem", log)
    st.local = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m:
        st.spill_stores, st.spill_loads = int(m.group(1)), int(m.group(2))
    st.divrem_ptx = len(_PTX_DIVREM.findall(ptx))
    rows = kernel_sass(sass)
    code = [r for r in rows if r[1] not in ("LABEL", "NOP")]
    st.sass_total = len(code)
    marker, per, st.item = ITEMS.get(st.name, DEFAULT_ITEM)
    lps = loops(rows)
    st.local_in_loops = sum(
        1 for a, b in lps for r in rows[a : b + 1] if r[1].startswith(("LDL", "STL"))
    )
    inner = [(a, b) for a, b in lps if not any(a <= c and d <= b and (c, d) != (a, b)
                                               for c, d in lps)]  # fmt: skip

    def count(a: int, b: int, pred: Any) -> int:
        return sum(1 for r in rows[a : b + 1] if r[1] not in ("LABEL", "NOP") and pred(r))

    def is_marker(r: tuple[int, str, str]) -> bool:
        # an opcode ("LDG") or an opcode with modifiers ("IMAD.HI"), matched as a prefix
        return r[1] == marker or r[1].startswith(marker + ".")

    need = REQUIRES.get(st.name)
    hot = [(a, b) for a, b in inner if count(a, b, is_marker)
           and (need is None or count(a, b, lambda r: r[1].split(".")[0] == need))]  # fmt: skip
    if hot:
        a, b = max(hot, key=lambda ab: count(ab[0], ab[1], lambda r: True) / count(*ab, is_marker))
        st.in_loop = True
    else:
        a, b = 0, len(rows) - 1
    st.hot_sass = count(a, b, lambda r: True)
    st.hot_items = count(a, b, is_marker) / per
    st.divrem_hot = count(a, b, lambda r: r[1].startswith("CALL") and _DIVREM.search(r[2]))
    st.occupancy = occupancy(st.registers, st.shared, st.threads, st.cc)
    if st.module == "prng":  # the double-round loop: the inner loop with the most rotates
        rot = [(count(a, b, lambda r: r[1].startswith("SHF")), a, b) for a, b in inner]
        if rot and max(rot)[0] >= 32:
            _, a, b = max(rot)
            st.round_loop = count(a, b, lambda r: True)


def occupancy(regs: int, smem: int, threads: int, cc: int) -> float:
    """Resident warps / max warps per SM for a block of `threads` (register granule: 256 per
    warp; shared memory plus the per-block reservation)."""
    rf, max_thr, max_blk, smem_sm, smem_res = SM_LIMITS[cc]
    warps = -(-threads // 32)
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (rf // per_warp) // warps
    by_smem = smem_sm // (smem + smem_res) if smem else max_blk
    blocks = min(by_regs, by_smem, max_thr // (warps * 32), max_blk)
    return blocks * warps / (max_thr // 32)


class _TargetDevice:
    """Stands in for the current device where numba-cuda asks one for its compute capability
    while compiling a non-inlined device function (there is no driver here)."""

    def __init__(self, cc: int) -> None:
        self.compute_capability = (cc // 10, cc % 10)


@contextlib.contextmanager
def target_cc(cc: int) -> Iterator[None]:
    """Compile device functions for `cc` instead of asking the (absent) driver."""
    from numba.cuda import dispatcher

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _TargetDevice(cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_one(module: str, name: str, sig: tuple[str, ...], ccs: list[int]) -> list[KernelStats]:
    """Compile kernels.cuda.<module>.<name> for `sig` to PTX then SASS for each cc."""
    from numba import cuda

    from kernels.cuda import _sigs

    mod = importlib.import_module(f"kernels.cuda.{module}")
    kern = getattr(mod, name)
    types = tuple(_sigs.parse_type(t) for t in sig)
    threads = _sigs.THREADS.get(name, _sigs.DEFAULT_THREADS)
    res = []
    for cc in ccs:
        st = KernelStats(module, name, cc, threads)
        try:
            with target_cc(cc):
                ptx, _ = cuda.compile_ptx(kern.py_func, types, cc=(cc // 10, cc % 10))
            cubin, log = ptx_to_cubin(ptx, cc)
            analyze(st, sass_of(cubin), ptx, log)
        except Exception as e:  # noqa: BLE001 - reported per kernel, fails the run
            st.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        res.append(st)
    return res


def _compile_task(task: tuple[str, str, tuple[str, ...], list[int]]) -> list[KernelStats]:
    return compile_one(*task)


def compile_all(ccs: list[int], jobs: int = 1, only: list[str] | None = None) -> list[KernelStats]:
    """Every kernel of the signature table (or those named in `only`), for each compute
    capability (`jobs` processes)."""
    from kernels.cuda import _sigs

    tasks = [
        (m, n, sig, ccs) for (m, n), sig in _sigs.SIGNATURES.items() if only is None or n in only
    ]
    if jobs <= 1:
        return [st for t in tasks for st in _compile_task(t)]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as ex:
        return [st for res in ex.map(_compile_task, tasks) for st in res]


def problems(stats: list[KernelStats]) -> list[str]:
    """Hard failures: compile errors, spills, local memory."""
    bad = []
    for s in stats:
        tag = f"{s.name} sm_{s.cc}"
        if s.error:
            bad.append(f"{tag}: compile error: {s.error}")
        if s.spill_stores or s.spill_loads:
            bad.append(f"{tag}: spills {s.spill_stores} B stored, {s.spill_loads} B loaded")
        if s.local_in_loops:
            bad.append(f"{tag}: {s.local_in_loops} local-memory accesses inside loops")
    return bad


def markdown(
    stats: list[KernelStats],
    budgets: dict[str, float] | None = None,
    notes: dict[str, str] | None = None,
) -> str:
    """The GPU_STATIC.md table (and the notes of the budgets above the target)."""
    lines = [
        "# Static GPU report (generated by benchmarks/gpu_static.py; do not edit)",
        "",
        "Compiled without a GPU (numba-cuda -> NVVM PTX -> nvJitLink SASS) for the launch",
        "signatures of kernels/cuda/_sigs.py. `per item`: SASS instructions (NOPs excluded) per",
        "item of the hot loop (the innermost loop holding the item marker; `whole` = no such",
        "loop, the whole kernel is counted). `div/rem`: 64-bit division/remainder instructions in",
        "the PTX, and calls of the division routine inside the hot region. Occupancy: resident",
        "warps / 64 at the launch block size. Budgets are those of tests/test_gpu_static.py.",
        "`ChaCha/word` (samplers): the ChaCha20 double-round loop x 10 / 16, the SASS executed",
        "per 32-bit keystream word, which the static `whole` count (the loop once) leaves out.",
        "",
        "| kernel | sm | threads | regs | smem B | lmem B | spills | occupancy | SASS | "
        "per item | item | div/rem ptx | div/rem hot | budget | ChaCha/word |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        if s.error:
            lines.append(f"| {s.name} | {s.cc} | ERROR: {s.error} |" + " |" * 12)
            continue
        where = "" if s.in_loop else " (whole)"
        budget = budgets.get(s.name, "") if budgets else ""
        lines.append(
            f"| {s.module}.{s.name} | {s.cc} | {s.threads} | {s.registers} | {s.shared} | "
            f"{s.local} | {s.spill_stores + s.spill_loads} | {s.occupancy:.0%} | {s.sass_total} | "
            f"{s.per_item:.1f}{where} | {s.item} | {s.divrem_ptx} | {s.divrem_hot} | {budget} | "
            f"{f'{s.chacha_per_word:.1f}' if s.round_loop else ''} |"
        )
    if notes:
        lines += ["", "## Kernels above the target of 24 per item, and why", ""]
        lines += [f"- `{name}`: {note}" for name, note in notes.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: compile, write the report, exit 1 on a hard failure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", type=int, nargs="+", default=[90, 80])
    ap.add_argument("--out", default=None, help="report path (default benchmarks/GPU_STATIC.md)")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="KERNEL",
        help="compile only these kernels (print the table; write it only where --out says)",
    )
    ap.add_argument("--json", help="also write the measurements as JSON to this path")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--check", action="store_true", help="only check the toolchain")
    args = ap.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("gpu_static: NUMBA_ENABLE_CUDASIM is set; unset it to compile", file=sys.stderr)
        return 2
    why = toolchain_missing()
    if why:
        print(f"gpu_static: {why}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    if args.only:
        from kernels.cuda import _sigs

        unknown = sorted(set(args.only) - {n for _, n in _sigs.SIGNATURES})
        if unknown:
            print(f"gpu_static: unknown kernel(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
    stats = compile_all(args.cc, args.jobs, args.only)
    if args.json:
        rows = [
            dict(dataclasses.asdict(s), per_item=s.per_item, chacha_per_word=s.chacha_per_word)
            for s in stats
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1))
    budgets = notes = None
    try:
        from tests.test_gpu_static import BUDGETS, TARGET

        budgets = {k: v[0] for k, v in BUDGETS.items()}
        notes = {k: v[3] for k, v in BUDGETS.items() if v[0] > TARGET}
    except ImportError:
        pass
    text = markdown(stats, budgets, notes)
    out = args.out or (None if args.only else str(ROOT / "benchmarks" / "GPU_STATIC.md"))
    if out:
        Path(out).write_text(text)
    print(text)
    bad = problems(stats)
    for b in bad:
        print("FAIL", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
