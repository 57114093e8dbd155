"""Subcommands of the ``dli-perception`` CLI, one module each (see :mod:`dli_perception.cli`)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: nothing slow before the stop handlers
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence


def run_alone(
    name: str, register: Callable[[argparse._SubParsersAction], None], argv: Sequence[str] | None = None
) -> int:
    """Run subcommand ``name`` as a program of its own (``python -m dli_perception.commands.<name> ...``).

    The same as ``dli-perception <name> ARGV`` (``argv`` defaults to ``sys.argv[1:]``; ``--ros-args`` and
    what follows, which launch appends, are dropped); a Ctrl-C or SIGTERM is recorded from the first
    line on (:func:`dli_perception.nodes.launcher.early_stop_handlers`). The package's errors print
    as one line and return 1.
    """
    import sys

    from dli_perception.nodes import launcher

    with launcher.early_stop_handlers():  # a Ctrl-C while importing or starting: recorded, exit 0
        import argparse
        import logging

        from dli_perception.errors import DliPerceptionError

        parser = argparse.ArgumentParser(prog="dli-perception")
        register(parser.add_subparsers(dest="command", required=True))
        argv = list(sys.argv[1:] if argv is None else argv)
        if "--ros-args" in argv:
            argv = argv[: argv.index("--ros-args")]
        args = parser.parse_args([name, *argv])
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return args.func(args)
        except DliPerceptionError as exc:
            print(f"dli-perception {name}: error: {exc}", file=sys.stderr)
            return 1
