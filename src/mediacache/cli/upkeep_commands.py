"""The maintenance commands: `cleanup`, `trim`, `usage`, `backfill-legacy-keys`, `derive`, `reconcile`, `gc`."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mediacache.cli.root import app, err, open_cache, out, progress_bar, run_command
from mediacache.cli.sizes import parse_size


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
        async with open_cache() as mc:
            stats = await mc.cache_stats()
            with progress_bar("cleaning up", stats.cached + stats.failed) as advance:
                return (await mc.cleanup_report(days, include_referenced, on_progress=advance,
                                                busy_share=busy_share)).as_dict()
    report = run_command(main)
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
        async with open_cache() as mc:
            removed = await mc.trim(budget)
            return removed, await mc.stored_bytes()
    removed, stored = run_command(main)
    out.print(f"removed {removed} assets; {stored} bytes stored (budget {budget})")


@app.command()
def usage(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
    check_bucket: Annotated[bool, typer.Option(
        "--check-bucket", help="Also list the store: objects no asset owns, assets whose object is missing")] = False,
) -> None:
    """Assets and bytes by status, content type, source host and age, and what deduplication saved."""
    async def main() -> dict[str, Any]:
        async with open_cache() as mc:
            return dataclasses.asdict(await mc.usage(check_bucket=check_bucket))
    report = run_command(main)
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


@app.command("backfill-legacy-keys")
def backfill_legacy_keys(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would change")] = False,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Rows per transaction")] = 200,
) -> None:
    """Turns the storage keys that old application rows hold into CACHED assets pointing at those objects.

    Safe to interrupt and to run again: each batch is one transaction, converted rows are skipped.
    """
    async def main() -> dict[str, Any]:
        with Progress(TextColumn("checking rows" if dry_run else "converting rows"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err) as progress:
            task = progress.add_task("backfill", total=None)
            async with open_cache() as mc:
                report = await mc.backfill_legacy_keys(
                    dry_run=dry_run, batch_rows=batch_rows,
                    on_total=lambda n: progress.update(task, total=n),
                    on_advance=lambda n: progress.advance(task, n))
        return report.as_dict()
    report = run_command(main)
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
        async with open_cache() as mc:
            with progress_bar("queueing derive jobs", (await mc.cache_stats()).cached) as advance:
                return await mc.derive(missing=missing, since_days=since, on_progress=advance)
    out.print(f"queued {run_command(main)} derive jobs on media-derive")


@app.command()
def reconcile(
    check_objects: Annotated[bool, typer.Option(help="Also HEAD every cached object")] = False,
    requeue_missing: Annotated[bool, typer.Option(help="Queue again cached assets whose object is gone")] = False,
    min_age_s: Annotated[float, typer.Option("--min-age-s", help="Only assets untouched this long")] = 60.0,
) -> None:
    """Queues again PENDING/DOWNLOADING assets whose job was lost; reports cached assets without object."""
    async def main() -> dict[str, Any]:
        async with open_cache() as mc:
            return (await mc.reconcile(min_age_s=min_age_s, check_objects=check_objects,
                                       requeue_missing=requeue_missing)).as_dict()
    report = run_command(main)
    out.print(f"requeued {report['requeued']} assets whose job was lost")
    for asset_id, key in report["missing_objects"]:
        out.print(f"missing object: asset {asset_id} key {key}")
    if report["requeued_missing"]:
        out.print(f"requeued {report['requeued_missing']} assets whose object was missing")


@app.command()
def gc(dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted")] = False) -> None:
    """Deletes stored objects that no asset points at; reports assets whose object is missing."""
    async def main() -> dict[str, Any]:
        async with open_cache() as mc:
            return (await mc.collect_garbage(dry_run=dry_run)).as_dict()
    report = run_command(main)
    verb = "would delete" if dry_run else "deleted"
    count = len(report["orphan_objects"]) if dry_run else report["deleted_objects"]
    out.print(f"{verb} {count} orphan objects ({report['orphan_bytes']} bytes)")
    for key in report["orphan_objects"]:
        out.print(f"  orphan: {key}")
    for asset_id, key in report["dangling_rows"]:
        out.print(f"asset {asset_id} points at a missing object {key} (fix: mediacache reconcile --requeue-missing)")
    if report["stale_temporary_files"]:
        out.print(f"removed {report['stale_temporary_files']} stale temporary files")
