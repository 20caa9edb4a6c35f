"""The derive-media job handler: the original from the store to a temp file, analysed in the sandbox,
derivatives stored next to it, metadata written; bad media is a media_state, never a failed asset."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediacache.db.media_repository import DerivativeRow, MediaMetadata, MediaRepository, derivable
from mediacache.db.repository import AssetRepository
from mediacache.domain import CacheStatus, MediaState
from mediacache.errors import FinalFailureError, MediaCacheError, StorageError
from mediacache.media.report import MediaReport, ReportKind
from mediacache.media.sandbox import MediaSandbox
from mediacache.settings import Settings
from mediacache.storage.base import ObjectStore
from mediacache.storage.keys import derivative_key

log = logging.getLogger("mediacache.media")

_STATE_OF_KIND = {ReportKind.OK: MediaState.OK, ReportKind.TOO_LARGE: MediaState.TOO_LARGE,
                  ReportKind.CORRUPT: MediaState.CORRUPT, ReportKind.UNSUPPORTED: MediaState.UNSUPPORTED}


class RetryDeriveError(MediaCacheError):
    """A derive attempt that may succeed when tried again (decoder time-out on a loaded machine)."""


@dataclass(frozen=True, slots=True)
class DeriveOutcome:
    status: str  # "derived" or "skipped"
    state: str | None = None
    reason: str = ""
    derivatives: int = 0

    def as_job_result(self) -> dict[str, Any]:
        return {"status": self.status, "mediaState": self.state, "reason": self.reason,
                "derivatives": self.derivatives}


# Called once an outcome is recorded (committed, its asset.derived event in the outbox with it).
Recorded = Callable[[uuid.UUID, MediaState], None]


class DeriveJobHandler:
    def __init__(self, settings: Settings, assets: AssetRepository, media: MediaRepository, store: ObjectStore,
                 sandbox: MediaSandbox, *, on_recorded: Recorded | None = None) -> None:
        self.settings = settings
        self.assets = assets
        self.media = media
        self.store = store
        self.sandbox = sandbox
        self.on_recorded = on_recorded

    async def process(self, asset_id: uuid.UUID, *, final_attempt: bool) -> DeriveOutcome:
        rec = await self.assets.get(asset_id)
        if rec is None or rec.status is not CacheStatus.CACHED or not rec.cache_key:
            return DeriveOutcome("skipped", reason="the asset is not CACHED (removed, or cached again since)")
        if not derivable(rec.content_type):
            await self._record(asset_id, MediaReport(kind=ReportKind.UNSUPPORTED,
                                                     reason=f"no derivatives of {rec.content_type}"), [])
            return DeriveOutcome("derived", MediaState.UNSUPPORTED.value)
        try:
            report = await self._analyze(rec.cache_key, rec.content_type)
            if report.timed_out and not final_attempt:
                raise RetryDeriveError(f"asset {asset_id}: {report.reason}; trying again")
            rows = await self._store_derivatives(asset_id, report)
            await self._record(asset_id, report, rows)
        except RetryDeriveError:
            raise
        except MediaCacheError as exc:
            if not final_attempt:
                raise
            # Our side (storage, database) failed on every attempt: say so on the asset, which stays
            # CACHED, and with it (asset.derived, media_state failed) to whoever waits for derivatives.
            with contextlib.suppress(MediaCacheError):
                written, _ = await self.media.record(asset_id, metadata=MediaMetadata(), state=MediaState.FAILED,
                                                     error=f"derivatives could not be made: {exc}", derivatives=[])
                if written:
                    self._recorded(asset_id, MediaState.FAILED)
            raise FinalFailureError(str(exc)) from exc
        state = _STATE_OF_KIND[report.kind]
        if state is not MediaState.OK:
            log.info("asset %s: no derivatives (%s): %s", asset_id, state.value, report.reason,
                     extra={"asset_id": str(asset_id)})
        return DeriveOutcome("derived", state.value, report.reason or "", len(rows))

    async def _analyze(self, key: str, content_type: str | None) -> MediaReport:
        with tempfile.TemporaryDirectory(prefix="mediacache-derive-") as tmp:
            path = Path(tmp) / "original"
            try:
                with path.open("wb") as f:
                    async for chunk in self.store.open_stream(key):
                        f.write(chunk)
            except FileNotFoundError as exc:
                raise StorageError(f"the stored object {key} is missing (fix: mediacache reconcile "
                                   "--check-objects --requeue-missing)") from exc
            s = self.settings
            return await self.sandbox.analyze(path, content_type, widths=s.thumb_width_list,
                                              max_pixels=s.max_pixels, max_frames=s.max_frames)

    async def _store_derivatives(self, asset_id: uuid.UUID, report: MediaReport) -> list[DerivativeRow]:
        rows: list[DerivativeRow] = []
        for d in report.derivatives:
            key = derivative_key(asset_id, d.kind, d.width)
            size = await self.store.put_stream(key, _one(d.data), content_type=d.content_type)
            rows.append(DerivativeRow(d.kind, d.width, d.height, d.content_type, key, size))
        return rows

    async def _record(self, asset_id: uuid.UUID, report: MediaReport, rows: list[DerivativeRow]) -> None:
        metadata = MediaMetadata(width=report.width, height=report.height, frames=report.frames,
                                 duration_s=report.duration_s, video_codec=report.video_codec,
                                 audio_codec=report.audio_codec, placeholder=report.placeholder)
        state = _STATE_OF_KIND[report.kind]
        written, stale = await self.media.record(asset_id, metadata=metadata, state=state, error=report.reason,
                                                 derivatives=rows)
        if written:
            self._recorded(asset_id, state)
        # Removed (cleanup) while we worked: what we stored has no row, so it goes too.
        for key in stale | (set() if written else {r.cache_key for r in rows}):
            with contextlib.suppress(StorageError):
                await self.store.delete(key)

    def _recorded(self, asset_id: uuid.UUID, state: MediaState) -> None:
        if self.on_recorded is None:
            return
        try:
            self.on_recorded(asset_id, state)
        except Exception:
            # A hint to wake delivery and listeners: the outcome is committed whatever happens here.
            log.exception("after recording the derive outcome of asset %s", asset_id)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
