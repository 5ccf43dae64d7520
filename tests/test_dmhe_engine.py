"""The engine: drop-ins from dmhe.simulate and torchrun, reproducibility, local steps, DP,
step-count mismatches (named, never a hang), and the README's torchrun snippet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import dmhe
from dmhe.config import ConfigError
from dmhe.engine import SecureAggregationEngine, StepMismatchError
from dmhe.pipeline import UpdatePipeline
from dmhe.simulation import SimulationTimeout

ROOT = Path(__file__).resolve().parents[1]


def _loop(mode: str = "plaintext-quantized", local_steps: int = 1, epochs: int = 2, **kw):
    """A peer's ordinary loop: global-RNG init, shuffled loader, dropout; returns
    (parameters, accuracy, optimizer)."""

    def train(peer):
        x = torch.randn(64, 6)  # the peer's own data, from its own global generator
        y = (x[:, 0] + x[:, 1] > 0).long()
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(12, 2)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
        engine = dmhe.SecureAggregationEngine(mode=mode, local_steps=local_steps, **kw)
        model, optimizer, loader = engine.make_secure(
            module=model, optimizer=optimizer, data_loader=loader
        )
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
        model.eval()
        acc = (model(x).argmax(1) == y).float().mean().item()
        return torch.cat([p.detach().flatten() for p in model.parameters()]), acc, optimizer

    return train


def test_exported_from_dmhe():
    for name in ("SecureAggregationEngine", "SecureOptimizer", "simulate", "StepMismatchError"):
        assert name in dmhe.__all__ and getattr(dmhe, name) is not None


def test_simulate_reproduces_and_keeps_peers_identical():
    fn = _loop()
    first = dmhe.simulate(3, fn, seed=5)
    second = dmhe.simulate(3, fn, seed=5)
    assert all(torch.equal(p, first[0][0]) for p, _, _ in first)  # one common model
    assert [a for _, a, _ in first] == [a for _, a, _ in second]  # same accuracy, every run
    assert torch.equal(first[0][0], second[0][0])
    other = dmhe.simulate(3, fn, seed=6)
    assert not torch.equal(other[0][0], first[0][0])  # the seed does matter
    assert isinstance(first[0][2], torch.optim.Optimizer)


def test_simulate_restores_the_callers_generator():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    dmhe.simulate(2, lambda peer: torch.rand(5))
    assert torch.equal(torch.rand(3), want)


def test_local_steps_aggregate_every_n_steps():
    one = dmhe.simulate(2, _loop(local_steps=1))
    four = dmhe.simulate(2, _loop(local_steps=4))
    opt = four[0][2]
    assert opt.steps == 8 and opt.aggregations == 2
    assert one[0][2].aggregations == 8
    assert torch.equal(four[0][0], four[1][0])  # identical after each aggregation
    assert not torch.equal(one[0][0], four[0][0])


def test_local_steps_average_the_parameter_change():
    """local_steps=n: the new parameters are the old plus the average change (plaintext)."""
    k, lr = 2, 0.5
    xs = [torch.randn(8, 3, generator=torch.Generator().manual_seed(r)) for r in range(k)]

    def train(peer):
        model = torch.nn.Linear(3, 1, bias=False)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        engine = SecureAggregationEngine(mode="plaintext", local_steps=2, clip=100.0)
        model, opt, _ = engine.make_secure(module=model, optimizer=opt, data_loader=[])
        start = model.weight.detach().clone()
        for _ in range(2):
            opt.zero_grad()
            model(xs[peer.rank]).pow(2).mean().backward()
            opt.step()
        return start, model.weight.detach().clone()

    out = dmhe.simulate(k, train)
    start = out[0][0]
    changes = []
    for x in xs:  # the same two local SGD steps, by hand
        w = start.clone().requires_grad_(True)
        for _ in range(2):
            g = torch.autograd.grad((x @ w.T).pow(2).mean(), w)[0]
            w = (w - lr * g).detach().requires_grad_(True)
        changes.append(w.detach() - start)
    want = start + sum(changes) / k
    assert torch.allclose(out[0][1], want, atol=1e-6)
    assert torch.equal(out[0][1], out[1][1])


def test_encrypted_equals_plaintext_quantized_through_simulate():
    enc = dmhe.simulate(2, _loop(mode="encrypted", epochs=1), seed=1)
    pq = dmhe.simulate(2, _loop(mode="plaintext-quantized", epochs=1), seed=1)
    assert torch.equal(enc[0][0], pq[0][0])


def test_step_count_mismatch_is_named_not_a_hang():
    def train(peer):
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        engine = SecureAggregationEngine(mode="plaintext")
        model, opt, _ = engine.make_secure(module=model, optimizer=opt, data_loader=[])
        for _ in range(5 - (peer.rank == 1)):
            opt.zero_grad()
            model(torch.randn(4, 3)).sum().backward()
            opt.step()

    t0 = time.monotonic()
    with pytest.raises(StepMismatchError, match="peer 1 finished after 4 steps"):
        dmhe.simulate(3, train)
    assert time.monotonic() - t0 < 60


def test_a_stuck_peer_times_out_naming_it():
    def train(peer):
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model, opt, _ = SecureAggregationEngine(mode="plaintext").make_secure(
            module=model, optimizer=opt, data_loader=[]
        )
        if peer.rank == 1:
            time.sleep(3)  # busy elsewhere (holding its turn) while peer 0 waits at the step
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()

    with pytest.raises(SimulationTimeout, match="peer 0 waited 1 s for peer 1"):
        dmhe.simulate(2, train, timeout=1.0)


def test_dp_mode_and_get_epsilon(monkeypatch):
    with pytest.raises(ConfigError, match="noise_multiplier"):
        SecureAggregationEngine(mode="dp")
    with pytest.raises(ConfigError, match="adds no noise"):
        SecureAggregationEngine(mode="encrypted", noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="no DP noise"):
        SecureAggregationEngine(mode="encrypted", peers=2).get_epsilon(1e-5)
    seen = []

    def fake_epsilon(self, delta, steps):  # the accountant's contract: (delta, steps) -> eps
        seen.append((delta, steps))
        return 0.25 * steps

    def train(peer):
        engine = SecureAggregationEngine(mode="dp", noise_multiplier=2.0, clip=1.0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model, opt, _ = engine.make_secure(module=model, optimizer=opt, data_loader=[])
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
        if not hasattr(UpdatePipeline, "epsilon"):
            with pytest.raises(NotImplementedError, match="UpdatePipeline.epsilon"):
                engine.get_epsilon(1e-5)
        return engine

    if not hasattr(UpdatePipeline, "epsilon"):
        dmhe.simulate(2, train)
        monkeypatch.setattr(UpdatePipeline, "epsilon", fake_epsilon, raising=False)
    engines = dmhe.simulate(2, train)
    eps = engines[0].get_epsilon(1e-5)
    assert eps > 0
    if seen:
        assert seen[-1] == (1e-5, 3) and eps == 0.75


def test_make_secure_outside_any_peer_context_says_how():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if "WORLD_SIZE" in os.environ:
        pytest.skip("running under torchrun")
    with pytest.raises(ConfigError, match="torchrun.*dmhe.simulate"):
        SecureAggregationEngine().make_secure(module=model, optimizer=opt, data_loader=[])


def test_engine_validates_up_front():
    for bad in ({"mode": "nope"}, {"peers": 1}, {"local_steps": 0}, {"step_timeout": 0}):
        with pytest.raises(ConfigError):
            SecureAggregationEngine(**bad)


# ---------------------------------------------------------------------- torchrun


def _torchrun_block() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python torchrun\n(.*?)```", readme, re.S)
    assert len(blocks) == 1, "README needs one ```python torchrun block"
    return blocks[0]


def _torchrun(script: Path, nproc: int = 2, env: dict | None = None, timeout: int = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", str(script)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_readme_torchrun_snippet_is_a_plain_loop_plus_at_most_4_lines(tmp_path):
    code = _torchrun_block()
    added = [ln for ln in code.splitlines() if ln.rstrip().endswith("# dmhe")]
    assert 1 <= len(added) <= 4, added
    plain = "\n".join(ln for ln in code.splitlines() if not ln.rstrip().endswith("# dmhe"))
    assert "dmhe" not in plain
    script = tmp_path / "plain.py"
    script.write_text(plain)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy" in proc.stdout


def test_readme_torchrun_snippet_runs_under_torchrun(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_torchrun_block())
    proc = _torchrun(script)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    accs = re.findall(r"rank (\d): accuracy ([\d.]+)", proc.stdout)
    assert sorted(r for r, _ in accs) == ["0", "1"]


MISMATCH = """
import os, time, torch, dmhe
rank = int(os.environ["RANK"])
model = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
engine = dmhe.SecureAggregationEngine(mode="plaintext", step_timeout=5)
model, opt, _ = engine.make_secure(module=model, optimizer=opt, data_loader=[])
if os.environ["CASE"] == "stuck" and rank == 1:
    time.sleep(40)
for _ in range(3 - (os.environ["CASE"] == "short" and rank == 1)):
    opt.zero_grad(); model(torch.randn(4, 3)).sum().backward(); opt.step()
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", ["short", "stuck"])
def test_torchrun_step_mismatch_names_the_ranks(tmp_path, case):
    script = tmp_path / "mis.py"
    script.write_text(MISMATCH)
    t0 = time.monotonic()
    proc = _torchrun(script, env={"CASE": case})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    if case == "short":
        assert "peer 1 finished after 2 steps" in out
    else:
        assert "rank(s) 1 did not reach it within 5 s" in out
    assert time.monotonic() - t0 < 200
