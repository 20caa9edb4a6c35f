"""Webhooks from the outbox: signed, retried through a receiver that is down and then failing, never
lost; asset.derived after a real derive run, and after one that failed on every attempt.

The issue's receiver is down for 10 s; here it is down for 3 s with a backoff starting at 0.2 s
(MEDIACACHE_WEBHOOK_BACKOFF_S) and capped at 1 s, which exercises the same path in less time.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mediacache.db.media_repository import MediaMetadata
from mediacache.domain import CacheStatus, MediaState
from mediacache.errors import ConfigError, FinalFailureError, StorageError
from mediacache.events.bus import Announcement
from mediacache.media.job import DeriveJobHandler
from mediacache.media.sandbox import MediaSandbox
from mediacache.media.worker import DeriveWorker
from mediacache.service import MediaCache
from mediacache.storage.keys import derivative_key
from tests.media import makers
from tests.support.api import running_api
from tests.support.origin import Origin, sha256_of
from tests.support.processes import spawn_worker, wait_for_log
from tests.support.receiver import Received, Receiver
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST_RETRIES = {"webhook_secret": SECRET, "webhook_allowed_networks": "127.0.0.0/8", "webhook_backoff_s": 0.2,
                "webhook_backoff_max_s": 1.0, "webhook_poll_s": 0.2, "webhook_timeout_s": 2.0}


def _verified(received: Received) -> dict[str, Any]:
    event: dict[str, Any] = Webhook(SECRET).verify(received.body, received.headers)
    return event


async def test_every_event_arrives_signed_through_a_receiver_down_then_failing(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    receiver = Receiver(fail_first=2)
    timer = receiver.start_after(3.0)
    try:
        async with MediaCache(make_settings(webhook_url=receiver.url, **FAST_RETRIES)) as mc:
            await start_worker(mc, concurrency=10)
            urls = [origin.url(f"/media/{i}.jpg?size={1000 + i}") for i in range(50)]
            ids = await mc.cache_images(urls)

            async def all_arrived() -> bool:
                return {uuid.UUID(json.loads(r.body)["data"]["id"]) for r in receiver.accepted()} >= set(ids)
            await wait_until(all_arrived, timeout_s=60, what="a webhook for each of the 50 assets")

            events = [_verified(r) for r in receiver.accepted()]
            by_asset = {uuid.UUID(e["data"]["id"]): e for e in events}
            assert set(by_asset) == set(ids)
            assert {e["type"] for e in events} == {"asset.cached"}
            # One event per asset, each with its own id, which is also the webhook-id header.
            assert len({e["id"] for e in by_asset.values()}) == 50
            assert all(r.headers["webhook-id"] == json.loads(r.body)["id"] for r in receiver.received)
            assert [r.status for r in receiver.received[:2]] == [500, 500]
            first = by_asset[ids[0]]["data"]
            assert first["status"] == "CACHED" and first["sha256"] == sha256_of("media", 0, 1000)
            assert first["size_bytes"] == 1000 and first["content_type"] == "image/jpeg"
            assert first["original_url"] == urls[0] and first["cache_key"] and first["cached_at"]
            counts = await mc.backends.outbox.counts()
            await wait_until(lambda: _outbox_empty(mc), timeout_s=10, what="the outbox to empty")
            assert counts.dead == 0
    finally:
        timer.cancel()
        receiver.stop()


async def _outbox_empty(mc: MediaCache) -> bool:
    counts = await mc.backends.outbox.counts()
    return counts.pending == 0 and counts.dead == 0


async def test_a_tampered_body_fails_verification(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    receiver = Receiver().start()
    try:
        async with MediaCache(make_settings(webhook_url=receiver.url, **FAST_RETRIES)) as mc:
            await start_worker(mc)
            await mc.cache_image(origin.url("/status/404"))

            async def arrived() -> bool:
                return bool(receiver.accepted())
            await wait_until(arrived, timeout_s=30, what="the asset.failed webhook")
            real = receiver.accepted()[0]
            event = _verified(real)
            assert event["type"] == "asset.failed" and event["data"]["error_kind"] == "not_found"
            tampered = real.body.replace(b'"FAILED"', b'"CACHED"')
            assert tampered != real.body
            with pytest.raises(WebhookVerificationError):
                Webhook(SECRET).verify(tampered, real.headers)
            with pytest.raises(WebhookVerificationError):
                Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(real.body, real.headers)
    finally:
        receiver.stop()


async def test_a_receiver_inside_the_network_needs_the_allow_list(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    receiver = Receiver().start()
    try:
        settings = make_settings(webhook_url=receiver.url, **{**FAST_RETRIES, "webhook_allowed_networks": ""})
        async with MediaCache(settings) as mc:
            await start_worker(mc)
            await mc.cache_image(origin.url("/media/1.jpg"))

            async def refused() -> bool:
                rows = await mc.backends.outbox.all_rows()
                return bool(rows) and rows[0].attempts >= 1
            await wait_until(refused, timeout_s=30, what="a refused delivery attempt")
            row = (await mc.backends.outbox.all_rows())[0]
            assert row.last_error is not None and "MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS" in row.last_error
            assert "loopback" in row.last_error
            assert receiver.received == []
    finally:
        receiver.stop()


async def test_a_delivery_is_dead_after_the_retry_window_and_counted(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    receiver = Receiver()  # never starts
    # 0.0005 h = 1.8 s of retries.
    settings = make_settings(webhook_url=receiver.url, webhook_retry_hours=0.0005, **FAST_RETRIES)
    async with MediaCache(settings) as mc:
        await start_worker(mc)
        await mc.cache_image(origin.url("/media/2.jpg"))

        async def dead() -> bool:
            return (await mc.backends.outbox.counts()).dead == 1
        await wait_until(dead, timeout_s=30, what="the delivery to be marked dead")
        assert (await mc.backends.outbox.counts()).pending == 0
        row = (await mc.backends.outbox.all_rows())[0]
        assert row.dead and row.attempts >= 2 and "POST" in (row.last_error or "")


async def test_no_outbox_rows_without_a_webhook_url(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    worker = await start_worker()
    assert worker.webhooks is None
    asset_id = await cache.cache_image(origin.url("/media/3.jpg"))
    result = await cache.wait([asset_id], timeout_s=30)
    assert result.done and result.records[0] is not None and result.records[0].status is CacheStatus.CACHED
    assert await cache.backends.outbox.all_rows() == []


async def test_an_event_survives_a_worker_killed_before_delivering_it(
        make_settings: SettingsFactory, origin: Origin, tmp_path: Path) -> None:
    receiver = Receiver()  # down while the first worker runs
    settings = make_settings(webhook_url=receiver.url, **FAST_RETRIES)
    env = {"MEDIACACHE_WEBHOOK_URL": receiver.url, "MEDIACACHE_WEBHOOK_SECRET": SECRET,
           "MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "MEDIACACHE_WEBHOOK_BACKOFF_S": "0.2",
           "MEDIACACHE_WEBHOOK_BACKOFF_MAX_S": "1", "MEDIACACHE_WEBHOOK_POLL_S": "0.2",
           "MEDIACACHE_WEBHOOK_TIMEOUT_S": "1", "MEDIACACHE_RECONCILE_INTERVAL_S": "0"}
    async with MediaCache(settings) as mc:
        first = spawn_worker(settings, tmp_path / "a.log", **env)
        try:
            await wait_for_log(tmp_path / "a.log", "worker ready", first)
            asset_id = await mc.cache_image(origin.url("/media/4.jpg"))

            async def cached() -> bool:
                rec = await mc.get_asset(asset_id)
                return rec is not None and rec.status is CacheStatus.CACHED
            await wait_until(cached, timeout_s=30, what="the asset to be CACHED")
        finally:
            first.kill()
            first.wait(10)
        rows = await mc.backends.outbox.all_rows()
        assert [r.asset_id for r in rows] == [asset_id]
        receiver.start()
        second = spawn_worker(settings, tmp_path / "b.log", **env)
        # The second worker also derives the asset and announces asset.derived, which may go out
        # first: the killed worker can have died holding the lease of the cached event's row.
        def cached_events() -> list[dict[str, Any]]:
            events = [_verified(r) for r in receiver.accepted()]
            return [e for e in events if e["type"] == "asset.cached"]
        try:
            async def delivered() -> bool:
                return bool(cached_events())
            await wait_until(delivered, timeout_s=30, what="the event to be delivered by the second worker")
        finally:
            second.terminate()
            second.wait(30)
            receiver.stop()
        [event] = cached_events()
        assert event["data"]["id"] == str(asset_id) and event["id"] == str(rows[0].event_id)


def test_webhook_settings_name_what_is_wrong(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match="MEDIACACHE_WEBHOOK_SECRET"):
        make_settings(webhook_url="https://app.example.com/hooks")
    with pytest.raises(ConfigError, match="whsec_"):
        make_settings(webhook_url="https://app.example.com/hooks", webhook_secret="plain")
    with pytest.raises(ConfigError, match="not an http"):
        make_settings(webhook_url="ftp://x", webhook_secret=SECRET)
    assert make_settings(webhook_url=" https://a.example/h , https://b.example/h ",
                         webhook_secret=SECRET).webhook_url_list == ["https://a.example/h", "https://b.example/h"]


async def test_two_receivers_each_get_every_event(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    a, b = Receiver().start(), Receiver().start()
    try:
        async with MediaCache(make_settings(webhook_url=f"{a.url},{b.url}", **FAST_RETRIES)) as mc:
            await start_worker(mc)
            ids = await mc.cache_images([origin.url(f"/media/{i}.jpg") for i in range(5)])

            async def both() -> bool:
                return len(a.accepted()) >= 5 and len(b.accepted()) >= 5
            await wait_until(both, timeout_s=30, what="5 events at each receiver")
            for receiver in (a, b):
                assert {_verified(r)["data"]["id"] for r in receiver.accepted()} == {str(i) for i in ids}
    finally:
        a.stop()
        b.stop()


async def test_dead_and_pending_deliveries_show_in_metrics_and_the_dashboard_data(
        make_settings: SettingsFactory, origin: Origin) -> None:
    receiver = Receiver()  # never starts
    async with running_api(make_settings, webhook_url=receiver.url, webhook_retry_hours=0.0005,
                           **FAST_RETRIES) as api:
        await api.client.post("/api/assets", json={"url": origin.url("/media/7.jpg")})

        async def dead() -> bool:
            return (await api.client.get("/api/dashboard")).json()["webhooks"] == {"pending": 0, "dead": 1}
        await wait_until(dead, timeout_s=30, what="the dashboard to count one dead delivery")
        metrics = (await api.client.get("/metrics")).text
        assert 'mediacache_webhook_deliveries{state="dead"} 1.0' in metrics
        assert 'mediacache_webhook_deliveries{state="pending"} 0.0' in metrics


async def test_asset_cached_names_the_key_the_asset_points_at_when_its_bytes_were_stored_already(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    receiver = Receiver().start()
    try:
        async with MediaCache(make_settings(webhook_url=receiver.url, **FAST_RETRIES)) as mc:
            await start_worker(mc, concurrency=1)  # one after the other: the second finds the first's object
            first = await mc.cache_image(origin.url("/media/5.jpg?size=3000&copy=1"))
            await mc.wait([first], timeout_s=30)
            second = await mc.cache_image(origin.url("/media/5.jpg?size=3000&copy=2"))

            async def both() -> bool:
                return len(_events_of(receiver, "asset.cached")) >= 2
            await wait_until(both, timeout_s=30, what="two asset.cached webhooks")
            keys = {e["data"]["id"]: e["data"]["cache_key"] for e in _events_of(receiver, "asset.cached")}
            records = await mc.get_assets([first, second])
            assert keys == {str(i): r.cache_key for i, r in records.items()}
            # The same bytes: the second asset took the first one's object, and its event says so.
            assert keys[str(first)] == keys[str(second)]
    finally:
        receiver.stop()


def _events_of(receiver: Receiver, event_type: str) -> list[dict[str, Any]]:
    return [e for e in (_verified(r) for r in receiver.accepted()) if e["type"] == event_type]


async def test_a_derived_image_sends_asset_derived_with_its_size_placeholder_and_thumbnails(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin, tmp_path: Path) -> None:
    receiver = Receiver().start()
    try:
        async with MediaCache(make_settings(webhook_url=receiver.url, derive="on", **FAST_RETRIES)) as mc:
            heard: list[Announcement] = []
            stop_listening = mc.backends.bus.listen(heard.append)
            await asyncio.wait_for(mc.backends.bus.subscribed.wait(), timeout=10)
            await start_worker(mc)
            deriver = DeriveWorker(mc)
            await deriver.start()
            try:
                photo = makers.jpeg(tmp_path / "photo.jpg", 1200, 800).read_bytes()
                asset_id = await mc.cache_image(origin.serve_file("photo.jpg", photo, "image/jpeg"))

                async def derived() -> bool:
                    return bool(_events_of(receiver, "asset.derived"))
                await wait_until(derived, timeout_s=90, what="the asset.derived webhook")
            finally:
                await deriver.stop(grace_s=5)
                stop_listening()

            [cached], [event] = _events_of(receiver, "asset.cached"), _events_of(receiver, "asset.derived")
            assert event["id"] != cached["id"] and event["timestamp"] >= cached["timestamp"]
            rec = await mc.get_asset(asset_id)
            assert rec is not None and rec.media_state == "ok" and rec.placeholder
            data = event["data"]
            assert data["id"] == str(asset_id) and data["status"] == "CACHED" and data["media_state"] == "ok"
            assert data["cache_key"] == rec.cache_key and data["content_type"] == "image/jpeg"
            assert data["original_url"] == rec.original_url and data["media_error"] is None
            assert (data["width"], data["height"], data["frames"]) == (1200, 800, 1)
            assert data["placeholder"] == rec.placeholder
            # The derivative rows as recorded, narrowest first, each naming its stored object.
            rows = (await mc.backends.media.derivatives_of([asset_id]))[asset_id]
            assert data["derivatives"] == [
                {"kind": d.kind, "width": d.width, "height": d.height, "content_type": d.content_type,
                 "cache_key": d.cache_key, "size_bytes": d.size_bytes} for d in rows]
            assert [(d["kind"], d["width"]) for d in data["derivatives"]] == [("thumb", 320), ("thumb", 640)]
            for d in data["derivatives"]:
                assert d["cache_key"] == derivative_key(asset_id, "thumb", d["width"]) and d["size_bytes"] > 0
                stored = b"".join([c async for c in mc.backends.store.open_stream(d["cache_key"])])
                assert len(stored) == d["size_bytes"] and stored[8:12] == b"WEBP"
            # The event stream and the bus heard it too, with the media state.
            assert any(m.type == "asset.derived" and m.asset_id == asset_id and m.media_state == "ok"
                       and m.status is CacheStatus.CACHED for m in heard)
            await wait_until(lambda: _outbox_empty(mc), timeout_s=10, what="the outbox to empty")
    finally:
        receiver.stop()


async def test_a_derive_that_fails_on_every_attempt_sends_asset_derived_with_media_state_failed(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin, tmp_path: Path) -> None:
    receiver = Receiver().start()
    try:
        settings = make_settings(webhook_url=receiver.url, derive="off", **FAST_RETRIES)
        async with MediaCache(settings) as mc:
            await start_worker(mc)
            photo = makers.jpeg(tmp_path / "photo.jpg", 400, 300).read_bytes()
            asset_id = await mc.cache_image(origin.serve_file("gone.jpg", photo, "image/jpeg"))

            async def cached() -> bool:
                return bool(_events_of(receiver, "asset.cached"))
            await wait_until(cached, timeout_s=30, what="the asset.cached webhook")
            # Its row goes a moment after the receiver's answer (deletes are batched).
            await wait_until(lambda: _outbox_empty(mc), timeout_s=10, what="the asset.cached row to be deleted")
            rec = await mc.get_asset(asset_id)
            assert rec is not None and rec.cache_key
            # Our side fails: the original is no longer in the store when the derive job reads it.
            await mc.backends.store.delete(rec.cache_key)
            b = mc.backends
            handler = DeriveJobHandler(settings, b.assets, b.media, b.store, MediaSandbox())  # the read fails first

            with pytest.raises(StorageError, match="missing"):
                await handler.process(asset_id, final_attempt=False)
            # Not final: the job is retried, nothing is recorded and no event is due.
            assert [r.event_type for r in await b.outbox.all_rows()] == []
            with pytest.raises(FinalFailureError):
                await handler.process(asset_id, final_attempt=True)

            async def derived() -> bool:
                return bool(_events_of(receiver, "asset.derived"))
            await wait_until(derived, timeout_s=30, what="the asset.derived webhook of the failure")
            [event] = _events_of(receiver, "asset.derived")
            data = event["data"]
            assert data["id"] == str(asset_id) and data["status"] == "CACHED" and data["media_state"] == "failed"
            assert "missing" in data["media_error"] and data["derivatives"] == []
            assert data["placeholder"] is None and data["width"] is None
            # A record for an asset that is not CACHED (here: none at all) changes nothing and sends nothing.
            nowhere = uuid.uuid4()
            assert await b.media.record(nowhere, metadata=MediaMetadata(), state=MediaState.OK, error=None,
                                        derivatives=[]) == (False, set())
            assert [r for r in await b.outbox.all_rows() if r.asset_id == nowhere] == []
    finally:
        receiver.stop()


async def test_a_stopped_worker_leaves_no_connection_open_at_the_receiver(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    # A receiver that keeps connections alive, as most do: the deliverer reuses them while it runs,
    # and once it stops none may stay open (a test server's shutdown, or a receiver's connection
    # limit, would wait on them for as long as the process lives).
    receiver = Receiver(keep_alive=True).start()
    try:
        async with MediaCache(make_settings(webhook_url=receiver.url, **FAST_RETRIES)) as mc:
            worker = await start_worker(mc, concurrency=10)
            ids = await mc.cache_images([origin.url(f"/media/{i}.jpg?size=1200&kept=1") for i in range(20)])

            async def all_arrived() -> bool:
                return len(receiver.accepted()) >= len(ids)
            await wait_until(all_arrived, timeout_s=60, what="20 webhooks")
            assert receiver.open_connections >= 1
            assert mc.backends.webhooks is not None and mc.backends.webhooks.poster.connections_made < len(ids)

            await worker.stop(grace_s=5)

            async def none_open() -> bool:
                return receiver.open_connections == 0
            await wait_until(none_open, timeout_s=5, what="the receiver to see no connection from the stopped worker")
            assert mc.backends.webhooks.poster.open_connections == 0
    finally:
        receiver.stop()


async def test_stopping_right_after_a_wake_up_ends_the_delivery_loop(make_settings: SettingsFactory) -> None:
    # On Python 3.11 asyncio.wait_for swallows a cancel that lands while what it waits for has just
    # finished: the loop, woken and cancelled in the same moment, ran on and stop() never returned.
    receiver = Receiver(keep_alive=True)  # never contacted: the outbox stays empty
    settings = make_settings(webhook_url=receiver.url, **{**FAST_RETRIES, "webhook_poll_s": 30.0})
    async with MediaCache(settings) as mc:
        deliverer = mc.backends.webhooks
        assert deliverer is not None
        for _ in range(5):
            await deliverer.start()

            async def waiting(before: int = deliverer.claims) -> bool:
                return deliverer.claims > before  # it claimed (nothing) and waits for a wake-up now
            await wait_until(waiting, timeout_s=10, what="the delivery loop's first claim")
            deliverer.wake()
            async with asyncio.timeout(10):
                await deliverer.stop()
