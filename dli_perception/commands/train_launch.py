"""``dli-perception train --nproc N``: the same training, data-parallel, through torchrun's launcher.

The launch runs in this process with torch's own elastic launcher (exactly what ``torchrun`` does;
the equivalent ``torchrun`` command is printed first), starting N processes of
:mod:`dli_perception.train` on this machine, or on each of ``--nnodes`` machines with
``--node-rank`` and ``--master-addr``. A failed process is reported by rank, pid and exit code or
signal; torchrun stops the others; the model directory is then left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import socket
import sys
from pathlib import Path

from dli_perception.errors import ConfigError, DistributedError

EXIT_INTERRUPTED = 130
DEFAULT_MULTI_NODE_PORT = 29500
LAUNCH_DESTS = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """``--nproc`` and the rendezvous options of ``dli-perception train``."""
    from dli_perception.train import add_distributed_arguments

    g = p.add_argument_group(
        "data-parallel training (torch.distributed DDP, started like torchrun)",
        "With --nproc the run is split over N processes per machine (one per GPU with nccl, or CPU "
        "processes with gloo). The batch size stays the batch of one step: each process takes 1/N of it.",
    )
    g.add_argument("--nproc", type=int, metavar="N", help="processes on this machine (default: no DDP, one process)")
    g.add_argument("--nnodes", type=int, default=1, help="machines taking part (default 1)")
    g.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0..nnodes-1 (default 0)")
    g.add_argument(
        "--master-addr", default="127.0.0.1", help="address of node 0, reachable from every node (default 127.0.0.1)"
    )
    g.add_argument(
        "--master-port",
        type=int,
        default=0,
        help=f"TCP port on node 0 for the rendezvous (default: a free port on one machine, {DEFAULT_MULTI_NODE_PORT} "
        "with several)",
    )
    add_distributed_arguments(g)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The command line of :mod:`dli_perception.train` that repeats ``args`` (launch options left out)."""
    from dli_perception.train import build_parser

    argv: list[str] = []
    for action in build_parser()._actions:
        if action.dest == "help" or action.dest in LAUNCH_DESTS:
            continue
        value = getattr(args, action.dest, action.default)
        if not action.option_strings:
            if value is not None:  # an optional positional left out (MODEL_DIR given as --out)
                argv.append(str(value))
            continue
        if value is None or value == action.default:
            continue
        option = max(action.option_strings, key=len)
        argv += [option] if action.nargs == 0 else [option, str(value)]
    return argv


def torchrun_arguments(args: argparse.Namespace, port: int) -> list[str]:
    return [
        "--nproc-per-node",
        str(args.nproc),
        "--nnodes",
        str(args.nnodes),
        "--node-rank",
        str(args.node_rank),
        "--master-addr",
        args.master_addr,
        "--master-port",
        str(port),
        "--max-restarts",
        "0",
        "--monitor-interval",
        "0.5",
        "-m",
        "dli_perception.train",
        *worker_arguments(args),
    ]


def _check(args: argparse.Namespace) -> int:
    """Validate the launch options; returns the master port to use."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise ConfigError(f"--node-rank must be in 0..{args.nnodes - 1} with --nnodes {args.nnodes}")
    port = args.master_port or (free_port() if args.nnodes == 1 else DEFAULT_MULTI_NODE_PORT)
    if not 0 < port < 65536:
        raise ConfigError(f"--master-port must be in 1..65535, got {port}")
    from dli_perception.core.distributed import port_in_use, port_message

    if args.node_rank == 0 and port_in_use(port):
        raise DistributedError(port_message(port))
    return port


def describe_failure(exc, out: Path, ckpt_dir: Path) -> str:
    """One line for a ``ChildFailedError``: which rank failed first and how, and what was kept."""
    first_rank, _ = exc.get_first_failure()
    ranks = sorted(exc.failures, key=lambda r: (r != first_rank, r))
    parts = []
    for rank in ranks:
        failure = exc.failures[rank]
        how = (
            f"was killed by {failure.signal_name()}"
            if failure.exitcode is not None and failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        parts.append(f"rank {rank} (pid {failure.pid}) {how}" + (" first" if rank == first_rank else ""))
    kept = f"{out} was not written (an existing one is unchanged)"
    last = ckpt_dir / "last.pt"
    if last.is_file():
        kept += f"; checkpoints of completed epochs are in {ckpt_dir}: continue with --resume {last}"
    return f"distributed training failed: {', '.join(parts)}; torchrun stopped the other processes. {kept}"


def launch(args: argparse.Namespace) -> int:
    """Run ``dli-perception train`` with ``args.nproc`` processes; returns the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    from dli_perception.commands.train_args import checkpoint_dir_for

    port = _check(args)
    argv = torchrun_arguments(args, port)
    print(f"running: torchrun {shlex.join(argv)}", file=sys.stderr, flush=True)
    out = args.out.expanduser()
    ckpt_dir = checkpoint_dir_for(out, args.checkpoint_dir)
    if not getattr(args, "verbose", False):
        logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    # torchrun would set 1 thread per process (and print a banner); share the cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (args.nproc))))
    config, cmd, cmd_args = config_from_args(get_args_parser().parse_args(argv))
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except ChildFailedError as exc:
        raise DistributedError(describe_failure(exc, out, ckpt_dir)) from None
    except (KeyboardInterrupt, SignalException):
        print(
            f"interrupted: the training processes were stopped; {out} was not written "
            f"(continue with --resume {ckpt_dir / 'last.pt'} if it exists)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the launcher's own failures (rendezvous, store) end here
        text = " ".join(str(exc).split())
        if "EADDRINUSE" in text or "address already in use" in text.lower():
            from dli_perception.core.distributed import port_message

            raise DistributedError(port_message(port)) from None
        raise DistributedError(f"torchrun could not start the processes: {text[:400]}") from None
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
