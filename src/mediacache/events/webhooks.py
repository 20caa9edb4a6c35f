"""Webhook delivery: one loop per worker process that takes due outbox rows and POSTs them, signed.

At least once: a row leaves the outbox only after its receiver answered 2xx, so a crash between
the POST and that delete sends the event again (receivers dedupe by the `webhook-id` header, the
event id). Failures are retried with exponential backoff until MEDIACACHE_WEBHOOK_RETRY_HOURS
after the event, then the row is marked dead (counted on the dashboard and in /metrics).

Throughput comes from keeping up to MEDIACACHE_WEBHOOK_CONCURRENCY POSTs in flight on kept-alive
connections (events.poster, a plain HTTP/1.1 client: httpx's per-request work was most of the
deliverer's CPU, and its pool's grew with every connection held), claiming more rows whenever sends
finish rather than a batch at a time (one slow receiver does not hold up the rest), and recording
deliveries with one DELETE for all that finished while the previous one ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from mediacache.db.columns import utcnow
from mediacache.errors import DatabaseError, FetchError
from mediacache.events.outbox import Delivery, OutboxRepository
from mediacache.events.poster import PostError, WebhookPoster
from mediacache.events.signing import check_secret, signed_headers
from mediacache.fetching.netguard import AddressPolicy
from mediacache.settings import Settings

log = logging.getLogger("mediacache.webhooks")

# The most rows one claim takes.
BATCH = 50
# At most one claim and one delete per this long: under load a few events share each statement,
# and an idle deliverer still claims the moment it is woken.
GATHER_S = 0.02
# How long stopping waits to record the deliveries that were made but not yet recorded.
_FLUSH_ON_STOP_S = 5.0


class WebhookDeliverer:
    """Delivers the outbox's due rows; `wake()` after writing one makes it look at once.

    One per process (`Backends.webhooks`), shared by the cache and derive workers in it:
    `start()` and `stop()` are counted, and the loop runs while any holder has started it.
    """

    def __init__(self, settings: Settings, outbox: OutboxRepository) -> None:
        if settings.webhook_secret is None:
            raise ValueError("WebhookDeliverer needs MEDIACACHE_WEBHOOK_SECRET")
        self.settings = settings
        self.outbox = outbox
        self.signer = check_secret(settings.webhook_secret.get_secret_value())
        self.concurrency = settings.webhook_concurrency
        # The same SSRF guard as downloads: a webhook URL must not become a way into the internal
        # network, so internal receivers need their range in MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS.
        # Redirects are not followed (a 3xx is a failed attempt) and no proxy is used.
        self.poster = WebhookPoster(AddressPolicy(settings.webhook_allowed_network_list),
                                    timeout_s=settings.webhook_timeout_s,
                                    connect_timeout_s=min(5.0, settings.webhook_timeout_s), max_idle=self.concurrency)
        # A claimed row is sent at once (only as many are claimed as there are free slots), so the
        # lease covers one attempt and its time limit, with room to record the outcome.
        self.lease_s = settings.webhook_timeout_s * 2 + 1
        # Every lease of this deliverer carries its token, so what it records touches only rows it holds.
        self.token = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        # The last claim filled every free slot: more may be due, so finished sends look again.
        self._backlog = False
        self._done: list[int] = []  # rows delivered and not yet deleted
        self._done_added = asyncio.Event()
        self._holders = 0
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.claims = 0  # claims made (for tests: the loop waits for a wake-up right after one)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._holders += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Stops the loop once its last holder stops, and closes every connection to a receiver.
        Undelivered rows stay in the outbox for any worker; one cut off mid-POST is sent again when
        its lease runs out."""
        self._holders = max(0, self._holders - 1)
        if self._holders or self._task is None:
            return
        task, self._task = self._task, None
        # The loop also ends by itself once it is no longer `self._task`: a cancel can be lost (on
        # Python 3.11 asyncio.wait_for swallows one that lands as what it waits for finishes).
        task.cancel()
        self._wake.set()
        await asyncio.wait({task})
        if self._task is None:  # not started again meanwhile
            # Kept-alive connections would stay open at the receivers for as long as this object lives.
            await self.poster.aclose()

    async def _run(self) -> None:
        """Until stopped: keep up to `concurrency` deliveries in flight; sleep until woken (by a
        new event of this process or a finished send) or MEDIACACHE_WEBHOOK_POLL_S."""
        this_run = asyncio.current_task()
        recorder = asyncio.create_task(self._record_deliveries(), name="webhook-records")
        loop = asyncio.get_running_loop()
        last_claim = -GATHER_S
        try:
            while self._task is this_run:
                if not self._backlog:
                    # A trickle of events: let the next few join this claim.
                    await asyncio.sleep(max(0.0, last_claim + GATHER_S - loop.time()))
                self._wake.clear()
                free = self.concurrency - len(self._sending)
                if free > 0:
                    last_claim = loop.time()
                    wanted = min(BATCH, free)
                    try:
                        batch = await self.outbox.claim_due(self.token, self.lease_s, wanted)
                    except DatabaseError as exc:
                        log.warning("webhook delivery paused: %s", exc)
                        batch = []
                    self.claims += 1
                    for delivery in batch:
                        self._send(delivery)
                    self._backlog = len(batch) == wanted
                    if self._backlog and len(self._sending) < self.concurrency:
                        continue
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that comes with a wake.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhook_poll_s):
                        await self._wake.wait()
        finally:
            sending = set(self._sending)
            for task in sending:
                task.cancel()
            if sending:
                await asyncio.wait(sending)
            recorder.cancel()
            await asyncio.wait({recorder})
            # Deliveries made but not recorded would otherwise be sent again after their lease.
            with contextlib.suppress(DatabaseError, TimeoutError):
                async with asyncio.timeout(_FLUSH_ON_STOP_S):
                    await self._flush()

    def _send(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._deliver(delivery), name="webhook-send")
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        # With more due than slots, claim again once half the slots are free: one claim per
        # several sends, and the other half still busy meanwhile.
        if self._backlog and len(self._sending) <= self.concurrency // 2:
            self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        error = await self._post(delivery)
        if error is None:
            self._done.append(delivery.row_id)
            self._done_added.set()
            return
        try:
            now = utcnow()
            delay_s = min(self.settings.webhook_backoff_s * 2 ** delivery.attempts, self.settings.webhook_backoff_max_s)
            give_up_at = delivery.created_at + timedelta(hours=self.settings.webhook_retry_hours)
            if now + timedelta(seconds=delay_s) > give_up_at:
                log.error("webhook %s of event %s to %s is dead after %d attempts: %s", delivery.event_type,
                          delivery.event_id, delivery.target_url, delivery.attempts + 1, error)
                await self.outbox.dead(delivery, self.token, error=error)
            else:
                log.info("webhook %s to %s failed (attempt %d), next in %.0f s: %s", delivery.event_id,
                         delivery.target_url, delivery.attempts + 1, delay_s, error)
                await self.outbox.retry_later(delivery, self.token, at=now + timedelta(seconds=delay_s),
                                              error=error)
        except DatabaseError as exc:
            # The lease runs out and the row is sent again: at least once, never lost.
            log.warning("could not record the webhook delivery of event %s: %s", delivery.event_id, exc)

    async def _record_deliveries(self) -> None:
        """Deletes delivered rows: all that finished while the previous DELETE ran, in one statement."""
        loop = asyncio.get_running_loop()
        while True:
            await self._done_added.wait()
            started = loop.time()
            self._done_added.clear()
            try:
                await self._flush()
            except DatabaseError as exc:
                # Their leases run out and they are sent again: at least once, never lost.
                log.warning("could not record webhook deliveries: %s", exc)
            await asyncio.sleep(max(0.0, started + GATHER_S - loop.time()))

    async def _flush(self) -> None:
        row_ids, self._done = self._done, []
        if not row_ids:
            return
        try:
            await self.outbox.delivered(row_ids, self.token)
        except asyncio.CancelledError:
            self._done.extend(row_ids)  # stopping: the last flush records them
            raise
        self.delivered += len(row_ids)

    async def _post(self, delivery: Delivery) -> str | None:
        """Sends one attempt; None when the receiver took it, else what went wrong."""
        headers = signed_headers(self.signer, str(delivery.event_id), utcnow(), delivery.payload)
        try:
            status = await self.poster.post(delivery.target_url, delivery.payload.encode(), headers)
        except FetchError as exc:
            return f"{exc} (for webhook receivers the setting is MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS)"
        except PostError as exc:
            return str(exc)
        if 200 <= status < 300:
            return None
        return f"POST {delivery.target_url} answered {status}"

    async def close(self) -> None:
        """Stops the loop whoever holds it, and closes the HTTP client (also when it never ran)."""
        self._holders = min(self._holders, 1)
        await self.stop()
        await self.poster.aclose()
