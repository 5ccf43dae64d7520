"""The update pipeline and its guards, the aggregator option schemas, the collectives and
framing, the drop-in optimizer, and the lazy package front."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dmhe.aggregators import AGGREGATORS, Aggregator, make_aggregator
from dmhe.cli import main
from dmhe.collectives import Codec, all_gather_bytes, all_reduce, array_codec
from dmhe.config import ConfigError, TrainConfig, UpdateRefused
from dmhe.engine import SecureAggregationEngine, SecureOptimizer
from dmhe.framing import frame, unframe
from dmhe.pipeline import UpdatePipeline
from dmhe.quantize import quantize
from dmhe.state import flatten_state
from dmhe.trainer import Trainer
from dmhe.transport import run_peers

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smallcfg import small_fields  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = small_fields()
CLI = ["train", "--dataset", "synthetic", "--synthetic-shape", "1x8x8"]
CLI += ["--synthetic-size", "60,20", "--peers", "3", "--rounds", "1", "--no-progress"]


# --------------------------------------------------------------------------- option schemas


@pytest.mark.parametrize(
    "name, options, valid",
    [
        ("encrypted", {"lamda": 80}, "lam"),
        ("encrypted", {"valuebits": 24}, "value_bits"),
        ("secagg", {"rekey": False}, "rekey_each_round"),
        ("plaintext", {"lam": 40}, "topology"),
    ],
    ids=lambda v: str(v),
)
def test_unknown_option_lists_valid_names(name, options, valid):
    with pytest.raises(ConfigError, match=f"valid: .*{valid}"):
        make_aggregator(name, 3, **options)


@pytest.mark.parametrize("lam", [-100, 0, 31, 257, 40.0, "40", True, None])
def test_lam_must_be_an_int_in_32_to_256(lam):
    with pytest.raises(ConfigError, match="lam"):
        make_aggregator("encrypted", 3, lam=lam)


def test_option_types_and_items_checked():
    with pytest.raises(ConfigError, match="drop_before_decrypt"):
        make_aggregator("encrypted", 3, drop_before_decrypt=["1"])
    with pytest.raises(ConfigError, match="force_modp"):
        make_aggregator("secagg", 3, force_modp="yes")


def test_every_registered_strategy_implements_the_protocol():
    for name in AGGREGATORS:
        agg = make_aggregator(name, 2)
        assert isinstance(agg, Aggregator), name
        assert agg.describe()


@pytest.mark.parametrize("opt", ["lamda=80", "valuebits=24", "lam=-100", "lam=0"])
def test_cli_bad_aggregator_option_exits_2_with_one_line(opt, capsys):
    assert main([*CLI, "--mode", "encrypted", "--aggregator-option", opt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dmhe: error:") and opt.split("=")[0] in err[0]


def test_trainer_refuses_misspelt_option():
    with pytest.raises(ConfigError, match="lamda"):
        Trainer(TrainConfig(**SMALL, mode="encrypted", aggregator_options={"lamda": 80}))


# --------------------------------------------------------------------------- safe quantization


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 2.0**60])
def test_quantize_refuses_nan_inf_and_overflow(bad):
    with pytest.raises(ValueError, match="cannot quantize"):
        quantize(torch.tensor([0.5, bad]), 16)


def test_quantize_edge_fits():
    q = quantize(torch.tensor([2.0**46, -(2.0**46)], dtype=torch.float64), 16)
    assert q.tolist() == [2**62, -(2**62)]


def test_pipeline_names_peer_and_round():
    pipe = UpdatePipeline(mode="plaintext-quantized", peers=3, clip=1.0)
    agg = make_aggregator("plaintext", 3)
    for bad in (float("nan"), float("inf"), 1e30):
        with pytest.raises(UpdateRefused, match="round 7, peer 2"):
            pipe.prepare(torch.tensor([0.1, bad]), peer=2, round_index=7, aggregator=agg)
    ok = pipe.prepare(torch.tensor([0.5, -2.0]), peer=0, round_index=1, aggregator=agg)
    assert ok.dtype == np.int64 and abs(int(ok[1])) <= 2**16


def test_nan_round_refused_without_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(**SMALL, mode="plaintext-quantized", out_dir=str(tmp_path))
    tr = Trainer(cfg)
    real = tr.local_update

    def poisoned(peer, rnd):
        u = real(peer, rnd)
        if rnd == 2 and peer == 1:
            u[3] = float("nan")
        return u

    monkeypatch.setattr(tr, "local_update", poisoned)
    with pytest.raises(UpdateRefused, match="round 2, peer 1.*NaN"):
        tr.train()
    assert tr.round == 1
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["round"] == 1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1]


def test_cli_huge_lr_exits_2_and_keeps_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*CLI, "--mode", "plaintext-quantized", "--lr", "1e30", "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "round 1, peer" in err and "overflows the quantizer" in err
    assert not (out / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- collectives, framing


def test_framing_round_trip_and_truncation():
    blobs = [b"", b"a", bytes(range(256)) * 3]
    assert unframe(frame(blobs)) == blobs
    assert unframe(frame([])) == []
    with pytest.raises(ValueError, match="truncated"):
        unframe(frame(blobs)[:-1])
    with pytest.raises(ValueError, match="expected 2"):
        unframe(frame(blobs), 2)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_all_reduce_with_a_codec_and_rank_ordered_gather(k):
    rng = np.random.default_rng(k)
    xs = [rng.integers(0, 97, size=(k, 5), dtype=np.int64) for _ in range(k)]
    codec = array_codec(np.int64, shape=lambda _i: (5,), combine=lambda a, b: (a + b) % 97)

    def body(t):
        parts = all_reduce(t, list(xs[t.rank]), codec)
        return np.stack(parts), all_gather_bytes(t, bytes([t.rank]))

    for total, gathered in run_peers(k, body):
        assert np.array_equal(total, np.sum(xs, axis=0) % 97)
        assert gathered == [bytes([r]) for r in range(k)]


def test_reduce_scatter_needs_combine():
    with pytest.raises(ValueError, match="combine"):
        run_peers(2, lambda t: all_reduce(t, [b"x", b"y"], Codec(bytes, lambda b, _i: b)))


# --------------------------------------------------------------------------- drop-in optimizer


def _secure_opt(t, model, mode="plaintext-quantized"):
    opt = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9)
    engine = SecureAggregationEngine(mode=mode, peers=t.world_size, clip=1.0, scale_bits=16)
    return engine.make_secure(module=model, optimizer=opt, data_loader=[], transport=t)[1]


@pytest.mark.parametrize("mode", ["plaintext", "plaintext-quantized"])
def test_secure_optimizer_is_an_optimizer_with_lr_schedule_and_state_dict(mode):
    k = 2
    inits = []
    for r in range(k):
        torch.manual_seed(r)
        inits.append((torch.nn.Linear(4, 2).state_dict(), torch.randn(8, 4)))

    def peer(t):
        model = torch.nn.Linear(4, 2)
        model.load_state_dict(inits[t.rank][0])
        opt = _secure_opt(t, model, mode)
        assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, SecureOptimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "step() before optimizer.step()" warning
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            for _ in range(3):
                opt.zero_grad()
                model(inits[t.rank][1]).square().mean().backward()
                opt.step()
                sched.step()
        lrs = [opt.param_groups[0]["lr"], opt.original_optimizer.param_groups[0]["lr"]]
        sd = opt.state_dict()
        other = _secure_opt(t, torch.nn.Linear(4, 2), mode)
        other.load_state_dict(sd)
        same = all(
            torch.equal(other.state[p1]["momentum_buffer"], opt.state[p0]["momentum_buffer"])
            for p0, p1 in zip(model.parameters(), other._params, strict=True)
        )
        return lrs, same, flatten_state(model)

    outs = run_peers(k, peer)
    for lrs, same, state in outs:
        assert lrs == [0.4 * 0.5**3] * 2 and same
        assert torch.equal(state, outs[0][2])


def test_engine_refuses_dp_modes_and_bad_options():
    with pytest.raises(ConfigError):
        SecureAggregationEngine(mode="dp", peers=2)
    engine = SecureAggregationEngine(mode="secagg", peers=2, aggregator_options={"bogus": 1})
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="bogus"):
        run_peers(
            2,
            lambda t: engine.make_secure(module=model, optimizer=opt, data_loader=[], transport=t),
        )


# --------------------------------------------------------------------------- package front


def test_import_dmhe_is_light_and_exports_lazily():
    code = (
        "import sys, dmhe\n"
        "heavy = [m for m in ('torch', 'gpubfv') if m in sys.modules]\n"
        "from dmhe import SecureAggregationEngine, Trainer, TrainConfig, ConfigError\n"
        "print(heavy, SecureAggregationEngine.__module__, Trainer.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] dmhe.engine dmhe.trainer"


def test_dmhe_never_asks_for_the_device_itself():
    """Device questions go to gpubfv.backend.Backend.device_kind; dmhe holds no CUDA names,
    and only the encrypted aggregator files import gpubfv (besides Backend)."""
    for path in sorted((ROOT / "dmhe").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("is_cuda", "__cuda_array_interface__"), path
                assert node.attr != "startswith" or "cuda" not in ast.unparse(node.value), path
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("cuda", "cuda-sim"), (path, node.lineno)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpubfv"):
                ok = path.name.startswith("encrypted") or node.module == "gpubfv.backend"
                assert ok, (path, node.module)


class _Direct:
    """All-to-all topology (peer r owns chunk r): a second implementation of the seam."""

    def reduce_scatter(self, transport, chunks, codec):
        k, r = transport.world_size, transport.rank
        for j in range(k):
            if j != r:
                transport.send(j, codec.encode(chunks[j]))
        acc = chunks[r]
        for j in range(k):
            if j != r:
                acc = codec.combine(acc, codec.decode(transport.recv(j), r))
        return r, acc

    def all_gather(self, transport, index, chunk, codec):
        k, r = transport.world_size, transport.rank
        for j in range(k):
            if j != r:
                transport.send(j, codec.encode(chunk))
        out = [None] * k
        out[index] = chunk
        for j in range(k):
            if j != r:
                out[(index - r + j) % k] = codec.decode(transport.recv(j), (index - r + j) % k)
        return out


@pytest.mark.parametrize("k", [2, 5])
def test_another_topology_plugs_in(k):
    from dmhe.collectives import all_reduce_array

    rng = np.random.default_rng(7)
    xs = [rng.integers(-(2**40), 2**40, size=23, dtype=np.int64) for _ in range(k)]
    outs = run_peers(k, lambda t: all_reduce_array(t, xs[t.rank], topology=_Direct()))
    for out in outs:
        assert np.array_equal(out, np.sum(xs, axis=0))


@pytest.mark.parametrize("name", ["plaintext", "secagg", "encrypted"])
def test_topology_and_link_options_are_checked(name):
    with pytest.raises(ConfigError, match="choose one of"):
        make_aggregator(name, 3, topology="tree")
    with pytest.raises(ConfigError, match="choose one of"):
        make_aggregator(name, 3, link="moon")
    assert make_aggregator(name, 3, topology="bruck").options["topology"] == "bruck"
