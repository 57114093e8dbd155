"""Subcommands of the ``dli-perception`` CLI, one module each (see :mod:`dli_perception.cli`)."""
