"""``dmhe train`` and ``dmhe report``.

Bad flags and impossible settings print a one-line reason on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _shape(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.lower().replace("x", ",").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r} (e.g. 1x28x28)") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``dmhe`` argument parser (``train`` and ``report`` sub-commands)."""
    from dmhe.config import MODES, TrainConfig
    from dmhe.data import DATASETS

    d = TrainConfig()
    p = _Parser(prog="dmhe", description="Decentralized training with exact secure aggregation.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one configuration")
    t.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    t.add_argument("--data-dir", default=None, help="torchvision data folder (mnist, cifar10)")
    t.add_argument("--download", action="store_true", help="let torchvision download the data")
    t.add_argument("--model", default=d.model, help="mlp, cnn, cifar_cnn, resnet18, or torchvision")
    t.add_argument("--peers", "-k", type=_positive_int, default=d.peers)
    t.add_argument("--rounds", type=_positive_int, default=d.rounds)
    t.add_argument("--local-steps", type=_positive_int, default=d.local_steps)
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--mode", choices=list(MODES), default=d.mode)
    t.add_argument("--clip", type=float, default=d.clip, help="public clip bound c")
    t.add_argument("--clip-kind", choices=["l2", "coordinate"], default=d.clip_kind)
    t.add_argument("--scale-bits", type=int, default=d.scale_bits, help="fixed-point scale f")
    t.add_argument("--threshold", type=int, default=None, help="t-out-of-K (encrypted modes)")
    t.add_argument("--device", default=d.device)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--out-dir", "-o", default=None)
    t.add_argument("--alpha", type=float, default=None, help="Dirichlet non-IID split (None: IID)")
    t.add_argument("--dp-epsilon", type=float, default=None)
    t.add_argument("--dp-delta", type=float, default=d.dp_delta)
    t.add_argument("--dp-sigma", type=float, default=None, help="noise multiplier instead of ε")
    t.add_argument("--dp-accountant", choices=["rdp", "prv"], default=d.dp_accountant)
    t.add_argument("--dp-max-grad-norm", type=float, default=d.dp_max_grad_norm, help="dp-sgd")
    t.add_argument("--dp-bits", type=int, default=None, help="ddg: clip norm = 2^bits units")
    t.add_argument(
        "--dp-reproducible",
        action="store_true",
        help="noise from the run seed (tests: not private)",
    )
    t.add_argument("--drop-prob", type=float, default=d.drop_prob, help="simulated dropouts")
    t.add_argument("--max-retries", type=int, default=d.max_retries)
    t.add_argument("--synthetic-shape", type=_shape, default=d.synthetic_shape)
    t.add_argument("--synthetic-size", type=_shape, default=d.synthetic_size, help="N_TRAIN,N_TEST")
    t.add_argument(
        "--aggregator-option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra keyword for the aggregator, e.g. lam=40 (repeatable)",
    )
    t.add_argument(
        "--transport",
        choices=["inprocess", "torch"],
        default="inprocess",
        help="torch: one process per peer under torchrun (gloo on CPU, NCCL on CUDA)",
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("experiment", help="the paper's comparison as one command")
    e.add_argument("name", choices=["paper"], help="which experiment")
    e.add_argument("--data-dir", default=None, help="torchvision MNIST/CIFAR-10 folder")
    e.add_argument("--quick", action="store_true", help="small CI settings (under 2 minutes)")
    e.add_argument("--out", default="runs/paper", help="output folder (default: runs/paper)")

    r = sub.add_parser("report", help="tables and plots from run folders")
    r.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl and run.json)")
    r.add_argument("--out", required=True, help="output folder")
    return p


def _config_from_args(args: argparse.Namespace) -> Any:
    from dmhe.config import ConfigError, TrainConfig

    options: dict[str, Any] = {}
    for item in args.aggregator_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--aggregator-option needs KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.synthetic_size is not None and len(args.synthetic_size) != 2:
        raise ConfigError("--synthetic-size needs N_TRAIN,N_TEST")
    return TrainConfig(
        dataset=args.dataset,
        model=args.model,
        peers=args.peers,
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        mode=args.mode,
        clip=args.clip,
        clip_kind=args.clip_kind,
        scale_bits=args.scale_bits,
        threshold=args.threshold,
        device=args.device,
        seed=args.seed,
        out_dir=args.out_dir,
        alpha=args.alpha,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_sigma=args.dp_sigma,
        dp_accountant=args.dp_accountant,
        dp_max_grad_norm=args.dp_max_grad_norm,
        dp_bits=args.dp_bits,
        dp_reproducible=args.dp_reproducible,
        data_dir=args.data_dir,
        download=args.download,
        drop_prob=args.drop_prob,
        max_retries=args.max_retries,
        synthetic_shape=tuple(args.synthetic_shape),
        synthetic_size=tuple(args.synthetic_size),
        aggregator_options=options,
    )


def _train(args: argparse.Namespace) -> int:
    from dmhe.config import ConfigError, UpdateRefused
    from dmhe.trainer import Trainer

    transport = None
    try:
        cfg = _config_from_args(args)
        if args.resume and not cfg.out_dir:
            raise ConfigError("--resume needs --out-dir")
        if args.transport == "torch":
            import torch.distributed as dist

            from dmhe.transport import TorchDistributedTransport
            from gpubfv.backend import Backend

            if not dist.is_initialized():
                on_gpu = Backend.device_kind(cfg.device) != "cpu"
                dist.init_process_group(backend="nccl" if on_gpu else "gloo")
            transport = TorchDistributedTransport()
        trainer = Trainer(cfg, transport=transport)
        metrics = trainer.train(resume=args.resume, progress=not args.no_progress)
        if transport is not None:
            # complete the last pending sends before any process leaves the group
            transport.barrier()
            dist.destroy_process_group()
    except (ConfigError, UpdateRefused) as exc:
        # a refused round is not checkpointed: the run folder holds the last good round
        print(f"dmhe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if metrics and trainer.is_writer:
        m = metrics[-1]
        print(
            f"round {m['round']}: accuracy {m['accuracy']:.4f}, "
            f"{m['bytes_sent_per_peer'] / 1e6:.3f} MB sent per peer, "
            f"{m['time']['round']:.2f} s/round"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad flags or impossible settings)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad flags (2)
        return int(exc.code or 0)
    if args.command == "train":
        return _train(args)
    if args.command == "experiment":
        from dmhe.experiment import run_paper

        print(f"wrote {run_paper(Path(args.out), data_dir=args.data_dir, quick=args.quick)}")
        return 0
    from dmhe.report import ReportError, write_report

    try:
        path = write_report([Path(r) for r in args.runs], Path(args.out))
    except ReportError as exc:
        print(f"dmhe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
