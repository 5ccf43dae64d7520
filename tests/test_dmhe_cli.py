"""The CLI explains itself: help and defaults on every flag, flags in errors, default mode and
output folder, --epochs, --config, eval, logging, TensorBoard, and no traceback without torch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dmhe.cli import build_parser, main
from dmhe.cli_settings import config_from_args
from dmhe.config import DEFAULT_DP_EPSILON, TrainConfig, rounds_for_epochs, to_flags

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "synthetic", "--synthetic-shape", "1x8x8", "--synthetic-size", "120,40"]
SMALL += ["--peers", "3", "--no-progress"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_flag_has_help_and_shows_its_default():
    subs = _subparsers(build_parser())
    assert {"train", "eval", "report"} <= set(subs)
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"dmhe {name} {action.dest}: no help"
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                shown = formatter._get_help_string(action)
                assert "default" in shown, f"dmhe {name} {action.option_strings[-1]}: no default"
        assert "(default: encrypted)" in sub.format_help() or name != "train"


def test_default_mode_is_encrypted():
    assert TrainConfig().mode == "encrypted"
    args = build_parser().parse_args(["train"])
    assert args.mode == "encrypted"


def test_errors_name_flags():
    assert to_flags("dp_epsilon must be positive: -1") == "--dp-epsilon must be positive: -1"
    assert to_flags("lr must be positive, got -1") == "--lr must be positive, got -1"
    assert "--resume" in to_flags("x already holds a run; pass resume or choose another out_dir")
    assert "--out-dir" in to_flags("resume needs out_dir")
    assert (
        to_flags("mode 'secagg' needs at least 2 peers") == "mode 'secagg' needs at least 2 peers"
    )


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--mode", "plaintext", "--dp-epsilon", "2"], "--dp-epsilon"),
        (["train", "--mode", "dp", "--dp-epsilon", "-3"], "--dp-epsilon"),
        (["train", "--threshold", "9"], "--threshold"),
        (["train", "--resume"], "--resume"),
        (["train", "--rounds", "2", "--epochs", "1"], "--epochs"),
        # flags of other modes are refused, not ignored, and nonsense is refused in every mode
        (["train", "--dp-bits", "5"], "--dp-bits"),
        (["train", "--dp-delta", "nan"], "--dp-delta"),
        (["train", "--dp-max-grad-norm", "inf"], "--dp-max-grad-norm"),
        (["train", "--mode", "dp", "--dp-epsilon", "inf"], "--dp-epsilon"),
        (["train", "--mode", "dp", "--dp-sigma", "nan"], "--dp-sigma"),
        (["train", "--peer-timeout", "nan"], "--peer-timeout"),
        (["train", "--setup-drop-prob", "1.5"], "--setup-drop-prob"),
        (["train", "--dataset", "synthetic", "--synthetic-shape", "1x-3x2"], "synthetic_shape"),
        (["train", "--synthetic-shape", "0x2"], "synthetic_shape"),
        (["train", "--synthetic-size", "10,0"], "synthetic_size"),
    ],
)
def test_bad_settings_exit_2_naming_the_flag(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert "dp_epsilon" not in err and "out_dir" not in err


def test_rounds_from_epochs():
    # 120 samples over 3 peers: 40 each; 5 batches of 8 per epoch; 2 local steps per round
    assert rounds_for_epochs(1, train_size=120, peers=3, local_steps=2, batch_size=8) == 3
    assert rounds_for_epochs(2, train_size=120, peers=3, local_steps=1, batch_size=8) == 10
    args = build_parser().parse_args(["train", *SMALL, "--epochs", "1", "--batch-size", "8"])
    assert config_from_args(args).rounds == 5


def test_dp_modes_get_the_documented_default_epsilon():
    for mode in ("dp", "encrypted-dp"):
        cfg = config_from_args(build_parser().parse_args(["train", "--mode", mode]))
        assert cfg.dp_epsilon == DEFAULT_DP_EPSILON and cfg.dp_sigma is None
    cfg = config_from_args(build_parser().parse_args(["train", "--mode", "dp", "--dp-sigma", "2"]))
    assert cfg.dp_epsilon is None


def test_default_output_folder_printed_at_start_and_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SMALL, "--rounds", "2", "--mode", "secagg"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("secagg-")
    assert (run / "metrics.jsonl").exists() and (run / "checkpoint.pt").exists()
    err = capsys.readouterr().err
    assert err.count(f"runs/{run.name}") >= 2  # at start and at the end
    assert "estimate after round 1 of 2" in err
    assert "UserWarning" not in err
    # a second run in the same second gets its own folder
    assert main(["train", *SMALL, "--rounds", "1", "--mode", "secagg"]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_config_file_and_run_json_with_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 8, 8), synthetic_size=(120, 40),
                      peers=3, rounds=1, mode="plaintext", lr=0.05)  # fmt: skip
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert main(["train", "--config", str(path), "--no-progress", "-o", "a"]) == 0
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["config"]["lr"] == 0.05 and info["config"]["mode"] == "plaintext"
    # run.json as is; flags on the command line override it
    argv = ["train", "--config", "a/run.json", "--lr", "0.2", "--no-progress", "-o", "b"]
    assert main(argv) == 0
    again = json.loads((tmp_path / "b" / "run.json").read_text())["config"]
    assert again["lr"] == 0.2 and again["peers"] == 3 and again["mode"] == "plaintext"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lr": 0.1, "learning_rate": 3}))
    assert main(["train", "--config", str(bad)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_eval_loads_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--rounds", "2", "--mode", "plaintext", "-o", str(run)]) == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {last['accuracy']:.4f}" in out and "round 2" in out
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "not a dmhe run folder" in capsys.readouterr().err


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    argv = ["train", *SMALL, "--rounds", "2", "--mode", "plaintext", "--tensorboard"]
    assert main([*argv, "-o", str(run)]) == 0
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert "accuracy" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("accuracy")] == [1, 2]
    assert (run / "metrics.jsonl").exists()  # kept beside it


def test_log_level_and_one_line_warnings(tmp_path, capsys):
    import logging

    from dmhe.log import setup_logging

    setup_logging("warning")
    logging.getLogger("dmhe").info("hidden")
    warnings.warn("something odd", stacklevel=1)
    err = capsys.readouterr().err
    assert err.strip() == "dmhe: warning: something odd"
    with pytest.raises(ValueError):
        setup_logging("loud")
    setup_logging("info")


def test_without_torch_an_install_hint_not_a_traceback():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from dmhe.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv, rc in ((["--help"], 0), (["train", "--help"], 0), (["train"], 2)):
        proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == rc, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "pip install" in proc.stderr and "download.pytorch.org/whl/cpu" in proc.stderr
    assert "train" in proc.stdout or rc == 2
