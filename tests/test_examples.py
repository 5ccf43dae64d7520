"""Every numbered example runs to completion (its own asserts check the results)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("0*.py"))
TIMEOUT_S = 300


def test_first_example_exists():
    assert (ROOT / "examples" / "01_bfv_basics.py") in EXAMPLES


@pytest.mark.parametrize(
    "path",
    [
        # example 03 also runs in tests/test_dmhe_examples.py (shorter); the full run is slow
        pytest.param(p, marks=pytest.mark.slow) if p.stem.startswith("03_") else p
        for p in EXAMPLES
    ],
    ids=[p.stem for p in EXAMPLES],
)
def test_example_runs(path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert res.returncode == 0, f"{path.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


_README_RUNNER = """
import runpy, sys, traceback
for i, path in enumerate(sys.argv[1:]):
    try:
        runpy.run_path(path, run_name="__main__")
    except BaseException:
        traceback.print_exc()
        print(f"README block {i} failed", file=sys.stderr)
        sys.exit(1)
"""


def test_readme_python_blocks_run(tmp_path):
    """Every ```python block of the README runs as written (the documented API is the real one).

    The blocks run one after another in ONE interpreter (each in a fresh namespace, as a script
    would): the imports of torch and numba are paid once, not once per block."""
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    scripts = []
    for i, code in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(code)
        scripts.append(str(script))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _README_RUNNER, *scripts],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}"
