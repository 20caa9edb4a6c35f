"""The `mediacache` command line's root: the Typer app, its consoles, and what every command shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mediacache.cli.logs import LogFormat, setup_logging
from mediacache.cli.running import event_loop_factory, run_interruptible
from mediacache.errors import NotMigratedError
from mediacache.settings import Settings, load_settings

if TYPE_CHECKING:
    from mediacache.service import MediaCache

T = TypeVar("T")
app = typer.Typer(help="Background media cache: remote URLs in, durable copies in object storage out.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
err = Console(stderr=True)
out = Console()


def _print_version(value: bool) -> None:
    if value:
        from mediacache import __version__

        out.print(f"mediacache {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit")] = False) -> None:
    """Background media cache: remote URLs in, durable copies in object storage out."""


LogFormatOption = Annotated[LogFormat | None, typer.Option(
    "--log-format", help="text, or json: one JSON object per line (default MEDIACACHE_LOG_FORMAT, text)")]


def command_settings(*, require_database: bool = True) -> Settings:
    """The settings; with `require_database`, a SQLite file that is not there is refused first.

    Opening a missing SQLite file fails inside aiosqlite's thread, which can then report into an
    event loop already closed and print a traceback after our one-line error; and the likely cause
    is a command run from another directory (the data directory is relative by default).
    """
    settings = load_settings()
    url = settings.sqlalchemy_url
    if require_database and url.startswith("sqlite") and not Path(url.split(":///", 1)[1]).exists():
        raise NotMigratedError(
            f"the database {settings.database_display} is not migrated: it has no mediacache tables (the file "
            "does not exist); run `mediacache db upgrade` first, or set MEDIACACHE_DATA_DIR or DATABASE_URL "
            "to the migrated database")
    return settings


def open_cache() -> MediaCache:
    """The MediaCache a command works on (`async with open_cache() as mc:`), from command_settings.

    Imported here rather than at the top, so that `--help` and `--version` load no backends.
    """
    from mediacache.service import MediaCache

    return MediaCache(command_settings())


def command_logging(settings: Settings, log_format: LogFormat | None = None) -> None:
    """Logging as --log-format says, else as MEDIACACHE_LOG_FORMAT."""
    setup_logging(log_format or settings.log_format)


def run_command(coro_fn: Callable[[], Awaitable[T]], settings: Settings | None = None) -> T:
    """Runs a command; the long-running ones pass their settings to run on MEDIACACHE_EVENT_LOOP."""
    return run_interruptible(coro_fn, loop_factory=event_loop_factory(settings.event_loop) if settings else None)


@contextmanager
def progress_bar(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (settled assets as the upper bound); yields the function to advance it."""
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=not err.is_terminal) as progress:
        task = progress.add_task(what, total=total or None)
        yield lambda n: progress.advance(task, n)
