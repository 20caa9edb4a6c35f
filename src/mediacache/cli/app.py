"""The `mediacache` command line (Typer): worker, database, queueing, resolution and maintenance."""

from __future__ import annotations

import sys

from rich.text import Text

# The command modules register their commands on the root app as they are imported, and --help
# lists them in that order: the long-running ones first.
from mediacache.cli import run_commands  # noqa: F401

# isort: split
from mediacache.cli import asset_commands, upkeep_commands  # noqa: F401
from mediacache.cli.logs import error_line
from mediacache.cli.root import app, err
from mediacache.errors import MediaCacheError

__all__ = ["app", "main", "report_error"]


def main() -> None:
    try:
        app()
    except MediaCacheError as exc:
        report_error(exc)
        sys.exit(1)


def report_error(exc: BaseException) -> None:
    """The error on stderr as one line: coloured on a terminal, plain (and never wrapped) otherwise."""
    line = error_line(str(exc))
    if err.is_terminal:
        err.print(Text.assemble(("error: ", "red"), line), soft_wrap=True)
    else:
        sys.stderr.write(f"error: {line}\n")
        sys.stderr.flush()
