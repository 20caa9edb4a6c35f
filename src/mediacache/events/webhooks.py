"""Webhook delivery: a loop in each worker process that takes due outbox rows and POSTs them, signed.

At least once: a row leaves the outbox only after its receiver answered 2xx, so a crash between
the POST and that delete sends the event again (receivers dedupe by the `webhook-id` header, the
event id). Failures are retried with exponential backoff until MEDIACACHE_WEBHOOK_RETRY_HOURS
after the event, then the row is marked dead (counted on the dashboard and in /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import httpx

from mediacache.db.columns import utcnow
from mediacache.errors import DatabaseError, FetchError
from mediacache.events.outbox import Delivery, OutboxRepository
from mediacache.events.signing import check_secret, signed_headers
from mediacache.fetching.netguard import AddressPolicy, guarded_transport
from mediacache.settings import Settings

log = logging.getLogger("mediacache.webhooks")

BATCH = 50


class WebhookDeliverer:
    """Delivers the outbox's due rows; `wake()` after writing one makes it look at once."""

    def __init__(self, settings: Settings, outbox: OutboxRepository,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.webhook_secret is None:
            raise ValueError("WebhookDeliverer needs MEDIACACHE_WEBHOOK_SECRET")
        self.settings = settings
        self.outbox = outbox
        self.signer = check_secret(settings.webhook_secret.get_secret_value())
        # The same SSRF guard as downloads: a webhook URL must not become a way into the internal
        # network, so internal receivers need their range in MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS.
        policy = AddressPolicy(settings.webhook_allowed_network_list)
        self.client = httpx.AsyncClient(
            transport=transport or guarded_transport(policy, connect_timeout_s=min(5.0, settings.webhook_timeout_s),
                                                     limits=httpx.Limits(max_connections=BATCH)),
            timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)
        self.lease_s = settings.webhook_timeout_s * 2 + 1
        self._wake = asyncio.Event()
        self.delivered = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: deliver what is due, then sleep until woken or MEDIACACHE_WEBHOOK_POLL_S."""
        while True:
            self._wake.clear()
            try:
                taken = await self.deliver_due()
            except DatabaseError as exc:
                log.warning("webhook delivery paused: %s", exc)
                taken = 0
            if taken >= BATCH:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.webhook_poll_s)
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        """One round: claims up to BATCH due rows and sends them concurrently; returns how many."""
        token = uuid.uuid4().hex
        batch = await self.outbox.claim_due(token, self.lease_s, BATCH)
        if batch:
            await asyncio.gather(*(self._deliver(d, token) for d in batch))
        return len(batch)

    async def _deliver(self, delivery: Delivery, token: str) -> None:
        error = await self._post(delivery)
        try:
            if error is None:
                await self.outbox.delivered(delivery, token)
                self.delivered += 1
                return
            now = utcnow()
            delay_s = min(self.settings.webhook_backoff_s * 2 ** delivery.attempts, self.settings.webhook_backoff_max_s)
            give_up_at = delivery.created_at + timedelta(hours=self.settings.webhook_retry_hours)
            if now + timedelta(seconds=delay_s) > give_up_at:
                log.error("webhook %s of event %s to %s is dead after %d attempts: %s", delivery.event_type,
                          delivery.event_id, delivery.target_url, delivery.attempts + 1, error)
                await self.outbox.dead(delivery, token, error=error)
            else:
                log.info("webhook %s to %s failed (attempt %d), next in %.0f s: %s", delivery.event_id,
                         delivery.target_url, delivery.attempts + 1, delay_s, error)
                await self.outbox.retry_later(delivery, token, at=now + timedelta(seconds=delay_s), error=error)
        except DatabaseError as exc:
            # The lease runs out and the row is sent again: at least once, never lost.
            log.warning("could not record the webhook delivery of event %s: %s", delivery.event_id, exc)

    async def _post(self, delivery: Delivery) -> str | None:
        """Sends one attempt; None when the receiver took it, else what went wrong."""
        headers = signed_headers(self.signer, str(delivery.event_id), utcnow(), delivery.payload)
        try:
            response = await self.client.post(delivery.target_url, content=delivery.payload.encode(),
                                              headers=headers)
        except FetchError as exc:
            return f"{exc} (for webhook receivers the setting is MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS)"
        except httpx.HTTPError as exc:
            return f"POST {delivery.target_url} failed: {type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"POST {delivery.target_url} answered {response.status_code}"

    async def close(self) -> None:
        await self.client.aclose()
