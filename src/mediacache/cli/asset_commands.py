"""The commands on assets: `cache`, `url`, `stats`, `refresh` and `retry-failed`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mediacache.cli.root import app, err, open_cache, out, progress_bar, run_command
from mediacache.domain import CacheStatus, parse_asset_id
from mediacache.errors import InvalidArgumentError


@app.command()
def cache(
    urls: Annotated[list[str], typer.Argument(help="Media URLs to cache")],
    wait: Annotated[bool, typer.Option(help="Show progress until each is CACHED or FAILED")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Give up waiting after this long")] = 600.0,
) -> None:
    """Queues URLs and prints their asset ids (one per line, in order)."""
    async def main() -> int:
        async with open_cache() as mc:
            ids = await mc.cache_images(urls)
            for asset_id in ids:
                out.print(str(asset_id))
            return await _wait_for(mc, ids, timeout_s) if wait else 0
    raise typer.Exit(run_command(main))


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
        async with open_cache() as mc:
            # A legacy key gets a link only when an object is stored under it: a typo (or an id
            # cut short) would otherwise print a link that answers 404.
            if value and parse_asset_id(value) is None and not await mc.has_object(value):
                if original_url is None:
                    raise InvalidArgumentError(
                        f"{value!r}: not an asset id and no stored object under that key; give an asset id "
                        "(as `mediacache cache` prints it) or the storage key of a stored object")
                return original_url
            return await mc.get_url(value, original_url)
    resolved = run_command(main)
    if resolved is None:
        err.print(f"no URL for {value!r}: unknown id and no --original-url")
        raise typer.Exit(1)
    out.print(resolved, soft_wrap=True)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """Queue counts (waiting, active, completed, failed, delayed) and cache counts by status."""
    async def main() -> dict[str, Any]:
        async with open_cache() as mc:
            return {"queue": (await mc.queue_stats()).as_dict(), "cache": (await mc.cache_stats()).as_dict(),
                    "hosts": [_host_row(h) for h in await mc.host_states()]}
    data = run_command(main)
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
        async with open_cache() as mc:
            return await mc.refresh_source(asset_id, url)
    record = run_command(main)
    out.print(f"{record.id} {record.status.value}: queued again from the new URL")


@app.command("retry-failed")
def retry_failed() -> None:
    """Puts FAILED assets back to PENDING and queues them again, a batch at a time."""
    async def main() -> int:
        async with open_cache() as mc:
            total = (await mc.cache_stats()).failed
            with progress_bar("retrying", total) as advance:
                return await mc.retry_failed(on_progress=advance)
    out.print(f"retried {run_command(main)} failed assets")
