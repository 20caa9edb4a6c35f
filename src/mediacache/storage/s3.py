"""S3-compatible object store (Cloudflare R2, AWS S3, MinIO, SeaweedFS) on obstore."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store as ObstoreS3Store

from mediacache.errors import ConfigError, StorageError, StorageUnavailableError
from mediacache.settings import MAX_PRESIGN_TTL_S
from mediacache.storage.base import ObjectInfo
from mediacache.storage.keys import check_key
from mediacache.storage.presign import Presigner
from mediacache.storage.s3_errors import classify, http_status, network_cause, s3_code, summary

log = logging.getLogger("mediacache.storage.s3")

# HEAD requests in flight at once when checking many keys (gc, reconcile --check-objects).
_HEAD_CONCURRENCY = 16
_BULK_DELETE = 1000  # S3's DeleteObjects limit

if TYPE_CHECKING:
    from obstore import Attributes, GetOptions
    from obstore.store import ClientConfig, RetryConfig, S3Credential

# S3 wants parts of at least 5 MiB (all but the last) and at most 10,000 of them: 8 MiB parts allow
# objects up to 78 GiB, and memory stays near part size x (concurrent parts + 1) whatever the size.
PART_SIZE_BYTES = 8 * 1024 * 1024
# Three in flight: a 1 GiB upload peaks about 142 MiB of worker RSS (four: about 151), and four
# files at once keep SeaweedFS as busy as before (bench/compare.py --only video --only bigfile).
MAX_CONCURRENT_PARTS = 3
# Each chunk handed to obstore costs a trip through the GIL from Rust; download chunks (about 64 KiB)
# are joined into batches of this size first.
_FEED_BATCH_BYTES = 1024 * 1024
_READ_CHUNK_BYTES = 256 * 1024
_LIST_PAGE = 1000
# A cancelled upload waits this long for obstore to abort its multipart upload before giving up.
_UNDO_TIMEOUT_S = 30.0
_PROBE_PREFIX = "mediacache-probe"


class _UploadAborted(Exception):
    """Raised inside obstore's pull of the next chunk, so that it aborts the multipart upload."""


class S3Store:
    """Objects in one S3 bucket; links are presigned GET URLs, or `<public_url>/<key>` for a public bucket."""

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        endpoint: str | None = None,
        region: str = "us-east-1",
        public_url: str | None = None,
        part_size_bytes: int = PART_SIZE_BYTES,
        max_concurrent_parts: int = MAX_CONCURRENT_PARTS,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 900.0,
        max_retries: int = 3,
        retry_timeout_s: float = 60.0,
    ) -> None:
        """`endpoint` None means AWS S3 itself (virtual-hosted requests); any other endpoint gets
        path-style requests, which every S3-compatible server understands."""
        if part_size_bytes < 5 * 1024 * 1024:
            raise ConfigError(f"part_size_bytes={part_size_bytes} is below S3's 5 MiB minimum part size")
        self.bucket = bucket
        self.region = region
        self._virtual_hosted_style = endpoint is None
        # Spelled out even for AWS, so that an AWS_ENDPOINT in the environment cannot redirect us.
        self.endpoint = (endpoint or f"https://{bucket}.s3.{region}.amazonaws.com").rstrip("/")
        self.public_url = public_url.rstrip("/") if public_url else None
        self.part_size_bytes = part_size_bytes
        self.max_concurrent_parts = max_concurrent_parts
        self._credentials = _StaticCredentials(access_key_id, secret_access_key)
        self._presigner = Presigner(endpoint=self.endpoint, bucket=bucket, region=region,
                                    access_key_id=access_key_id, secret_access_key=secret_access_key,
                                    virtual_hosted_style=self._virtual_hosted_style)
        self._store = self._build(connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s,
                                  max_retries=max_retries, retry_timeout_s=retry_timeout_s)
        # The start-up check must fail within seconds when the endpoint is down, not after the
        # minutes of retries that suit uploads.
        self._probe_store = self._build(connect_timeout_s=3.0, request_timeout_s=10.0, max_retries=1,
                                        retry_timeout_s=8.0)

    def _build(self, *, connect_timeout_s: float, request_timeout_s: float, max_retries: int,
               retry_timeout_s: float) -> ObstoreS3Store:
        client_options: ClientConfig = {
            "connect_timeout": timedelta(seconds=connect_timeout_s),
            "timeout": timedelta(seconds=request_timeout_s),
        }
        if self.endpoint.startswith("http://"):
            client_options["allow_http"] = True
        retry_config: RetryConfig = {
            "max_retries": max_retries,
            "retry_timeout": timedelta(seconds=retry_timeout_s),
            "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=5),
                        "base": 2},
        }
        try:
            # obstore also reads AWS_* variables. Credentials come from a provider, not from keys,
            # because with keys an AWS_SESSION_TOKEN of the host (set on every AWS Lambda, say) is
            # sent along, breaking R2's signatures and landing in every presigned URL handed out.
            return ObstoreS3Store(
                self.bucket, endpoint=self.endpoint, region=self.region, credential_provider=self._credentials,
                virtual_hosted_style_request=self._virtual_hosted_style, skip_signature=False, s3_express=False,
                client_options=client_options, retry_config=retry_config)
        except (ObstoreError, ValueError) as exc:
            raise ConfigError(f"cannot set up S3 storage for bucket {self.bucket!r} at {self.endpoint}: "
                              f"{summary(exc)}") from exc

    def __repr__(self) -> str:
        # Never the credentials.
        return f"S3Store(bucket={self.bucket!r}, endpoint={self.endpoint!r}, region={self.region!r})"

    # ---- writing ----------------------------------------------------------------------------

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None) -> int:
        check_key(key)
        attributes: Attributes | None = {"Content-Type": content_type} if content_type else None
        source = aiter(chunks)
        first: list[bytes] = []
        first_bytes = 0
        exhausted = False
        while first_bytes < self.part_size_bytes:
            try:
                chunk = await anext(source)
            except StopAsyncIteration:
                exhausted = True
                break
            first.append(chunk)
            first_bytes += len(chunk)

        if exhausted:
            # Smaller than one part: one PUT, which is atomic on every S3 store and costs a
            # single round trip (multipart would cost three).
            body = b"".join(first)
            upload = asyncio.ensure_future(obstore.put_async(
                self._store, key, body, attributes=attributes, use_multipart=False))
            await self._settle(key, upload, None)
            return len(body)

        feed = _Feed(first, source)
        del first
        upload = asyncio.ensure_future(obstore.put_async(
            self._store, key, feed, attributes=attributes, use_multipart=True,
            chunk_size=self.part_size_bytes, max_concurrency=self.max_concurrent_parts))
        await self._settle(key, upload, feed)
        return feed.bytes_read

    async def _settle(self, key: str, upload: asyncio.Future[Any], feed: _Feed | None) -> None:
        """Waits for `upload`; on failure or cancellation leaves no object and no multipart upload.

        obstore aborts the multipart upload when the chunk iterator raises, but when its future
        is cancelled it drops the upload on the floor, and the parts stay in the bucket (hidden,
        and billed). So the upload is shielded from our cancellation, and instead the chunk
        iterator is made to raise, which takes obstore down its abort path.
        """
        try:
            await asyncio.shield(upload)
        except asyncio.CancelledError:
            if feed is not None:
                feed.abort()
            await asyncio.wait({upload}, timeout=_UNDO_TIMEOUT_S)
            if upload.done() and not upload.cancelled() and upload.exception() is None:
                # It completed just as we were cancelled: take the object back.
                with contextlib.suppress(ObstoreError, OSError):
                    await asyncio.wait_for(obstore.delete_async(self._store, key), _UNDO_TIMEOUT_S)
            raise
        except Exception as exc:
            if feed is not None and feed.source_error is not None:
                # The caller's own error (a failed download, say) goes back to the caller as it was.
                if exc is feed.source_error:
                    raise
                raise feed.source_error from exc
            raise self._error("upload", key, exc) from exc

    async def delete(self, key: str) -> bool:
        check_key(key)
        try:
            # S3's DeleteObject answers 204 whether or not the key existed, so ask first.
            await obstore.head_async(self._store, key)
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return False
        except (ObstoreError, OSError) as exc:
            raise self._error("delete", key, exc) from exc
        return True

    async def delete_many(self, keys: Collection[str]) -> set[str]:
        failed: set[str] = set()
        ordered = sorted(keys)
        for start in range(0, len(ordered), _BULK_DELETE):
            chunk = ordered[start:start + _BULK_DELETE]
            for key in chunk:
                check_key(key)
            try:
                # DeleteObjects: a thousand keys a request, missing ones included without error.
                await obstore.delete_async(self._store, chunk)
            except (ObstoreError, OSError) as exc:
                # The bulk answer does not say which keys failed: ask one at a time.
                log.warning("bulk delete of %d objects failed (%s); deleting them one by one", len(chunk), exc)
                for key in chunk:
                    try:
                        await self.delete(key)
                    except StorageError as one:
                        log.warning("could not delete %s: %s", key, one)
                        failed.add(key)
        return failed

    # ---- reading ----------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            # A GET with `head` is a HEAD request that, unlike obstore.head, also returns attributes.
            result = await obstore.get_async(self._store, key, options={"head": True})
        except FileNotFoundError:
            return None
        except (ObstoreError, OSError) as exc:
            raise self._error("head", key, exc) from exc
        return ObjectInfo(key=key, size_bytes=result.meta["size"],
                          content_type=result.attributes.get("Content-Type"))

    async def missing_keys(self, keys: Collection[str]) -> set[str]:
        gate = asyncio.Semaphore(_HEAD_CONCURRENCY)

        async def missing(key: str) -> str | None:
            async with gate:
                return key if await self.head(key) is None else None

        return {key for key in await asyncio.gather(*(missing(k) for k in keys)) if key is not None}

    async def open_stream(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_key(key)
        if start < 0 or (end is not None and end <= start):
            return
        options: GetOptions = {}
        if end is not None:
            options["range"] = (start, end)
        elif start > 0:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self._store, key, options=options)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in bucket {self.bucket!r}") from None
        except (ObstoreError, OSError) as exc:
            if http_status(exc) == 416:
                # The range starts at or past the end: nothing to send, as with a local file.
                return
            raise self._error("read", key, exc) from exc
        try:
            async for chunk in result.stream(min_chunk_size=_READ_CHUNK_BYTES):
                yield chunk
        except (ObstoreError, OSError) as exc:
            raise self._error("read", key, exc) from exc

    async def list_keys(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        # obstore lists whole path segments; the protocol wants every key starting with `prefix`,
        # so list the enclosing folder and filter.
        folder = prefix.rpartition("/")[0]
        if folder:
            check_key(folder)
        try:
            async for page in obstore.list(self._store, folder or None, chunk_size=_LIST_PAGE):
                for meta in page:
                    if meta["path"].startswith(prefix):
                        yield ObjectInfo(key=meta["path"], size_bytes=meta["size"])
        except (ObstoreError, OSError) as exc:
            raise self._error("list", prefix or "/", exc) from exc

    def url(self, key: str, *, ttl_s: int) -> str:
        return self.urls([key], ttl_s=ttl_s)[0]

    def urls(self, keys: Sequence[str], *, ttl_s: int) -> list[str]:
        for key in keys:
            check_key(key)
        if not 1 <= ttl_s <= MAX_PRESIGN_TTL_S:
            raise ConfigError(
                f"ttl_s={ttl_s} is outside what presigned S3 URLs allow (1 to {MAX_PRESIGN_TTL_S} s, 7 days); "
                f"set MEDIACACHE_URL_TTL_S to {MAX_PRESIGN_TTL_S} or less")
        if self.public_url is not None:
            return [f"{self.public_url}/{quote(key, safe='/')}" for key in keys]
        # Computed locally from the credentials: no request to the store.
        return self._presigner.urls(keys, ttl_s=ttl_s)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def check_writable(self) -> None:
        key = f"{_PROBE_PREFIX}/{uuid.uuid4().hex}"
        try:
            await obstore.put_async(self._probe_store, key, b"ok", use_multipart=False)
            await obstore.delete_async(self._probe_store, key)
        except (ObstoreError, OSError) as exc:
            raise StorageUnavailableError(self._unavailable_message(exc)) from exc

    def _unavailable_message(self, exc: BaseException) -> str:
        where = self.endpoint
        problem = classify(exc)
        code = s3_code(exc)
        if problem == "credentials":
            return (f"S3 storage at {where} refused our credentials for bucket {self.bucket!r} "
                    f"({code or 'HTTP 401/403'}): check R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (an access key "
                    "with object read and write permission on this bucket)")
        if problem == "bucket":
            return (f"bucket {self.bucket!r} does not exist at {where} ({code or 'HTTP 404'}): create it, or fix "
                    "R2_BUCKET_NAME (and R2_ACCOUNT_ID or S3_ENDPOINT_URL if the bucket lives elsewhere)")
        if problem == "unreachable":
            return (f"S3 endpoint {where} cannot be reached ({network_cause(exc)}): check S3_ENDPOINT_URL or "
                    "R2_ACCOUNT_ID, DNS and the network, and that the server is running")
        return f"S3 storage at {where} refused a test write to bucket {self.bucket!r}: {summary(exc)}"

    async def close(self) -> None:
        # obstore keeps no connection that needs closing; its pool goes with the object.
        return None

    def _error(self, action: str, key: str, exc: BaseException) -> StorageError:
        where = self.endpoint
        return StorageError(f"S3 {action} of {key!r} in bucket {self.bucket!r} at {where} failed: {summary(exc)}")


class _StaticCredentials:
    """An obstore credential provider that only ever gives the configured key, with no session token."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self._credential: S3Credential = {"access_key_id": access_key_id, "secret_access_key": secret_access_key,
                                          "token": None, "expires_at": None}

    def __call__(self) -> S3Credential:
        return self._credential

    def __repr__(self) -> str:
        return "_StaticCredentials(***)"


class _Feed:
    """The async iterator obstore pulls upload data from: the first part, then batches of the source.

    It remembers an error raised by the source, so that `put_stream` can hand the caller its own
    exception back, and it can be aborted: the pull then raises, which makes obstore abort the
    multipart upload.
    """

    def __init__(self, first: list[bytes], source: AsyncIterator[bytes]) -> None:
        # The chunks read before the upload began, handed over in batches like the rest: joined
        # at once they were a second copy of the first part (8 MiB) beside the chunks, at the
        # moment a large file's memory peaks.
        self._first = collections.deque(first)
        self._source = source
        self._exhausted = False
        self._aborted = False
        self._puller: asyncio.Task[object] | None = None
        self.bytes_read = sum(len(chunk) for chunk in first)
        self.source_error: BaseException | None = None

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> bytes:
        if self._aborted:
            raise _UploadAborted("the upload was cancelled")
        if self._first:
            head = [self._first.popleft()]
            head_bytes = len(head[0])
            while self._first and head_bytes < _FEED_BATCH_BYTES:
                head.append(self._first.popleft())
                head_bytes += len(head[-1])
            return head[0] if len(head) == 1 else b"".join(head)
        if self._exhausted:
            raise StopAsyncIteration
        batch: list[bytes] = []
        batch_bytes = 0
        self._puller = asyncio.current_task()
        try:
            while batch_bytes < _FEED_BATCH_BYTES:
                try:
                    chunk = await anext(self._source)
                except StopAsyncIteration:
                    self._exhausted = True
                    break
                batch.append(chunk)
                batch_bytes += len(chunk)
        except asyncio.CancelledError:
            if self._aborted:
                raise _UploadAborted("the upload was cancelled") from None
            raise
        except Exception as exc:
            self.source_error = exc
            raise
        finally:
            self._puller = None
        if not batch:
            raise StopAsyncIteration
        self.bytes_read += batch_bytes
        return batch[0] if len(batch) == 1 else b"".join(batch)

    def abort(self) -> None:
        self._aborted = True
        if self._puller is not None:
            # The source may be waiting on a slow download: interrupt it rather than wait.
            self._puller.cancel()
