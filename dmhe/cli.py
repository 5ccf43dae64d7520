"""``dmhe train``, ``dmhe eval`` and ``dmhe report``.

Every flag has a help text and shows its default (``dmhe train --help``). Bad flags and
impossible settings print a one-line reason naming the flag on stderr and exit with code 2.
Without PyTorch installed, ``dmhe`` prints how to install it instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2

INSTALL_HINT = (
    "dmhe needs PyTorch, which is not installed here. Install the training extra:\n"
    "    pip install -e '.[train]'\n"
    "On a machine without an NVIDIA GPU, install the CPU-only torch build first (a far smaller "
    "download):\n"
    "    pip install torch==2.14.1 torchvision==0.29.1 "
    "--index-url https://download.pytorch.org/whl/cpu"
)

# datasets when dmhe.data (which imports torch) cannot be loaded: only for --help
_DATASETS_NO_TORCH = ("digits", "mnist", "cifar10", "synthetic")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults on every flag (``None`` shown as ``none``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "default:" in text
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return text + (" (default: none)" if action.default is None else " (default: %(default)s)")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _shape(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.lower().replace("x", ",").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r} (e.g. 1x28x28)") from None


def _datasets() -> tuple[str, ...]:
    try:
        from dmhe.data import DATASETS
    except ImportError:
        return _DATASETS_NO_TORCH
    return tuple(DATASETS)


def _common(p: argparse.ArgumentParser) -> None:
    from dmhe.log import LEVELS

    p.add_argument("--log-level", choices=LEVELS, default="info", help="messages shown")


def build_parser() -> argparse.ArgumentParser:
    """The ``dmhe`` argument parser (``train``, ``eval`` and ``report`` sub-commands)."""
    from dmhe.config import DEFAULT_DP_EPSILON, MODES, TrainConfig

    d = TrainConfig()
    p = _Parser(
        prog="dmhe",
        description="Decentralized training with exact secure aggregation.",
        formatter_class=_Help,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser(
        "train",
        help="train one configuration",
        formatter_class=_Help,
        description="Train K peers; writes run.json, metrics.jsonl and checkpoints to --out-dir.",
    )
    _common(t)
    t.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON settings (a TrainConfig "
        "dict, or a run.json: its 'config' block); flags given here override it",
    )
    t.add_argument("--dataset", choices=_datasets(), default=d.dataset, help="training data")
    t.add_argument("--data-dir", default=None, help="torchvision data folder (mnist, cifar10)")
    t.add_argument("--download", action="store_true", help="let torchvision download the data")
    t.add_argument(
        "--model", default=d.model, help="logreg, mlp, cnn, cifar_cnn, resnet18, or torchvision"
    )
    t.add_argument("--peers", "-k", type=_positive_int, default=d.peers, help="number of peers K")
    length = t.add_mutually_exclusive_group()
    length.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help=f"aggregation rounds (default: {d.rounds}, or from --epochs)",
    )
    length.add_argument(
        "--epochs",
        type=_positive_float,
        default=None,
        help="passes over each peer's partition instead of --rounds: rounds = "
        "ceil(epochs * ceil(N_train / K) / (local_steps * batch_size))",
    )
    t.add_argument(
        "--local-steps",
        type=_positive_int,
        default=d.local_steps,
        help="SGD steps per peer per round (one batch each)",
    )
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="batch size")
    t.add_argument("--lr", type=float, default=d.lr, help="local SGD learning rate")
    t.add_argument("--mode", choices=list(MODES), default=d.mode, help="aggregation mode")
    t.add_argument("--clip", type=float, default=d.clip, help="public clip bound c of an update")
    t.add_argument(
        "--clip-kind",
        choices=["l2", "coordinate"],
        default=d.clip_kind,
        help="l2: global norm clipping; coordinate: per value",
    )
    t.add_argument("--scale-bits", type=int, default=d.scale_bits, help="fixed-point scale f")
    t.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="t-out-of-K keys (encrypted modes); none: all K peers needed",
    )
    t.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    t.add_argument("--seed", type=int, default=d.seed, help="seed of data split, init, batches")
    t.add_argument(
        "--out-dir", "-o", default=None, help="run folder (default: runs/<mode>-<timestamp>)"
    )
    t.add_argument("--alpha", type=float, default=None, help="Dirichlet non-IID split (none: IID)")
    t.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help=f"DP modes: target ε over the run (default: {DEFAULT_DP_EPSILON:g} "
        "when --dp-sigma is not given either)",
    )
    t.add_argument("--dp-delta", type=float, default=d.dp_delta, help="DP modes: target δ")
    t.add_argument("--dp-sigma", type=float, default=None, help="DP noise multiplier instead of ε")
    t.add_argument(
        "--dp-accountant",
        choices=["rdp", "prv"],
        default=d.dp_accountant,
        help="Gaussian DP modes: Opacus accountant",
    )
    t.add_argument(
        "--dp-max-grad-norm",
        type=float,
        default=d.dp_max_grad_norm,
        help="dp-sgd: per-sample gradient clip",
    )
    t.add_argument("--dp-bits", type=int, default=None, help="ddg: clip norm = 2^bits units")
    t.add_argument(
        "--dp-reproducible",
        action="store_true",
        help="noise from the run seed (tests: not private)",
    )
    t.add_argument("--drop-prob", type=float, default=d.drop_prob, help="simulated dropouts")
    t.add_argument(
        "--max-retries",
        type=int,
        default=d.max_retries,
        help="retries of a round that lost a needed peer",
    )
    t.add_argument(
        "--synthetic-shape",
        type=_shape,
        default=d.synthetic_shape,
        help="input shape of --dataset synthetic, e.g. 1x28x28",
    )
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
        choices=["auto", "inprocess", "torch"],
        default="auto",
        help="auto: torch under torchrun, else inprocess; torch: one process per peer under "
        "torchrun (gloo on CPU, NCCL on CUDA); inprocess: all peers simulated in this process",
    )
    from dmhe import launch

    launch.add_fault_flags(t, d)
    t.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write metrics for TensorBoard to <out-dir>/tensorboard",
    )

    e = sub.add_parser(
        "eval", help="evaluate a run's checkpoint on the test split", formatter_class=_Help
    )
    _common(e)
    e.add_argument("run", help="run folder (with run.json and checkpoint.pt)")
    e.add_argument("--data-dir", default=None, help="torchvision data folder (mnist, cifar10)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")

    x = sub.add_parser(
        "experiment", help="the paper's comparison as one command", formatter_class=_Help
    )
    _common(x)
    x.add_argument("name", choices=["paper"], help="which experiment")
    x.add_argument("--data-dir", default=None, help="torchvision MNIST/CIFAR-10 folder")
    x.add_argument("--quick", action="store_true", help="small CI settings (under 2 minutes)")
    x.add_argument("--out", "-o", default="runs/paper", help="output folder (default: runs/paper)")

    r = sub.add_parser("report", help="tables and plots from run folders", formatter_class=_Help)
    _common(r)
    r.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl and run.json)")
    r.add_argument("--out", "-o", required=True, help="output folder")
    return p


# ---------------------------------------------------------------------- settings


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; for ``train --config FILE`` the file's settings become the defaults."""
    argv = list(argv)
    if argv[:1] == ["train"]:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv[1:])
        if known.config:
            from dmhe.cli_settings import load_config_file

            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    action.choices["train"].set_defaults(**load_config_file(known.config))
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- commands


def _explicit_peers(argv: Sequence[str]) -> int | None:
    """``--peers`` as given on the command line, None when it was left at its default."""
    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers only there
        if isinstance(action, argparse._SubParsersAction):
            for a in action.choices["train"]._actions:
                a.default = argparse.SUPPRESS
    return getattr(parser.parse_args(list(argv)), "peers", None)


def _train(args: argparse.Namespace) -> int:
    from dmhe import launch
    from dmhe.cli_settings import config_from_args
    from dmhe.config import ConfigError, UpdateRefused, to_flags
    from dmhe.dropouts import PeersLost
    from dmhe.log import MetricsLog, get_logger
    from dmhe.trainer import Trainer
    from dmhe.transport import PeerDropped

    log = get_logger()
    transport = restart = None
    round_log = None
    try:
        env = launch.torchrun_env()
        if env is not None:
            # Join the peers before checking anything, so that a refusal reaches them.
            from gpubfv.backend import Backend

            on_gpu = Backend.device_kind(args.device) != "cpu"
            from dmhe.transport import WaitPolicy

            policy = WaitPolicy(fixed=args.peer_timeout, setup=args.setup_timeout)
            transport = launch.init_torch_transport(
                env, on_gpu=on_gpu, policy=policy, setup_timeout=args.setup_timeout
            )
        try:
            kind = launch.choose_transport(args.transport, env, argv=args.argv, peers=args.peers)
            if env is not None:  # a resume first takes over an original peer (dmhe.restart)
                out = args.out_dir if args.resume else None
                restart = launch.restart_identity(transport, out, bound=args.setup_timeout)
                explicit = _explicit_peers(args.argv)
                args.peers = launch.peers_under_torchrun(env, explicit, restart)
            cfg = config_from_args(args)
            if args.resume and not cfg.out_dir:
                raise ConfigError("--resume needs --out-dir")
        except ConfigError as exc:
            if transport is None:
                raise
            # before the trainer's own handshake, which reports its later refusals itself
            raise launch.refuse(transport, exc) from None
        with launch.rank_output(cfg.out_dir, env, restart) as rank_log:
            try:
                tb = Path(cfg.out_dir) / "tensorboard" if args.tensorboard else None
                round_log = MetricsLog(tensorboard=tb, quiet=not args.no_progress)
                trainer = Trainer(
                    cfg, transport=transport if kind == "torch" else None, log=round_log
                )
            except ConfigError as exc:
                if transport is None:
                    raise
                raise launch.refuse(transport, exc) from None
            round_log.active = trainer.is_writer
            if trainer.is_writer:
                log.info(
                    "%s, K=%d, %d rounds: output in %s",
                    cfg.mode,
                    cfg.peers,
                    cfg.rounds,
                    cfg.out_dir,
                )
            if rank_log is not None:
                trainer.log = rank_log
            progress = not args.no_progress and trainer.is_writer
            trainer.resume_round = None if restart is None else restart.round
            metrics = trainer.train(resume=args.resume, progress=progress)
        if transport is not None:
            launch.close_torch_transport(transport, clean=True)
    except (ConfigError, UpdateRefused) as exc:
        # a refused round is not checkpointed: the run folder holds the last good round
        print(f"dmhe: error: {to_flags(str(exc))}", file=sys.stderr)
        if transport is not None:
            launch.close_torch_transport(transport, clean=False)
        if transport is not None and transport.lost_any:
            return launch.leave(transport, EXIT_USAGE)  # a group with closed pairs: os._exit
        return EXIT_USAGE
    except (PeerDropped, PeersLost) as exc:
        return launch.leave(transport, launch.run_failed(exc))
    except RuntimeError as exc:
        if transport is None:
            raise
        return launch.leave(transport, launch.run_failed(exc))
    finally:
        if round_log is not None:
            round_log.close()
    if metrics and trainer.is_writer and progress:  # without a bar every round was logged
        from dmhe.log import log_metrics_line

        log.info("%s", log_metrics_line(metrics[-1]))
    if trainer.is_writer:
        log.info("output in %s (dmhe eval %s; dmhe report %s --out ...)", *[cfg.out_dir] * 3)
    return launch.leave(transport, 0)


def _report(args: argparse.Namespace) -> int:
    from dmhe.log import get_logger
    from dmhe.report import ReportError, write_report

    try:
        path = write_report([Path(r) for r in args.runs], Path(args.out))
    except ReportError as exc:
        print(f"dmhe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    get_logger().info("wrote %s", path)
    return 0


def _torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad flags or impossible settings)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # torch's idle OpenMP threads spin and steal the cores of numba's ChaCha20/DP samplers (DP
    # noise 8-144 ms per call vs 5-9 ms passive); read when torch loads; the user's value stands
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if _torch_missing():
        print(INSTALL_HINT, file=sys.stderr)
        if not argv or "-h" in argv or "--help" in argv:
            build_parser().print_help()
            return 0 if argv else EXIT_USAGE
        return EXIT_USAGE
    from dmhe.config import ConfigError
    from dmhe.log import setup_logging

    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # argparse: --help (0) or bad flags (2)
        code = int(exc.code or 0)
        if code == EXIT_USAGE:
            from dmhe.launch import refuse_bad_flags

            refuse_bad_flags(argv)  # under torchrun: the other ranks must not wait for this one
        return code
    except ConfigError as exc:
        print(f"dmhe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level)
    if args.command == "train":
        args.argv = argv
        return _train(args)
    if args.command == "eval":
        from dmhe.evaluate import eval_command

        return eval_command(args)
    if args.command == "experiment":
        from dmhe.experiment import run_paper
        from dmhe.log import get_logger

        get_logger().info(
            "wrote %s", run_paper(Path(args.out), data_dir=args.data_dir, quick=args.quick)
        )
        return 0
    return _report(args)


if __name__ == "__main__":
    sys.exit(main())
