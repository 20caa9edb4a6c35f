"""Local-directory object store: atomic writes (temporary file, then rename) under one root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import BinaryIO

from mediacache.errors import StorageError, StorageUnavailableError, UnsafeKeyError
from mediacache.storage.base import ObjectInfo
from mediacache.storage.keys import check_key
from mediacache.storage.signing import sign_path, sign_paths

log = logging.getLogger("mediacache.storage.local")

_TMP_DIR = ".tmp"
_READ_CHUNK_BYTES = 256 * 1024
# Writes are batched to this size so that a stream of small network chunks costs few thread hops.
_WRITE_BATCH_BYTES = 1024 * 1024
_RENAME_TRIES = 5


class LocalStore:
    """Objects as files under `root`; links are HMAC-signed `/files/<key>` URLs on `public_base_url`."""

    name = "local"

    def __init__(self, root: Path, *, public_base_url: str, signing_key: bytes) -> None:
        self.root = root.resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self._signing_key = signing_key
        self._tmp = self.root / _TMP_DIR

    def path_of(self, key: str) -> Path:
        """The file of `key`; refuses any key that would resolve outside the root."""
        check_key(key)
        if key.split("/", 1)[0] == _TMP_DIR:
            raise UnsafeKeyError(f"storage key {key!r} is inside the store's temporary folder")
        path = (self.root / key).resolve()
        # A symlink planted inside the root could still point out of it: check the resolved path.
        if not path.is_relative_to(self.root):
            raise UnsafeKeyError(f"storage key {key!r} resolves outside the storage directory")
        return path

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None) -> int:
        final = self.path_of(key)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        f: BinaryIO | None = None
        written = 0
        batch: list[bytes] = []
        batch_bytes = 0
        try:
            async for chunk in chunks:
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= _WRITE_BATCH_BYTES:
                    if f is None:
                        f = await asyncio.to_thread(self._open_tmp, tmp)
                    await asyncio.to_thread(f.writelines, batch)
                    written += batch_bytes
                    batch, batch_bytes = [], 0
            # A body smaller than one batch costs a single thread hop: open, write, sync, rename.
            await asyncio.to_thread(self._finish, f, batch, tmp, final)
            written += batch_bytes
        except BaseException:
            # Also on cancellation: the temporary file goes, and nothing appears under `key`.
            await asyncio.shield(asyncio.to_thread(self._discard, f, tmp))
            raise
        return written

    def _open_tmp(self, tmp: Path) -> BinaryIO:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return open(tmp, "wb")  # closed by _finish or _discard

    def _finish(self, f: BinaryIO | None, batch: list[bytes], tmp: Path, final: Path) -> None:
        if f is None:
            f = self._open_tmp(tmp)
        with f:
            f.writelines(batch)
            f.flush()
            # fsync before the rename, so that after a power loss the key holds all or nothing.
            os.fsync(f.fileno())
        for _ in range(_RENAME_TRIES):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, final)
                return
            except FileNotFoundError:
                # A delete of the folder's last object removed the folder between our mkdir and
                # the rename (see `_remove_empty_parents`); make it again.
                if not tmp.exists():
                    raise
        raise StorageError(f"cannot store {final.relative_to(self.root).as_posix()!r} under {self.root}: its "
                           "folder kept disappearing while other objects of it were deleted")

    @staticmethod
    def _discard(f: BinaryIO | None, tmp: Path) -> None:
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

    async def delete(self, key: str) -> bool:
        path = self.path_of(key)
        try:
            await asyncio.to_thread(self._unlink, path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} from {self.root}: {exc}") from exc
        return True

    async def delete_many(self, keys: Collection[str]) -> set[str]:
        def unlink_all() -> set[str]:
            failed: set[str] = set()
            for key in keys:
                try:
                    self._unlink(self.path_of(key))
                except FileNotFoundError:
                    pass
                except (OSError, UnsafeKeyError) as exc:
                    log.warning("could not delete %r from %s: %s", key, self.root, exc)
                    failed.add(key)
            return failed

        # One thread hop for the batch, as for missing_keys.
        return await asyncio.to_thread(unlink_all)

    def _unlink(self, path: Path) -> None:
        path.unlink()
        self._remove_empty_parents(path.parent)

    def _remove_empty_parents(self, folder: Path) -> None:
        """Removes `folder` and its parents up to (not including) the root while they are empty, so
        that deleted assets leave no `media/<id>/` folders behind.

        rmdir only ever removes an empty folder, so a file written meanwhile is never lost; a
        writer whose folder vanished between its mkdir and its rename makes it again (`_finish`).
        """
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass  # removed by a concurrent delete: carry on with its parent
            except OSError:
                return  # not empty (or not ours to remove): everything above is not empty either
            folder = folder.parent

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        # Only files are objects: a key naming a folder ("media") is no object, or /files would
        # answer 200 with the folder's size and then fail to read it.
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size_bytes=st.st_size)

    async def missing_keys(self, keys: Collection[str]) -> set[str]:
        # One thread hop for the whole batch: a hop per stat costs more than the stat itself.
        return await asyncio.to_thread(lambda: {key for key in keys if not self.path_of(key).is_file()})

    async def open_stream(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        f = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                size = _READ_CHUNK_BYTES if remaining is None else min(_READ_CHUNK_BYTES, remaining)
                data = await asyncio.to_thread(f.read, size)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            f.close()

    async def list_keys(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        # Only the deepest folder the prefix names is walked: one asset's prefix costs a listing of
        # its folder, not of every stored object.
        top = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root

        def walk() -> list[ObjectInfo]:
            found = []
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    path = Path(dirpath, name)
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix) and not key.startswith(_TMP_DIR + "/"):
                        found.append(ObjectInfo(key=key, size_bytes=path.stat().st_size))
            return found

        for info in await asyncio.to_thread(walk):
            yield info

    async def sweep_temporary(self, older_than_s: float) -> int:
        """Deletes temporary files left by writers that died (SIGKILL, power loss); returns how many."""
        def sweep() -> int:
            removed = 0
            cutoff = time.time() - older_than_s
            for path in self._tmp.glob("*") if self._tmp.exists() else []:
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
            return removed

        return await asyncio.to_thread(sweep)

    def url(self, key: str, *, ttl_s: int) -> str:
        check_key(key)
        return self.public_base_url + sign_path(self._signing_key, key, ttl_s=ttl_s)

    def urls(self, keys: Sequence[str], *, ttl_s: int) -> list[str]:
        for key in keys:
            check_key(key)
        base = self.public_base_url
        return [base + path for path in sign_paths(self._signing_key, keys, ttl_s=ttl_s)]

    async def check_writable(self) -> None:
        probe = f"{_TMP_DIR}/probe-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
            path = self.root / probe
            await asyncio.to_thread(path.write_bytes, b"ok")
            await asyncio.to_thread(path.unlink)
        except OSError as exc:
            raise StorageUnavailableError(
                f"the storage directory {self.root} is not writable ({exc}); fix its permissions or set "
                "MEDIACACHE_DATA_DIR to a writable directory") from exc

    async def close(self) -> None:
        return None
