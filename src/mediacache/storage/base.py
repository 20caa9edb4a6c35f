"""The ObjectStore protocol that every storage backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size_bytes: int
    content_type: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Where cached bytes live. Keys are relative, '/'-separated, checked by `storage.keys.check_key`.

    A `put_stream` is all or nothing: when it raises (or its task is cancelled) no object is left
    under `key` and no temporary data or unfinished multipart upload stays behind.
    """

    name: str

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None
    ) -> int:
        """Stores the chunks under `key`, replacing any object there; returns the bytes written."""
        ...

    async def delete(self, key: str) -> bool:
        """Deletes `key`; returns False when it did not exist (which is not an error)."""
        ...

    async def delete_many(self, keys: Collection[str]) -> set[str]:
        """Deletes every key (a missing one is no error); returns the keys whose delete failed, each
        logged, so that their objects are left to `gc`. One request per thousand keys where the
        store has a bulk delete."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size (and content type where the store keeps it) of `key`, or None when missing."""
        ...

    async def missing_keys(self, keys: Collection[str]) -> set[str]:
        """Those of `keys` under which no object is stored (consistency checks over many assets)."""
        ...

    def open_stream(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of `key` from `start` to `end` (exclusive); FileNotFoundError when missing."""
        ...

    def list_keys(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (used by garbage collection only)."""
        ...

    def url(self, key: str, *, ttl_s: int) -> str:
        """A URL a browser can fetch `key` from for `ttl_s` seconds, computed without I/O."""
        ...

    def urls(self, keys: Sequence[str], *, ttl_s: int) -> list[str]:
        """`url` of each of `keys`, in order: URL resolution signs hundreds of links a call, and
        one clock reading and one call into the signer for all of them cost less than one each."""
        ...

    async def check_writable(self) -> None:
        """Raises StorageUnavailableError, with the reason, when the store cannot be written."""
        ...

    async def close(self) -> None: ...
