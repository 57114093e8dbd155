"""``dli-perception``: the command line for everything that is not a long-running node.

Each subcommand lives in its own module under :mod:`dli_perception.commands` and provides
``register(subparsers)`` (adds its parser and sets ``func``) — see :data:`COMMANDS`.
Errors of the package print as one line (no traceback) and exit with code 1.
"""

from __future__ import annotations

# Only what costs nothing at the top: `dli-perception up` and `teach` install their stop handlers (main)
# before anything else is imported, so that a Ctrl-C during their start-up ends them cleanly too.
import sys

from dli_perception.errors import DliPerceptionError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers take it as theirs)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

# Subcommand modules, in the order `--help` lists them.
COMMANDS = [
    "dli_perception.commands.info",
    "dli_perception.commands.classify",
    "dli_perception.commands.bag",
    "dli_perception.commands.dataset",
    "dli_perception.commands.train",
    "dli_perception.commands.export",
    "dli_perception.commands.up",
    "dli_perception.commands.teach",
    "dli_perception.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    from dli_perception import __version__

    parser = argparse.ArgumentParser(
        prog="dli-perception",
        description="Record, convert, train, export, classify and benchmark with dli_perception.",
    )
    parser.add_argument("--version", action="version", version=f"dli_perception {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


STOPPED_BY_SIGNAL = frozenset({"up", "teach"})
"""Commands that run until Ctrl-C or SIGTERM and then exit 0 after their cleanup, like the nodes."""


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand's name: the first argument that is not an option (the global ones take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ros-args" in argv:  # launch appends ROS arguments; the CLI has none of its own
        argv = argv[: argv.index("--ros-args")]
    if _command(argv) not in STOPPED_BY_SIGNAL:
        return _main(argv)
    from dli_perception.nodes import launcher

    with launcher.early_stop_handlers():  # before the imports: a Ctrl-C during start-up still ends with exit code 0
        return _main(argv)


def _main(argv: list[str]) -> int:
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except DliPerceptionError as exc:
        print(f"dli-perception {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dli-perception {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
