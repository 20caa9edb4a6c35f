"""The `mediacache` command line (Typer): worker, database, queueing, resolution and maintenance."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from mediacache.cli.logs import LogFormat, error_line, setup_logging
from mediacache.cli.running import event_loop_factory, run_interruptible
from mediacache.cli.sizes import parse_size
from mediacache.domain import CacheStatus, parse_asset_id
from mediacache.errors import InvalidArgumentError, MediaCacheError, NotMigratedError
from mediacache.settings import Settings, load_settings

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
class WorkerQueue(enum.StrEnum):
    ALL = "all"
    CACHE = "cache"
    DERIVE = "derive"


LogFormatOption = Annotated[LogFormat | None, typer.Option(
    "--log-format", help="text, or json: one JSON object per line (default MEDIACACHE_LOG_FORMAT, text)")]


def _settings(*, require_database: bool = True) -> Settings:
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


def _setup_logging(settings: Settings, log_format: LogFormat | None = None) -> None:
    setup_logging(log_format or settings.log_format)


def _run(coro_fn: Callable[[], Awaitable[T]], settings: Settings | None = None) -> T:
    """Runs a command; the long-running ones pass their settings to run on MEDIACACHE_EVENT_LOOP."""
    return run_interruptible(coro_fn, loop_factory=event_loop_factory(settings.event_loop) if settings else None)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Creates or migrates the cache tables (SQLite or PostgreSQL, from DATABASE_URL)."""
    from mediacache.db.schema import upgrade

    settings = _settings(require_database=False)
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
    settings = _settings()
    if queue is WorkerQueue.DERIVE and not settings.derive_enabled:
        raise MediaCacheError("`mediacache worker --queue derive` needs MEDIACACHE_DERIVE=on and the media "
                              "libraries (pip install 'mediacache[media]')")
    if reload:
        _reload_worker(concurrency, log_format)
        return
    _setup_logging(settings, log_format)
    if processes > 1:
        from mediacache.worker.supervisor import supervise

        raise typer.Exit(supervise(concurrency, processes, settings.shutdown_grace_s,
                                   log_format=log_format or settings.log_format, queue=queue.value))
    _run(lambda: _worker_main(settings, concurrency, queue), settings)


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

    settings = _settings(require_database=False)  # serve migrates a SQLite database itself
    check_exposure(settings, host, allow_anonymous=allow_anonymous)
    _setup_logging(settings, log_format)
    # The embedded default (SQLite) is migrated here; a shared PostgreSQL is
    # migrated once by `mediacache db upgrade`, not by every server replica that starts.
    if settings.sqlalchemy_url.startswith("sqlite"):
        upgrade(settings)
    with redis_or_embedded(settings):
        _run(lambda: _serve_main(settings, host, port, not no_worker), settings)


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


@app.command()
def cache(
    urls: Annotated[list[str], typer.Argument(help="Media URLs to cache")],
    wait: Annotated[bool, typer.Option(help="Show progress until each is CACHED or FAILED")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Give up waiting after this long")] = 600.0,
) -> None:
    """Queues URLs and prints their asset ids (one per line, in order)."""
    async def main() -> int:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            ids = await mc.cache_images(urls)
            for asset_id in ids:
                out.print(str(asset_id))
            return await _wait_for(mc, ids, timeout_s) if wait else 0
    raise typer.Exit(_run(main))


async def _wait_for(mc: Any, ids: list[uuid.UUID], timeout_s: float) -> int:
    settled = {CacheStatus.CACHED, CacheStatus.FAILED}
    final: dict[uuid.UUID, Any] = {}
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("caching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as progress:
        task = progress.add_task("cache", total=len(ids))
        while len(final) < len(ids) and time.monotonic() < deadline:
            for asset_id in ids:
                if asset_id not in final:
                    rec = await mc.get_asset(asset_id)
                    if rec is None or rec.status in settled:
                        final[asset_id] = rec
            progress.update(task, completed=len(final))
            if len(final) < len(ids):
                await asyncio.sleep(0.2)
    failed = 0
    for asset_id in ids:
        rec = final.get(asset_id)
        if rec is None:
            err.print(f"{asset_id} not finished" if asset_id not in final else f"{asset_id} was removed")
            failed += 1
        elif rec.status is CacheStatus.FAILED:
            err.print(f"{asset_id} FAILED ({rec.error_kind}): {rec.error}")
            failed += 1
    return 1 if failed else 0


@app.command()
def url(value: Annotated[str, typer.Argument(help="A cache asset id or a legacy storage key")],
        original_url: Annotated[str | None, typer.Option("--original-url")] = None) -> None:
    """Prints the URL to show for an asset id (stored copy once cached, else the original)."""
    async def main() -> str | None:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            # A legacy key gets a link only when an object is stored under it: a typo (or an id
            # cut short) would otherwise print a link that answers 404.
            if value and parse_asset_id(value) is None and not await mc.has_object(value):
                if original_url is None:
                    raise InvalidArgumentError(
                        f"{value!r}: not an asset id and no stored object under that key; give an asset id "
                        "(as `mediacache cache` prints it) or the storage key of a stored object")
                return original_url
            return await mc.get_url(value, original_url)
    resolved = _run(main)
    if resolved is None:
        err.print(f"no URL for {value!r}: unknown id and no --original-url")
        raise typer.Exit(1)
    out.print(resolved, soft_wrap=True)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """Queue counts (waiting, active, completed, failed, delayed) and cache counts by status."""
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            return {"queue": (await mc.queue_stats()).as_dict(), "cache": (await mc.cache_stats()).as_dict(),
                    "hosts": [_host_row(h) for h in await mc.host_states()]}
    data = _run(main)
    if as_json:
        out.print_json(json.dumps(data))
        return
    q, c = data["queue"], data["cache"]
    out.print("queue: " + ", ".join(f"{k} {v}" for k, v in q.items()))
    out.print("cache: " + ", ".join(f"{k} {v}" for k, v in c.items() if k != "failed_by_kind"))
    if c["failed_by_kind"]:
        out.print("failed by kind: " + ", ".join(f"{k} {v}" for k, v in c["failed_by_kind"].items()))
    for h in data["hosts"]:
        out.print(f"host {h['host']}: breaker {h['breaker']}, {h['rate_per_s']:g}/s, "
                  f"{h['permits_in_use']} in flight, limits {h['limits'] or '-'}"
                  + (", paused" if h["paused_until"] else ""))


def _host_row(state: Any) -> dict[str, Any]:
    keys = ("host", "breaker", "open_until", "recent_failures", "rate_per_s", "permits_in_use", "paused_until",
            "limits")
    return {k: getattr(state, k) for k in keys}


@app.command()
def refresh(asset_id: Annotated[str, typer.Argument(help="The asset's id")],
            url: Annotated[str, typer.Argument(help="The new source URL (a freshly signed link)")]) -> None:
    """Gives an asset that is not cached a new source URL and queues it again under the same id."""
    async def main() -> Any:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            return await mc.refresh_source(asset_id, url)
    record = _run(main)
    out.print(f"{record.id} {record.status.value}: queued again from the new URL")


@app.command("retry-failed")
def retry_failed() -> None:
    """Puts FAILED assets back to PENDING and queues them again, a batch at a time."""
    async def main() -> int:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            total = (await mc.cache_stats()).failed
            with _progress("retrying", total) as advance:
                return await mc.retry_failed(on_progress=advance)
    out.print(f"retried {_run(main)} failed assets")


@app.command()
def cleanup(
    days: Annotated[int, typer.Option(min=0, help="Remove assets older than this many days")] = 30,
    include_referenced: Annotated[bool, typer.Option(
        "--include-referenced", help="Also remove assets that application rows still reference")] = False,
    busy_share: Annotated[float, typer.Option(
        "--busy-share", min=0.01, max=1.0,
        help="Share of the time spent on batches, resting in between (1 = no rests); below 1 leaves a "
             "database that is already busy with the application more room while a large cleanup runs")] = 1.0,
) -> None:
    """Deletes settled assets older than N days, with their stored objects, a batch at a time.

    Safe to stop and to run again: every batch is its own short transaction.
    """
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            stats = await mc.cache_stats()
            with _progress("cleaning up", stats.cached + stats.failed) as advance:
                return (await mc.cleanup_report(days, include_referenced, on_progress=advance,
                                                busy_share=busy_share)).as_dict()
    report = _run(main)
    out.print(f"removed {report['removed']} assets older than {days} days")
    if report["kept_referenced"]:
        out.print(f"kept {report['kept_referenced']} that application rows reference "
                  "(remove them too with --include-referenced)")
    if report["not_cleaned"]:
        out.print(f"{report['not_cleaned']} objects could not be deleted (see the log); "
                  "mediacache gc removes them once the store answers")


@app.command()
def trim(max_bytes: Annotated[str, typer.Option("--max-bytes", help="The budget: 50GiB, 500MB, 1024")]) -> None:
    """Removes the least recently requested unreferenced assets until the stored objects fit the budget."""
    try:
        budget = parse_size(max_bytes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-bytes") from exc

    async def main() -> tuple[int, int]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            removed = await mc.trim(budget)
            return removed, await mc.stored_bytes()
    removed, stored = _run(main)
    out.print(f"removed {removed} assets; {stored} bytes stored (budget {budget})")


@app.command()
def usage(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
    check_bucket: Annotated[bool, typer.Option(
        "--check-bucket", help="Also list the store: objects no asset owns, assets whose object is missing")] = False,
) -> None:
    """Assets and bytes by status, content type, source host and age, and what deduplication saved."""
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            return dataclasses.asdict(await mc.usage(check_bucket=check_bucket))
    report = _run(main)
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(f"{report['assets']} assets; {report['stored_objects']} objects, {report['stored_bytes']} bytes stored")
    out.print(f"deduplication: {report['downloads_avoided']} downloads avoided, "
              f"{report['bytes_not_stored']} bytes not stored")
    for title, name in (("status", "by_status"), ("content type", "by_content_type"), ("host", "by_host"),
                        ("age since the last request", "by_age")):
        out.print(f"by {title}: " + ", ".join(f"{k} {g['assets']} ({g['bytes']} B)" for k, g in report[name].items()),
                  soft_wrap=True, highlight=False, markup=False)
    bucket = report["bucket"]
    if bucket is not None:
        out.print(f"bucket: {bucket['orphan_objects']} objects no asset owns ({bucket['orphan_bytes']} bytes), "
                  f"{bucket['missing_objects']} assets whose object is missing ({bucket['missing_bytes']} bytes)")


@contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (settled assets as the upper bound); yields the function to advance it."""
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=not err.is_terminal) as progress:
        task = progress.add_task(what, total=total or None)
        yield lambda n: progress.advance(task, n)


@app.command("backfill-legacy-keys")
def backfill_legacy_keys(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would change")] = False,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Rows per transaction")] = 200,
) -> None:
    """Turns the storage keys that old application rows hold into CACHED assets pointing at those objects.

    Safe to interrupt and to run again: each batch is one transaction, converted rows are skipped.
    """
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        with Progress(TextColumn("checking rows" if dry_run else "converting rows"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err) as progress:
            task = progress.add_task("backfill", total=None)
            async with MediaCache(_settings()) as mc:
                report = await mc.backfill_legacy_keys(
                    dry_run=dry_run, batch_rows=batch_rows,
                    on_total=lambda n: progress.update(task, total=n),
                    on_advance=lambda n: progress.advance(task, n))
        return report.as_dict()
    report = _run(main)
    verb = "would convert" if dry_run else "converted"
    out.print(f"{verb} {report['rows_converted']} rows holding {report['keys_converted']} legacy keys "
              f"({report['rows_seen']} rows checked)")
    for problem in report["problems"]:
        out.print(f"left alone: {problem.table}.{problem.column} row {problem.row_id} key {problem.key!r}: "
                  f"{problem.reason}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def derive(
    missing: Annotated[bool, typer.Option(
        "--missing", help="Only assets without metadata yet (else every cached image, video and audio again)")] = False,
    since: Annotated[float | None, typer.Option(
        "--since", min=0, help="Only assets cached in the last DAYS days", metavar="DAYS")] = None,
) -> None:
    """Queues metadata, placeholder and thumbnail jobs (media-derive) for cached assets, a batch at a time.

    Safe to stop and to run again: a job id is its asset's id, so nothing is queued twice.
    """
    async def main() -> int:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            with _progress("queueing derive jobs", (await mc.cache_stats()).cached) as advance:
                return await mc.derive(missing=missing, since_days=since, on_progress=advance)
    out.print(f"queued {_run(main)} derive jobs on media-derive")


@app.command()
def reconcile(
    check_objects: Annotated[bool, typer.Option(help="Also HEAD every cached object")] = False,
    requeue_missing: Annotated[bool, typer.Option(help="Queue again cached assets whose object is gone")] = False,
    min_age_s: Annotated[float, typer.Option("--min-age-s", help="Only assets untouched this long")] = 60.0,
) -> None:
    """Queues again PENDING/DOWNLOADING assets whose job was lost; reports cached assets without object."""
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            return (await mc.reconcile(min_age_s=min_age_s, check_objects=check_objects,
                                       requeue_missing=requeue_missing)).as_dict()
    report = _run(main)
    out.print(f"requeued {report['requeued']} assets whose job was lost")
    for asset_id, key in report["missing_objects"]:
        out.print(f"missing object: asset {asset_id} key {key}")
    if report["requeued_missing"]:
        out.print(f"requeued {report['requeued_missing']} assets whose object was missing")


@app.command()
def gc(dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted")] = False) -> None:
    """Deletes stored objects that no asset points at; reports assets whose object is missing."""
    async def main() -> dict[str, Any]:
        from mediacache.service import MediaCache

        async with MediaCache(_settings()) as mc:
            return (await mc.collect_garbage(dry_run=dry_run)).as_dict()
    report = _run(main)
    verb = "would delete" if dry_run else "deleted"
    count = len(report["orphan_objects"]) if dry_run else report["deleted_objects"]
    out.print(f"{verb} {count} orphan objects ({report['orphan_bytes']} bytes)")
    for key in report["orphan_objects"]:
        out.print(f"  orphan: {key}")
    for asset_id, key in report["dangling_rows"]:
        out.print(f"asset {asset_id} points at a missing object {key} (fix: mediacache reconcile --requeue-missing)")
    if report["stale_temporary_files"]:
        out.print(f"removed {report['stale_temporary_files']} stale temporary files")


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
