"""``dli-perception teach``: the teach station, a web page to label, train, watch and react.

    dli-perception teach                        # nodes of the teach set + the page on http://127.0.0.1:8080
    dli-perception teach source:=v4l2 epochs:=20
    dli-perception teach --connect --host 0.0.0.0   # only the page, for nodes already running (any machine)

Without ``--connect`` it starts the ``teach`` node set (camera, recorder, trainer, classifier,
reaction; the same as ``dli-perception up teach``, with the same ``NAME:=VALUE``, ``--params`` and
``-p`` options) in this process, and serves the page beside it. With ``--connect`` it starts no
node and drives the nodes it finds on the ROS graph (``--namespace`` chooses which).

The page talks to the nodes only through their topics and services (the package's graph client).
It listens on 127.0.0.1 unless ``--host`` says otherwise; on any other address every request needs
the token printed at start (``--token`` chooses it). Ctrl-C stops the page and the nodes (the
reaction node sends its zero Twist) and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from dli_perception.errors import ConfigError

SET = "teach"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``teach`` subcommand."""
    from dli_perception.commands import up

    p = sub.add_parser(
        "teach",
        help="the teach station: label, train, watch and react from a web page",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(p)
    up._add_options(p)
    p.set_defaults(func=run)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", action="store_true", help="start no node: drive the nodes already running")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DLI_TEACH_PORT", "8080")),
        help="port to listen on (0: any free port; default $DLI_TEACH_PORT or 8080)",
    )
    p.add_argument("--token", default=None, help="token the page requires (default: a random one off localhost)")
    p.add_argument(
        "--no-token", action="store_true", help="no token on localhost even when --token is given (refused off it)"
    )
    p.add_argument("--max-fps", type=float, default=20.0, help="most live-view frames per second sent (default 20)")


def _server_options(args: argparse.Namespace):
    from dli_perception.teach import security
    from dli_perception.teach.server import ServerOptions

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be 0..65535")
    if not 1.0 <= args.max_fps <= 60.0:
        raise ConfigError(f"--max-fps {args.max_fps:g}: must be 1..60")
    token = security.token_for_bind(args.host, args.token, args.no_token)
    return ServerOptions(
        host=args.host, port=args.port, token=token, namespace=args.namespace or "", max_fps=args.max_fps
    )


def _default_weights(plan) -> str:
    """Train from random weights when the ImageNet ones are not cached and none were chosen; say so."""
    trainer = plan.parameters.setdefault("trainer_node", {})
    if trainer.get("weights", "imagenet") != "imagenet" or trainer.get("download_weights"):
        return ""
    from dli_perception.core.training import imagenet_weights_path

    cached = imagenet_weights_path(trainer.get("backbone", "resnet18"))
    if cached.is_file():
        return ""
    trainer["weights"] = "none"
    return (
        f"note: no ImageNet weights in {cached}; training starts from random weights (weights:=none), which "
        "learns simple scenes but is less accurate on real images. Copy the file there for better models."
    )


def run(args: argparse.Namespace) -> int:
    from dli_perception.commands import up
    from dli_perception.nodes.runtime import StopSignal

    options = _server_options(args)
    plan = None
    if not args.connect:
        args.set = SET
        args.rest = []
        combined = up._combined(args)
        plan = up.build_plan(
            SET,
            combined.params,
            combined.assignments,
            combined.param,
            namespace=combined.namespace,
            local_frames=not combined.no_local_frames,
        )
        note = _default_weights(plan)
        if args.dry_run:
            print(up.as_yaml(plan), end="")
            return 0
        if note:
            print(note, flush=True)
    elif args.assignments or args.params or args.param:
        raise ConfigError("--connect starts no node: NAME:=VALUE, --params and -p apply to the nodes it would start")

    from dli_perception.teach.server import TeachServer

    server = TeachServer(options)
    if plan is None:
        from dli_perception.nodes import launcher

        signals = StopSignal().install()
        if launcher.EARLY_STOP.is_set():  # stopped while still importing
            signals.event.set()
        try:
            if not signals.event.is_set():  # stopped before it listened: start nothing
                url = server.start()
                if not signals.event.is_set():  # a stop during the start: no address to announce
                    _announce(url, options, "drives the nodes on the ROS graph")
            signals.event.wait()
        finally:
            signals.ignore()  # launch's second SIGINT, now or while the interpreter exits, changes nothing
            server.stop()
        return 0
    stop = threading.Event()
    failed: list[str] = []

    def serve() -> None:  # the page starts while the nodes come up
        try:
            url = server.start()
            if url and not stop.is_set():
                _announce(url, options, f"nodes: {', '.join(plan.node_set.nodes)}")
        except Exception as exc:  # noqa: BLE001 - e.g. the port is taken: stop the nodes, report it
            failed.append(str(exc))
            print(f"dli-perception teach: error: the page cannot start: {exc}", file=sys.stderr, flush=True)
            stop.set()

    starter = threading.Thread(target=serve, name="teach_start", daemon=True)
    starter.start()
    try:
        code = _start_nodes(plan, stop)
    finally:
        server.stop()  # the nodes are down (zero Twist sent); a start still under way starts nothing
        starter.join(timeout=1.0)
        server.stop()  # in case start() got past its check just before the first stop
    return 1 if failed else code


def _start_nodes(plan, stop: threading.Event) -> int:
    import functools

    from dli_perception.commands import up
    from dli_perception.nodes import localframes, sets
    from dli_perception.nodes.runtime import run_nodes

    extra = {"namespace": plan.namespace} if plan.namespace else {}
    factories = [
        functools.partial(
            sets.node_class(node), parameter_overrides=up.ros_parameters(node, plan.parameters[node]), **extra
        )
        for node in plan.node_set.nodes
    ]
    if plan.local_frames:
        localframes.enable()
    try:
        return run_nodes(factories, args=["dli-perception"], stop=stop)
    finally:
        localframes.disable()


def _announce(url: str, options, what: str) -> None:
    print(f"dli-perception teach: {what}.", flush=True)
    print(f"Open the teach station: {url}", flush=True)
    if options.token:
        print("(the token in the address is required on every request; keep it private)", flush=True)
    print("Ctrl-C stops.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``teach_station`` / ``python -m dli_perception.teach ...`` (what launch/teach.launch.py runs).

    Those entries install the early handlers before this module is imported; installing them here
    again covers a direct call (``python -m dli_perception.commands.teach`` is covered only from here on).
    """
    from dli_perception.commands import run_alone

    return run_alone("teach", register, argv)


if __name__ == "__main__":
    sys.exit(main())
