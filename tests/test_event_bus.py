"""The event bus: announcements coalesced into pipelined writes still reach every subscriber, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mediacache.domain import CacheStatus
from mediacache.events.bus import Announcement, EventBus
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until


@pytest.fixture
async def buses(make_settings: SettingsFactory) -> AsyncIterator[tuple[list[Announcement], EventBus]]:
    """What a subscribed listener bus hears, and a second bus to publish on; both closed after."""
    settings = make_settings()
    listener, publisher = EventBus(settings), EventBus(settings)
    heard: list[Announcement] = []
    listener.listen(heard.append)
    try:
        async with asyncio.timeout(10):
            await listener.subscribed.wait()
        yield heard, publisher
    finally:
        await publisher.close()
        await listener.close()


def _at_least(heard: list[Announcement], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(heard) >= n
    return check


async def test_a_burst_of_announcements_arrives_complete_and_in_order(
        buses: tuple[list[Announcement], EventBus]) -> None:
    heard, publisher = buses
    ids = [uuid.uuid4() for _ in range(300)]
    for n, asset_id in enumerate(ids):
        publisher.announce(asset_id, CacheStatus.CACHED if n % 3 else CacheStatus.FAILED)
    await wait_until(_at_least(heard, len(ids)), timeout_s=10)
    assert [m.asset_id for m in heard] == ids
    assert [m.status for m in heard] == [CacheStatus.CACHED if n % 3 else CacheStatus.FAILED
                                         for n in range(len(ids))]
    assert {m.type for m in heard} == {"asset.cached", "asset.failed"}


async def test_announcements_of_two_batches_arrive_in_order(buses: tuple[list[Announcement], EventBus]) -> None:
    heard, publisher = buses
    first, second = uuid.uuid4(), uuid.uuid4()
    publisher.announce(first, CacheStatus.CACHED)
    # The first batch has gone out; this one starts the next.
    await wait_until(_at_least(heard, 1), timeout_s=10)
    publisher.announce(second, CacheStatus.CACHED)
    await wait_until(_at_least(heard, 2), timeout_s=10)
    assert [m.asset_id for m in heard] == [first, second]


async def test_close_right_after_announcing_still_sends_them(buses: tuple[list[Announcement], EventBus]) -> None:
    heard, publisher = buses
    ids = [uuid.uuid4() for _ in range(20)]
    for asset_id in ids:
        publisher.announce(asset_id, CacheStatus.CACHED)
    await publisher.close()
    await wait_until(_at_least(heard, len(ids)), timeout_s=10)
    assert [m.asset_id for m in heard] == ids


async def test_announcing_with_redis_unreachable_neither_raises_nor_blocks(make_settings: SettingsFactory) -> None:
    # Nothing listens on port 1 of 127.0.0.1: every batch fails at connect and is dropped.
    publisher = EventBus(make_settings(redis_port=1))
    publisher.announce(uuid.uuid4(), CacheStatus.CACHED)
    publisher.announce(uuid.uuid4(), CacheStatus.FAILED)
    async with asyncio.timeout(5):
        await publisher.close()
    assert publisher._queued == []
