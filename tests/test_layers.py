"""Imports point only downward: kernels -> gpubfv.backend -> gpubfv.ring -> gpubfv -> mhe -> dmhe.

Parsed with `ast` (every import statement, including the lazy ones inside functions), so the
test needs none of the optional dependencies and covers modules that are not imported anywhere.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["kernels", "gpubfv", "dmhe"]

# layer rank: a module may import project modules of its own rank or below
RANKS = [
    ("kernels", 0),
    ("gpubfv.backend", 1),
    ("gpubfv.ring", 2),
    ("gpubfv.mhe", 4),
    ("gpubfv", 3),
    ("dmhe", 5),
]


def rank(module: str) -> int | None:
    for prefix, r in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            return r
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_project_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_in(text: str, me: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in the source of module `me`."""
    tree = ast.parse(text)
    pkg = me if is_package else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            for alias in node.names:  # `from gpubfv import mhe` imports a submodule
                sub = f"{mod}.{alias.name}"
                if is_project_module(sub):
                    out.append((sub, node.lineno))
    return out


def imports_of(path: Path) -> list[tuple[str, int]]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def sources(package: str) -> list[Path]:
    base = ROOT / package
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


ALL = [p for pkg in PACKAGES for p in sources(pkg)]


def top(name: str) -> str:
    return name.split(".")[0]


def test_sources_found():
    assert sources("gpubfv") and sources("kernels")


def violations(check) -> list[str]:
    bad = []
    for path in ALL:
        me = module_name(path)
        for mod, line in imports_of(path):
            why = check(me, path, mod)
            if why:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}: {why}")
    return bad


def test_gpubfv_never_imports_torch_or_dmhe():
    def check(me, path, mod):
        if me.startswith("gpubfv") and top(mod) in ("torch", "torchvision", "dmhe"):
            return "gpubfv must not depend on the training layer"
        return None

    assert violations(check) == []


def test_kernels_never_import_gpubfv():
    def check(me, path, mod):
        if me.startswith("kernels") and top(mod) in ("gpubfv", "dmhe", "torch"):
            return "kernels sit below the scheme"
        return None

    assert violations(check) == []


def test_cupy_only_in_backend_and_cuda_kernels():
    """Only gpubfv/backend.py chooses the device; kernels/cuda is the CUDA kernel set itself."""
    allowed = {"gpubfv.backend"}

    def check(me, path, mod):
        if top(mod) == "cupy" and me not in allowed and not me.startswith("kernels.cuda"):
            return "only gpubfv/backend.py (and the CUDA kernel set) may import cupy"
        return None

    assert violations(check) == []


def test_imports_point_downward():
    def check(me, path, mod):
        r_me, r_mod = rank(me), rank(mod)
        if r_me is not None and r_mod is not None and r_mod > r_me:
            return f"upward edge (layer {r_me} -> {r_mod})"
        return None

    assert violations(check) == []


def test_layer_checker_sees_upward_edges():
    """The checker itself: upward, relative and lazy imports are all resolved and ranked."""
    assert rank("gpubfv.ring.basis") == 2 and rank("gpubfv.keys") == 3
    assert rank("gpubfv.mhe.protocols") == 4 and rank("kernels.cpu.ntt") == 0
    assert rank("gpubfv.backend") == 1 and rank("dmhe.engine") == 5 and rank("numpy") is None
    probe = (
        "from gpubfv.keys import SecretKey\n"
        "from ..params import Parameters\n"
        "from . import basis\n"
        "def lazy():\n"
        "    import dmhe.engine\n"
        "    from gpubfv import mhe\n"
    )
    mods = [m for m, _ in imports_in(probe, "gpubfv.ring.probe")]
    assert "gpubfv.keys" in mods and "gpubfv.params" in mods and "gpubfv.ring" in mods
    assert "dmhe.engine" in mods
    if is_project_module("gpubfv.mhe"):
        assert "gpubfv.mhe" in mods
    upward = [m for m in mods if rank(m) > rank("gpubfv.ring.probe")]
    assert set(upward) >= {"gpubfv.keys", "gpubfv.params", "dmhe.engine"}


# ---------------------------------------------------------------- the device: decided in one place
DEVICE_OWNER = "gpubfv.backend"
KERNEL_SETS = ("kernels.cpu", "kernels.cuda")
DEVICE_ATTRS = {"is_cuda", "__cuda_array_interface__"}
DEVICE_NAMES = {"cuda", "cuda-sim"}
PREFIX_TESTS = {"startswith", "endswith", "removeprefix", "partition", "split"}


def is_kernel_set(mod: str) -> bool:
    return any(mod == k or mod.startswith(k + ".") for k in KERNEL_SETS)


def dynamic_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """`importlib.import_module("...")` / `__import__("...")` with a literal module name."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    out.append((arg.value, node.lineno))
    return out


def kernel_set_imports(text: str, me: str, is_package: bool = False) -> list[str]:
    """Where module `me` imports a kernel set (static, lazy or importlib) outside the backend."""
    if me == DEVICE_OWNER:
        return []
    found = imports_in(text, me, is_package) + dynamic_imports(ast.parse(text))
    hits = sorted({(line, mod) for mod, line in found if is_kernel_set(mod)})
    return [f"{line}: imports {mod}" for line, mod in hits]


def _line(where: str) -> int:
    return int(where.split(":")[0])


def device_questions(text: str) -> list[str]:
    """Every place a source asks which device something lives on (see the test below)."""
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and node.attr in DEVICE_ATTRS:
            out.add(f"{node.lineno}: attribute .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in DEVICE_NAMES or node.value in DEVICE_ATTRS:
                out.add(f"{node.lineno}: string {node.value!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PREFIX_TESTS
            and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and "cuda" in a.value
                for a in node.args
            )
        ):
            out.add(f"{node.lineno}: .{node.func.attr}() on a device name")
    return sorted(out, key=lambda w: (_line(w), w))


def scan(package: str, finder) -> list[str]:
    bad = []
    for path in sources(package):
        for why in finder(path, module_name(path)):
            bad.append(f"{path.relative_to(ROOT)}:{why}")
    return bad


@pytest.mark.parametrize("package", ["gpubfv", "dmhe"])
def test_only_backend_imports_a_kernel_set(package):
    """Rule (a): kernels.cpu / kernels.cuda are reached through `Backend.k` only; host tables
    come from kernels.tables (or kernels.ntt_tables)."""

    def finder(path, me):
        return kernel_set_imports(path.read_text(), me, path.name == "__init__.py")

    bad = scan(package, finder)
    assert bad == [], "kernel set imported outside gpubfv/backend.py:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["gpubfv", "dmhe"])
def test_only_backend_asks_which_device(package):
    """Rule (b): outside gpubfv/backend.py nothing asks where an array lives; code calls
    `Backend.device_kind(x)`, `Backend.for_array(x)` or `backend.holds(x)` instead."""

    def finder(path, me):
        return [] if me == DEVICE_OWNER else device_questions(path.read_text())

    bad = scan(package, finder)
    assert bad == [], "device sniffed outside gpubfv/backend.py:\n" + "\n".join(bad)


DEVICE_PROBE = """
import kernels.cpu
from kernels.cuda.ntt import ntt
from kernels import cuda
from kernels.tables import barrett_constants
def f(x, dev, be):
    importlib.import_module("kernels.cuda")
    a = x.is_cuda or hasattr(x, "__cuda_array_interface__")
    b = getattr(x, "is_cuda", False)
    c = dev == "cuda" or be.name in ("cpu", "cuda-sim")
    d = str(dev).startswith("cuda:")
    e = Backend.device_kind(x) == be.kind and be.is_gpu and "cuda:1 or cuda:2 in prose"
"""


def test_device_rules_see_violations():
    """The two scanners themselves, on a probe with every form they must catch."""
    imports = kernel_set_imports(DEVICE_PROBE, "gpubfv.ring.probe")
    assert sorted({_line(w) for w in imports}) == [2, 3, 4, 7]
    assert kernel_set_imports(DEVICE_PROBE, DEVICE_OWNER) == []
    found = device_questions(DEVICE_PROBE)
    assert sorted({_line(w) for w in found}) == [8, 9, 10, 11]
    assert len([w for w in found if _line(w) == 8]) == 2  # the attribute and the string


@pytest.mark.parametrize("module", ["gpubfv", "gpubfv.mhe", "kernels.cpu"])
def test_import_loads_no_heavy_or_device_module(module):
    if not is_project_module(module):
        pytest.skip(f"{module} not present yet")
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('torch', 'cupy', 'dmhe') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
