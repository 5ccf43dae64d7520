"""The numbered dmhe example runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "03_decentralized_training.py"


def test_example_03_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("example03", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    acc = mod.main(rounds=1, peers=2, out=str(tmp_path))
    assert acc["plaintext-quantized"] == acc["secagg"]
    assert (tmp_path / "report" / "report.md").exists()
