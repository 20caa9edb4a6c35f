"""The cache-media job handler: claim the asset, stream the download into storage, record the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mediacache.db.columns import utcnow
from mediacache.db.repository import AssetRepository, Claim
from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import (
    DatabaseError,
    FetchError,
    FinalFailureError,
    LeaseHeldError,
    MediaCacheError,
    StorageError,
)
from mediacache.fetching.fetch import Fetcher
from mediacache.maintenance.orphans import unowned_originals
from mediacache.settings import Settings
from mediacache.storage.base import ObjectStore
from mediacache.storage.keys import asset_key
from mediacache.worker.delivery import JobDelivery
from mediacache.worker.metrics import download_attempt

log = logging.getLogger("mediacache.worker")

# At most this many assets with the same bytes are looked through for a merge's surplus copies.
_NEAR_HOLDERS = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # "cached", or "skipped" with a reason
    reason: str = ""
    cache_key: str | None = None
    size_bytes: int | None = None

    def as_job_result(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "cacheKey": self.cache_key,
                "sizeBytes": self.size_bytes}


# Called with (asset id, content type) once an asset is CACHED: queues its derive job.
AfterCached = Callable[[uuid.UUID, str | None], Awaitable[None]]


class CacheJobHandler:
    def __init__(self, settings: Settings, repo: AssetRepository, store: ObjectStore, fetcher: Fetcher,
                 *, after_cached: AfterCached | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.store = store
        self.fetcher = fetcher
        # Called with "stored" between the upload and the database write, and with "recorded" after
        # that write and before the copies it made surplus are deleted; tests use it to force an
        # interleaving with cleanup (content deduplication's race) or to stop a job where a kill would.
        self.pause: Callable[[str], Awaitable[None]] | None = None
        self.after_cached = after_cached

    async def process(self, asset_id: uuid.UUID, *, final_attempt: bool,
                      delivery: JobDelivery | None = None) -> Outcome:
        token = uuid.uuid4().hex
        claim = await self.repo.claim(asset_id, token, self.settings.lease_s)
        if claim is None and delivery is not None:
            claim = await self._reopen_if_asked(asset_id, delivery, token)
        if claim is None:
            return await self._not_claimed(asset_id)
        # Most downloads end long before a third of the lease: a timer is much cheaper than a task
        # per download, and the renewing task only starts for the long ones.
        renewer: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self.settings.lease_s / 3, lambda: renewer.append(asyncio.create_task(self._renew_lease(claim))))
        try:
            with download_attempt():
                return await self._download_and_store(claim, final_attempt=final_attempt)
        finally:
            timer.cancel()
            for task in renewer:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _reopen_if_asked(self, asset_id: uuid.UUID, delivery: JobDelivery, token: str) -> Claim | None:
        """A FAILED asset whose job was sent back to run again (bull-board's Retry, `job.retry()`,
        `retryJobs`) or added anew after the failure: FAILED -> PENDING, as `retry_failed` does,
        then the usual claim. A duplicate delivery of the failed attempt is left alone."""
        failed_at = await self.repo.failed_at(asset_id)
        if failed_at is None or not delivery.asks_retry_of_failed(int(failed_at.timestamp() * 1000)):
            return None
        # Conditional: when two deliveries race, one reopens and claims, the other finds it held.
        if await self.repo.reopen_failed(asset_id):
            log.info("asset %s: its job was run again after the asset failed; downloading it again", asset_id,
                     extra={"asset_id": str(asset_id)})
        return await self.repo.claim(asset_id, token, self.settings.lease_s)

    async def _not_claimed(self, asset_id: uuid.UUID) -> Outcome:
        found = await self.repo.status_of(asset_id)
        if found is None:
            # Deleted by a cleanup, or (more worrying) a job of another deployment's database.
            log.warning("job for asset %s: no such asset in the database %s; the job is skipped. If assets "
                        "stay PENDING elsewhere, two deployments share this queue: give each its own "
                        "MEDIACACHE_QUEUE_PREFIX or REDIS_DB", asset_id, self.repo.display_url,
                        extra={"asset_id": str(asset_id)})
            return Outcome("skipped", "the asset no longer exists")
        status, lease_until = found
        if status is CacheStatus.CACHED:
            await self._finish_cached(asset_id)
        if status in (CacheStatus.CACHED, CacheStatus.FAILED):
            return Outcome("skipped", f"the asset is already {status.value}")
        # Either another worker is downloading it (come back when its lease runs out, in case it
        # died), or the lease ran out between our claim and this read (come back at once).
        retry_at = max(lease_until or utcnow(), utcnow())
        raise LeaseHeldError(f"asset {asset_id} is held by another worker until {retry_at.isoformat()}", retry_at)

    async def _download_and_store(self, claim: Claim, *, final_attempt: bool) -> Outcome:
        key: str | None = None
        try:
            async with asyncio.timeout(self.settings.download_deadline_s):
                async with self.fetcher.open(claim.original_url) as download:
                    content_type, body = await download.media_body(self.settings.allowed_type_list)
                    key = asset_key(claim.asset_id, claim.token, content_type)
                    digest = hashlib.sha256()
                    size_bytes = await self.store.put_stream(key, _hashing(body, digest), content_type=content_type)
        except TimeoutError as exc:
            raise await self._failed(claim, FetchError(
                ErrorKind.TRANSIENT, f"download of {claim.original_url} took longer than "
                f"{self.settings.download_deadline_s:g} s (MEDIACACHE_DOWNLOAD_DEADLINE_S)",
                host_verdict="failure"), final_attempt) from exc
        except FetchError as exc:
            raise await self._failed(claim, exc, final_attempt) from exc
        except StorageError as exc:
            raise await self._failed(
                claim, FetchError(ErrorKind.TRANSIENT, f"storage: {exc}"), final_attempt) from exc
        except asyncio.CancelledError:
            # Shutting down mid-download: hand the asset back so the next attempt need not wait
            # for the lease to run out.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.repo.record_failure(
                    claim, error="the worker stopped during the download", error_kind=ErrorKind.TRANSIENT,
                    final=False))
            raise

        if self.pause is not None:
            await self.pause("stored")
        try:
            stored = await self.repo.mark_cached(claim, cache_key=key, content_type=content_type,
                                                 size_bytes=size_bytes, sha256=digest.hexdigest())
        except DatabaseError:
            # Without its row the object would be an orphan; the retry stores it again.
            with contextlib.suppress(StorageError):
                await self.store.delete(key)
            raise
        if self.pause is not None:
            await self.pause("recorded")
        if stored is None:
            # Our lease ran out and another attempt took the asset over: our copy is surplus.
            with contextlib.suppress(StorageError):
                await self.store.delete(key)
            return Outcome("skipped", "another attempt took the asset over")
        if stored != key:
            # The same bytes were stored already and the asset now points at that object: ours is
            # surplus, and only this attempt ever knew its key.
            with contextlib.suppress(StorageError):
                await self.store.delete(key)
        if self.repo.content_dedup and not self.repo.records_in_turn:
            # Also after taking a stored object: a download merging copies at this moment may have
            # moved that object's other holders to another copy without seeing this asset's row,
            # which was not yet committed. Whichever of the two merges last sees both. (Where
            # downloads of the same bytes record themselves in turn, none is left to merge.)
            stored = await self._converge(claim.asset_id, stored, size_bytes, digest.hexdigest())
        if claim.attempts > 1:
            await self._drop_earlier_copies(claim, stored)
        if self.after_cached is not None:
            try:
                await self.after_cached(claim.asset_id, content_type)
            except MediaCacheError as exc:
                # The original is CACHED whatever happens to its derivatives; `derive --missing` catches up.
                log.warning("could not queue derivatives of asset %s: %s", claim.asset_id, exc,
                            extra={"asset_id": str(claim.asset_id)})
        return Outcome("cached", cache_key=stored, size_bytes=size_bytes)

    async def _converge(self, asset_id: uuid.UUID, key: str, size_bytes: int, sha256: str) -> str:
        """Leaves one object when another download stored the same bytes at the same moment."""
        try:
            winner, surplus = await self.repo.converge_copies(sha256, size_bytes)
            for old in surplus - await self.repo.keys_in_use(surplus):
                with contextlib.suppress(StorageError):
                    await self.store.delete(old)
            return winner or key
        except DatabaseError as exc:
            # Two copies of one file waste space but lose nothing; gc cannot tell them apart.
            log.warning("could not merge copies of the bytes of asset %s: %s", asset_id, exc,
                        extra={"asset_id": str(asset_id)})
            return key

    async def _finish_cached(self, asset_id: uuid.UUID) -> None:
        """The job of an asset that is CACHED already, delivered again (its worker died, or it stalled):
        that worker may have died after recording the asset and before deleting what the record made
        surplus (its own copy when it took a stored object with the same bytes, the copies it merged
        away, an earlier attempt's copy), or before merging with a copy recorded at the same moment.
        No other job looks at those objects again, so this delivery does that work once more rather
        than leave it to `mediacache gc`."""
        try:
            rec = await self.repo.get(asset_id)
            if (rec is None or rec.status is not CacheStatus.CACHED or rec.cache_key is None
                    or rec.sha256 is None or rec.size_bytes is None or rec.cached_at is None):
                return
            prefixes = {asset_id}
            if self.repo.content_dedup:
                await self._converge(asset_id, rec.cache_key, rec.size_bytes, rec.sha256)
                # A merge leaves its surplus under the prefixes of the copies recorded at the same
                # moment as this one; a lease bounds that moment for any download that was not cut off.
                prefixes.update(await self.repo.holders_cached_near(
                    rec.sha256, rec.size_bytes, rec.cached_at, self.settings.lease_s, limit=_NEAR_HOLDERS))
            await self._delete_unowned_under(prefixes)
        except (StorageError, DatabaseError) as exc:
            log.warning("could not look for copies left by an earlier delivery of asset %s: %s", asset_id, exc,
                        extra={"asset_id": str(asset_id)})

    async def _delete_unowned_under(self, asset_ids: set[uuid.UUID]) -> None:
        """Deletes the originals under `media/<id>/` of `asset_ids` that no row holds and no live
        attempt is writing, as `mediacache gc` judges them. Derivatives are left alone."""
        found: list[tuple[uuid.UUID, str]] = []
        for asset_id in asset_ids:
            found += [(asset_id, info.key) async for info in self.store.list_keys(f"media/{asset_id}/")
                      if info.key.count("/") == 2]
        await self.store.delete_many(await unowned_originals(self.repo, found))

    async def _drop_earlier_copies(self, claim: Claim, key: str) -> None:
        """Removes what earlier attempts of this asset stored (one killed after its upload but before
        its database write leaves a full copy), so a CACHED asset has exactly one object. Only retried
        assets pay for this listing."""
        try:
            earlier = [info.key async for info in self.store.list_keys(f"media/{claim.asset_id}/")
                       if info.key != key]
            # An earlier copy may be the object other assets were since deduplicated onto; once no
            # row holds a key, no new one can take it (sharing needs a CACHED holder).
            shared = await self.repo.keys_in_use(earlier)
            for earlier_key in earlier:
                if earlier_key not in shared:
                    await self.store.delete(earlier_key)
        except (StorageError, DatabaseError) as exc:
            log.warning("could not remove earlier copies of asset %s: %s", claim.asset_id, exc,
                        extra={"asset_id": str(claim.asset_id)})

    async def _failed(self, claim: Claim, exc: FetchError, final_attempt: bool) -> Exception:
        """Records a failed attempt; returns the error for the queue (FinalFailureError ends the job)."""
        final = final_attempt or not exc.retryable
        await self.repo.record_failure(claim, error=str(exc), error_kind=exc.kind, final=final)
        return FinalFailureError(str(exc), host_verdict=exc.host_verdict,
                                 retry_after_s=exc.retry_after_s) if final else exc

    async def _renew_lease(self, claim: Claim) -> None:
        interval_s = self.settings.lease_s / 3
        while True:
            try:
                if not await self.repo.renew_lease(claim.asset_id, claim.token, self.settings.lease_s):
                    return
            except DatabaseError as exc:
                log.warning("could not renew the lease of asset %s: %s", claim.asset_id, exc,
                            extra={"asset_id": str(claim.asset_id)})
            await asyncio.sleep(interval_s)


async def _hashing(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk
