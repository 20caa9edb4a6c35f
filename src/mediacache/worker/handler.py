"""The cache-media job handler: claim the asset, stream the download into storage, record the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mediacache.db.columns import utcnow
from mediacache.db.repository import AssetRepository, Claim
from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import DatabaseError, FetchError, FinalFailureError, LeaseHeldError, StorageError
from mediacache.fetching.fetch import Fetcher
from mediacache.settings import Settings
from mediacache.storage.base import ObjectStore
from mediacache.storage.keys import asset_key
from mediacache.worker.metrics import download_attempt

log = logging.getLogger("mediacache.worker")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # "cached", or "skipped" with a reason
    reason: str = ""
    cache_key: str | None = None
    size_bytes: int | None = None

    def as_job_result(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "cacheKey": self.cache_key,
                "sizeBytes": self.size_bytes}


class CacheJobHandler:
    def __init__(self, settings: Settings, repo: AssetRepository, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.repo = repo
        self.store = store
        self.fetcher = fetcher

    async def process(self, asset_id: uuid.UUID, *, final_attempt: bool) -> Outcome:
        token = uuid.uuid4().hex
        claim = await self.repo.claim(asset_id, token, self.settings.lease_s)
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

    async def _not_claimed(self, asset_id: uuid.UUID) -> Outcome:
        found = await self.repo.status_of(asset_id)
        if found is None:
            return Outcome("skipped", "the asset no longer exists")
        status, lease_until = found
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

        try:
            stored = await self.repo.mark_cached(claim, cache_key=key, content_type=content_type,
                                                 size_bytes=size_bytes, sha256=digest.hexdigest())
        except DatabaseError:
            # Without its row the object would be an orphan; the retry stores it again.
            with contextlib.suppress(StorageError):
                await self.store.delete(key)
            raise
        if not stored:
            # Our lease ran out and another attempt took the asset over: our copy is surplus.
            with contextlib.suppress(StorageError):
                await self.store.delete(key)
            return Outcome("skipped", "another attempt took the asset over")
        if claim.attempts > 1:
            await self._drop_earlier_copies(claim, key)
        return Outcome("cached", cache_key=key, size_bytes=size_bytes)

    async def _drop_earlier_copies(self, claim: Claim, key: str) -> None:
        """Removes what earlier attempts of this asset stored (one killed after its upload but before
        its database write leaves a full copy), so a CACHED asset has exactly one object. Only retried
        assets pay for this listing."""
        try:
            async for info in self.store.list_keys(f"media/{claim.asset_id}/"):
                if info.key != key:
                    await self.store.delete(info.key)
        except StorageError as exc:
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
