"""Every public name in gpubfv/, dmhe/ and kernels/ carries a docstring.

Parsed with `ast`, so optional dependencies are not needed. Public: module-level classes and
functions whose names do not start with "_", in modules whose path has no "_" component, and the
public methods of those classes (dunders, overloads and setters excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _public_defs(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out: list[str] = []
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, defs) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if item.name.startswith("_"):
                    continue
                decos = {ast.unparse(d) for d in item.decorator_list}
                if any(d.endswith(".setter") or d == "overload" for d in decos):
                    continue
                if ast.get_docstring(item) is None:
                    out.append(f"{path.relative_to(ROOT)}:{item.lineno} {node.name}.{item.name}")
    return out


def test_every_public_name_has_a_docstring() -> None:
    missing: list[str] = []
    for pkg in ("gpubfv", "dmhe", "kernels"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT / pkg).parts
            if any(part.startswith("_") and part != "__init__.py" for part in rel):
                continue
            missing += _public_defs(path)
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)
