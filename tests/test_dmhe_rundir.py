"""The run directory: its lock, digest-verified checkpoints, validated rounds, and metrics that a
refused resume leaves alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from dmhe.config import ConfigError, TrainConfig
from dmhe.rundir import CHECKPOINT, LOCK, METRICS, RunDir
from dmhe.state import flatten_state, payload_digest
from dmhe.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smallcfg import small_fields  # noqa: E402

SMALL = small_fields(rounds=3, local_steps=1, mode="plaintext-quantized")


def _payload(rnd: int = 2, rounds: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    model = {"w": torch.randn(4, 5, generator=g), "b": torch.arange(3), "h": torch.zeros(0)}
    return {"round": rnd, "config": {"rounds": rounds, "lr": 0.1}, "model": model}


# --------------------------------------------------------------------------- the lock


def test_second_open_is_refused_naming_the_holder(tmp_path):
    first = RunDir(tmp_path)
    first.open(resume=False)
    with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()} on "):
        RunDir(tmp_path).open(resume=False)
    assert first.locked
    first.close()
    second = RunDir(tmp_path)
    second.open(resume=False)  # released: a later run may take it
    second.close()


def test_fresh_run_refuses_a_folder_with_metrics_or_a_checkpoint(tmp_path):
    rd = RunDir(tmp_path)
    rd.open(resume=False)
    rd.append_metrics({"round": 1})  # killed before its first checkpoint
    rd.close()
    with pytest.raises(ConfigError, match="already holds a run"):
        RunDir(tmp_path).open(resume=False)
    assert not RunDir(tmp_path).locked
    rd.open(resume=True)
    rd.close()
    (tmp_path / METRICS).unlink()
    RunDir(tmp_path, rank=1).save_checkpoint(_payload())
    RunDir(tmp_path, rank=0).open(resume=False)  # rank 0 has no checkpoint of its own
    with pytest.raises(ConfigError, match="already holds a run"):
        RunDir(tmp_path, rank=1).open(resume=False)


def test_rank_locks_are_per_rank_and_rank_zero_also_locks_the_folder(tmp_path):
    peers = [RunDir(tmp_path, rank=r) for r in range(3)]
    for p in peers:
        p.open(resume=False)  # one run's processes do not exclude each other
    with pytest.raises(ConfigError, match="in use"):
        RunDir(tmp_path).open(resume=False)  # an in-process run into the same folder
    with pytest.raises(ConfigError, match="in use"):
        RunDir(tmp_path, rank=2).open(resume=False)  # a second run's rank 2
    assert oct((tmp_path / "rank-1").stat().st_mode & 0o777) == "0o700"
    for p in peers:
        p.close()


def test_lock_dies_with_a_killed_holder(tmp_path):
    code = (
        "import sys, time; from dmhe.rundir import RunDir; "
        f"rd = RunDir({str(tmp_path)!r}); rd.open(resume=False); print('locked', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"pid {proc.pid} on"):
            RunDir(tmp_path).open(resume=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rd = RunDir(tmp_path)
    rd.open(resume=False)  # kill -9 released it
    rd.close()


def test_trainer_releases_the_lock_when_it_fails(tmp_path):
    cfg = TrainConfig(**SMALL, out_dir=str(tmp_path))
    holder = RunDir(tmp_path)
    holder.open(resume=False)
    with pytest.raises(ConfigError, match="in use by another run"):
        Trainer(cfg).train()
    assert not (tmp_path / METRICS).exists()
    holder.close()
    Trainer(TrainConfig(**{**SMALL, "rounds": 1}, out_dir=str(tmp_path))).train()
    # after a finished run the same process may resume into the folder again
    assert (
        Trainer(TrainConfig(**{**SMALL, "rounds": 1}, out_dir=str(tmp_path))).train(resume=True)
        == []
    )


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_digest(tmp_path):
    rd = RunDir(tmp_path)
    rd.save_checkpoint(_payload())
    ckpt = rd.load_checkpoint("cpu")
    assert ckpt is not None and ckpt["round"] == 2
    assert torch.equal(ckpt["model"]["w"], _payload()["model"]["w"])
    assert "digest" not in ckpt
    assert not list(tmp_path.glob(".*tmp*"))


def test_payload_digest_sees_every_change():
    base = payload_digest(_payload())
    changes = []
    p = _payload()
    p["model"]["w"][1, 2] = p["model"]["w"][1, 2].nextafter(torch.tensor(10.0))
    changes.append(p)
    p = _payload()
    p["model"]["b"] = p["model"]["b"].to(torch.int32)
    changes.append(p)
    p = _payload()
    p["model"]["w"] = p["model"]["w"].reshape(5, 4)
    changes.append(p)
    p = _payload()
    p["config"]["lr"] = 0.3
    changes.append(p)
    changes.append(_payload(rnd=1))
    p = _payload()
    p["model"] = {"b": p["model"]["b"], "w": p["model"]["w"], "h": p["model"]["h"]}
    changes.append(p)
    assert len({base, *(payload_digest(c) for c in changes)}) == len(changes) + 1


def _flip_tensor_byte(path) -> None:
    """Flip one byte inside the stored tensor data (not the pickle), as a bad disk would."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            name_len = int.from_bytes(f.read(2), "little")
            extra_len = int.from_bytes(f.read(2), "little")
        offset = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_tensor_byte_is_refused(tmp_path):
    rd = RunDir(tmp_path)
    rd.save_checkpoint(_payload())
    path = tmp_path / CHECKPOINT
    _flip_tensor_byte(path)
    # torch itself loads it (that is the bug this digest closes) ...
    assert not torch.equal(
        torch.load(path, weights_only=True)["model"]["w"], _payload()["model"]["w"]
    )
    with pytest.raises(ConfigError, match="does not match its digest"):
        rd.load_checkpoint("cpu")


@pytest.mark.parametrize("cut", [0.5, 0.99, 0.0])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    rd = RunDir(tmp_path)
    rd.save_checkpoint(_payload())
    path = tmp_path / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ConfigError, match="unreadable"):
        rd.load_checkpoint("cpu")


def test_edited_or_undigested_checkpoint_is_refused(tmp_path):
    rd = RunDir(tmp_path)
    rd.save_checkpoint(_payload())
    path = tmp_path / CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["w"] += 1  # an edit that keeps the old digest
    torch.save(ckpt, path)
    with pytest.raises(ConfigError, match="does not match its digest"):
        rd.load_checkpoint("cpu")
    torch.save(_payload(), path)  # a checkpoint without any digest
    with pytest.raises(ConfigError, match="lacks its digest"):
        rd.load_checkpoint("cpu")


@pytest.mark.parametrize("rnd", [-5, 4, 99, "2", 2.0, True, None])
def test_bad_rounds_are_refused(tmp_path, rnd):
    rd = RunDir(tmp_path)
    payload = _payload()
    payload["round"] = rnd
    rd.save_checkpoint(payload)  # a correct digest: the round itself must be checked
    with pytest.raises(ConfigError, match="round"):
        rd.load_checkpoint("cpu")


def test_round_beyond_the_new_rounds_is_refused(tmp_path):
    rd = RunDir(tmp_path)
    rd.save_checkpoint(_payload(rnd=3, rounds=3))
    assert rd.load_checkpoint("cpu", max_round=3) is not None
    with pytest.raises(ConfigError, match="beyond the run's 2 rounds"):
        rd.load_checkpoint("cpu", max_round=2)


# --------------------------------------------------------------------------- metrics and resume


def test_torn_last_metrics_line_is_dropped_bad_middle_line_refused(tmp_path):
    rd = RunDir(tmp_path)
    for r in (1, 2, 3):
        rd.append_metrics({"round": r})
    path = tmp_path / METRICS
    with open(path, "a") as f:
        f.write('{"round": 4, "acc')  # killed mid-append
    rd.truncate_metrics(2)
    assert [json.loads(x)["round"] for x in path.read_text().splitlines()] == [1, 2]
    bad = '{"round": 1}\nnot json\n{"round": 2}\n'
    path.write_text(bad)
    with pytest.raises(ConfigError, match="line 2"):
        rd.truncate_metrics(1)
    assert path.read_text() == bad


def _snapshot(d) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != LOCK}


@pytest.mark.parametrize("damage", ["flip", "truncate", "round=-5", "round=7"])
def test_refused_resume_changes_nothing(tmp_path, damage):
    cfg = TrainConfig(**SMALL, out_dir=str(tmp_path))
    Trainer(cfg).train(stop_after=2)
    with open(tmp_path / METRICS, "a") as f:  # a round logged after the last checkpoint
        f.write(json.dumps({"round": 3, "accuracy": -1}) + "\n")
    path = tmp_path / CHECKPOINT
    if damage == "flip":
        _flip_tensor_byte(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        ckpt = RunDir(tmp_path).load_checkpoint("cpu")
        assert ckpt is not None
        ckpt["round"] = int(damage.split("=")[1])
        RunDir(tmp_path).save_checkpoint(ckpt)
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError):
        Trainer(cfg).train(resume=True)
    assert _snapshot(tmp_path) == before  # metrics not truncated, checkpoint not rewritten


@pytest.mark.slow
def test_resume_after_kill_9_is_bit_identical(tmp_path):
    """A real kill -9 of an in-process CLI run between rounds, then --resume."""
    common = ["--dataset", "synthetic", "--synthetic-shape", "1x8x8", "--synthetic-size", "120,40"]
    common += ["--peers", "3", "--rounds", "5", "--no-progress"]
    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    argv = [sys.executable, "-m", "dmhe", "train", *common, "-o", str(cut)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            lines = (cut / METRICS).read_text().splitlines() if (cut / METRICS).exists() else []
            if len(lines) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = RunDir(cut).load_checkpoint("cpu")
    assert done is not None and 1 <= done["round"] <= 5
    assert subprocess.run([*argv, "--resume"], env=env, capture_output=True).returncode == 0
    cli_defaults = dict(synthetic_shape=(1, 8, 8), synthetic_size=(120, 40), peers=3, rounds=5)
    full = Trainer(TrainConfig(dataset="synthetic", **cli_defaults))
    full.train()
    resumed = RunDir(cut).load_checkpoint("cpu")
    assert resumed is not None and resumed["round"] == 5
    want = flatten_state(full.model)
    got = torch.cat(
        [v.reshape(-1).float() for k, v in resumed["model"].items() if v.is_floating_point()]
    )
    assert torch.equal(want, got)
    rounds = [json.loads(x)["round"] for x in (cut / METRICS).read_text().splitlines()]
    assert rounds == [1, 2, 3, 4, 5]


def test_cli_second_run_into_a_locked_folder_exits_2(tmp_path, capsys):
    from dmhe.cli import main

    holder = RunDir(tmp_path)
    holder.open(resume=False)
    argv = ["train", "--dataset", "synthetic", "--synthetic-shape", "1x8x8", "--rounds", "1"]
    try:
        assert main([*argv, "--no-progress", "-o", str(tmp_path)]) == 2
    finally:
        holder.close()
    assert f"in use by another run (pid {os.getpid()} on" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]
