"""The long-running commands: `worker`, `serve`, and `db upgrade` before them."""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mediacache.cli.logs import LogFormat
from mediacache.cli.root import LogFormatOption, app, command_logging, command_settings, db_app, err, run_command
from mediacache.errors import MediaCacheError
from mediacache.settings import Settings


class WorkerQueue(enum.StrEnum):
    ALL = "all"
    CACHE = "cache"
    DERIVE = "derive"


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Creates or migrates the cache tables (SQLite or PostgreSQL, from DATABASE_URL)."""
    from mediacache.db.schema import upgrade

    settings = command_settings(require_database=False)
    upgrade(settings, revision)
    err.print(f"database {settings.database_display} is at revision {revision}")


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs at a time (default MEDIACACHE_CONCURRENCY, 16)")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes (development)")] = False,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (one per core)")] = 1,
    queue: Annotated[WorkerQueue, typer.Option(
        help="cache (downloads), derive (thumbnails and metadata) or all (both, when MEDIACACHE_DERIVE is on)")
    ] = WorkerQueue.ALL,
    log_format: LogFormatOption = None,
) -> None:
    """Runs a worker that downloads queued media into storage until SIGTERM or Ctrl-C."""
    settings = command_settings()
    if queue is WorkerQueue.DERIVE and not settings.derive_enabled:
        raise MediaCacheError("`mediacache worker --queue derive` needs MEDIACACHE_DERIVE=on and the media "
                              "libraries (pip install 'mediacache[media]')")
    if reload:
        _reload_worker(concurrency, log_format)
        return
    command_logging(settings, log_format)
    if processes > 1:
        from mediacache.worker.supervisor import supervise

        raise typer.Exit(supervise(concurrency, processes, settings.shutdown_grace_s,
                                   log_format=log_format or settings.log_format, queue=queue.value))
    run_command(lambda: _worker_main(settings, concurrency, queue), settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve only; run workers elsewhere")] = False,
    log_format: LogFormatOption = None,
    allow_anonymous: Annotated[bool, typer.Option(
        "--allow-anonymous", help="Listen beyond loopback without MEDIACACHE_API_TOKEN")] = False,
) -> None:
    """Runs the HTTP service (JSON API, dashboard, metrics) with an in-process worker until SIGTERM."""
    from mediacache.api.exposure import check_exposure
    from mediacache.broker.embedded import redis_or_embedded
    from mediacache.db.schema import upgrade

    settings = command_settings(require_database=False)  # serve migrates a SQLite database itself
    check_exposure(settings, host, allow_anonymous=allow_anonymous)
    command_logging(settings, log_format)
    # The embedded default (SQLite) is migrated here; a shared PostgreSQL is
    # migrated once by `mediacache db upgrade`, not by every server replica that starts.
    if settings.sqlalchemy_url.startswith("sqlite"):
        upgrade(settings)
    with redis_or_embedded(settings):
        run_command(lambda: _serve_main(settings, host, port, not no_worker), settings)


async def _serve_main(settings: Settings, host: str, port: int, run_worker: bool) -> None:
    from mediacache.api import create_app
    from mediacache.api.exposure import is_loopback
    from mediacache.api.server import bind, serving

    log = logging.getLogger("mediacache.api")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise MediaCacheError(f"cannot listen on {host}:{port} ({exc}); choose another --port or --host") from exc
    app = create_app(settings, run_worker=run_worker, run_derive=run_worker, exposed=not is_loopback(host))
    async with serving(app, sock) as running:
        log.info("serving on %s (worker %s); dashboard at %s/", running.url,
                 "in process" if run_worker else "off", running.url)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, running.task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        log.info("stopping: finishing requests and held jobs")
    log.info("server stopped")


async def _worker_main(settings: Settings, concurrency: int | None,
                       queue: WorkerQueue = WorkerQueue.ALL) -> None:
    from mediacache.service import MediaCache
    from mediacache.worker import CacheWorker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with MediaCache(settings) as cache:
        workers: list[Any] = []
        if queue is not WorkerQueue.DERIVE:
            workers.append(CacheWorker(cache, concurrency=concurrency))
        if queue is not WorkerQueue.CACHE and settings.derive_enabled:
            from mediacache.media.worker import DeriveWorker

            # Its own small concurrency (MEDIACACHE_DERIVE_CONCURRENCY); --concurrency is the downloads'.
            workers.append(DeriveWorker(cache, concurrency=concurrency if queue is WorkerQueue.DERIVE else None))
        for w in workers:
            await w.start()
        await stop.wait()
        logging.getLogger("mediacache.worker").info("stopping: finishing or handing back held jobs")
        await asyncio.gather(*(w.stop() for w in workers))
    logging.getLogger("mediacache.worker").info("worker stopped")


def _reload_worker(concurrency: int | None, log_format: LogFormat | None) -> None:
    import watchfiles

    args = [sys.executable, "-m", "mediacache", "worker"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    if log_format:
        args += ["--log-format", log_format]
    # The whole package: a change anywhere in it restarts the worker.
    watchfiles.run_process(Path(__file__).parent.parent, target=" ".join(args), target_type="command")
