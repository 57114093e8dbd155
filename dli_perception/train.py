"""``python -m dli_perception.train``: one process of a data-parallel training run, started by torchrun.

::

    torchrun --nproc-per-node 2 -m dli_perception.train DATASET --out MODEL_DIR [training options]

takes the options of ``dli-perception train`` (which wraps this with ``--nproc N``) plus
``--dist-timeout`` and ``--backend``. Every rank reads DATASET (the same files on every node),
rank 0 shows the progress, writes the checkpoints and exports MODEL_DIR atomically; the exit code
is 0 on every rank, or 1 with a one-line error (the same on every rank when they agree on it).
A rank that dies makes the others fail within ``--dist-timeout`` seconds at most (torchrun stops
them at once on the same node); MODEL_DIR is then left as it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dli_perception.errors import DistributedError, DliPerceptionError

EXIT_INTERRUPTED = 130


def add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    """Options of one rank that the launcher passes through."""
    from dli_perception.core.distributed import BACKENDS, DEFAULT_TIMEOUT_S

    p.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up when another process does not answer for this long (default %(default)g)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="torch.distributed backend: nccl on GPUs, gloo on the CPU (default auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    from dli_perception.commands.train_args import add_train_arguments

    p = argparse.ArgumentParser(
        prog="python -m dli_perception.train",
        description="One process of a data-parallel (DDP) training run; start it with torchrun, e.g. "
        "torchrun --nproc-per-node 2 -m dli_perception.train DATASET --out MODEL_DIR.",
    )
    add_train_arguments(p)
    add_distributed_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each rank; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.out is None and getattr(args, "model_dir_arg", None) is not None:
        args.out = args.model_dir_arg
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    rank = "?"
    try:
        from dli_perception.core import distributed

        with distributed.process_group(args.dist_timeout, args.backend, args.device or "auto") as ctx:
            rank = str(ctx.rank)
            return _run(args, ctx)
    except DliPerceptionError as exc:
        print(f"dli_perception.train rank {rank}: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"dli_perception.train rank {rank}: interrupted; nothing was exported", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, ctx) -> int:
    from dli_perception.commands.train_args import checkpoint_dir_for, config_from_args
    from dli_perception.commands.train_console import TrainProgress, quiet_logs, torch_threads
    from dli_perception.commands.train_summary import print_summary
    from dli_perception.core import distributed
    from dli_perception.core.export import DEFAULT_OPSET, export_model_dir

    config = config_from_args(args)
    out: Path = args.out.expanduser()
    ckpt_dir = checkpoint_dir_for(out, args.checkpoint_dir)
    print(ctx.describe(), file=sys.stderr, flush=True)
    if ctx.is_main:
        print(
            f"training {config.backbone} ({config.mode}, {config.epochs} epochs, input {config.preprocess.size}px, "
            f"weights {config.weights}) on {args.dataset} with {ctx.world_size} processes ({ctx.backend}); "
            f"checkpoints in {ckpt_dir}",
            flush=True,
        )
    progress = TrainProgress(enabled=ctx.is_main and getattr(args, "progress", True))
    with quiet_logs(args.verbose and ctx.is_main), torch_threads(args.torch_threads):
        try:
            result = distributed.train_distributed(
                ctx,
                args.dataset.expanduser(),
                config,
                checkpoint_dir=ckpt_dir,
                resume=args.resume,
                on_progress=progress,
            )
            progress.close()
            failure = None
            if ctx.is_main:
                try:
                    export_model_dir(result, out, opset=args.opset or DEFAULT_OPSET)
                except DliPerceptionError as exc:
                    failure = " ".join(str(exc).split())
            # Every rank waits for rank 0's export, so all end with its outcome and MODEL_DIR is complete
            # (or untouched) when any process exits.
            failure = distributed.broadcast_object(failure)
        except DliPerceptionError:
            raise
        except RuntimeError as exc:
            if distributed.is_collective_failure(exc):
                raise distributed.lost_peer_error(ctx, exc, ckpt_dir if ctx.is_main else None) from None
            raise
        finally:
            progress.close()
    if failure is not None:
        raise DistributedError(f"rank 0 could not export {out}: {failure}")
    if ctx.is_main:
        print_summary(result, out, sys.stdout)
    return 0


if __name__ == "__main__":
    code = main()
    if code == 0:
        # The run succeeded: the process group is destroyed and rank 0 has written the model directory
        # (atomically) and its summary. Ending here skips interpreter finalisation, during which torch's
        # gloo threads can still abort the process: a CI run saw rank 0 end with SIGABRT ("terminate called
        # without an active exception") after a complete export, and torchrun reported the run as failed.
        # A failing rank exits as before, so torchrun still tells which rank failed first.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)
