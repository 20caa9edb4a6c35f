"""The /metrics exposition: gauges read from the database and Redis at scrape time, plus worker counters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import QueueUnavailableError
from mediacache.fetching.host_limiter import HostState
from mediacache.records import CacheStats, QueueStats, WebhookStats
from mediacache.service import MediaCache
from mediacache.worker.metrics import worker_collectors


@dataclass(frozen=True, slots=True)
class Snapshot:
    queue: QueueStats | None  # None while Redis does not answer
    cache: CacheStats
    stored_bytes: int
    webhooks: WebhookStats
    hosts: list[HostState] = field(default_factory=list)  # empty while Redis does not answer


async def take_snapshot(cache: MediaCache) -> Snapshot:
    """Reads the figures once per scrape; a Redis outage leaves the database figures intact."""
    async def queue_or_none() -> QueueStats | None:
        try:
            return await cache.queue_stats()
        except QueueUnavailableError:
            return None

    async def hosts_or_none() -> list[HostState]:
        try:
            return await cache.host_states()
        except QueueUnavailableError:
            return []

    queue, stats, stored, webhooks, hosts = await asyncio.gather(
        queue_or_none(), cache.cache_stats(), cache.stored_bytes(), cache.webhook_stats(), hosts_or_none())
    return Snapshot(queue=queue, cache=stats, stored_bytes=stored, webhooks=webhooks, hosts=hosts)


class SnapshotCollector(Collector):
    """Gauges from one Snapshot. The database is the truth shared by every worker process, so these
    figures are right however many workers run; the worker counters only cover this process."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        up = GaugeMetricFamily("mediacache_queue_up", "1 when Redis answered this scrape, else 0.",
                               value=0 if snap.queue is None else 1)
        yield up
        if snap.queue is not None:
            jobs = GaugeMetricFamily("mediacache_queue_jobs", "BullMQ jobs of the media-cache queue by state.",
                                     labels=["state"])
            for state, n in snap.queue.as_dict().items():
                jobs.add_metric([state], n)
            yield jobs
        assets = GaugeMetricFamily("mediacache_assets", "Cache assets by status.", labels=["status"])
        for status in CacheStatus:
            assets.add_metric([status.value], snap.cache[status.value.lower()])
        yield assets
        failed = GaugeMetricFamily("mediacache_assets_failed", "FAILED cache assets by error kind.",
                                   labels=["kind"])
        # Every known kind is exported (zero when none), so alert rules see the series from the start.
        kinds = {k.value: 0 for k in ErrorKind} | snap.cache.failed_by_kind
        for kind, n in sorted(kinds.items()):
            failed.add_metric([kind], n)
        yield failed
        yield GaugeMetricFamily("mediacache_assets_at_risk",
                                "PENDING assets whose source link expires within 15 minutes.",
                                value=snap.cache.at_risk)
        breaker = GaugeMetricFamily("mediacache_host_breaker_open",
                                    "1 while the host's circuit breaker is open, 0.5 half-open, 0 closed.",
                                    labels=["host"])
        rate = GaugeMetricFamily("mediacache_host_rate", "Requests per second to the host (all workers).",
                                 labels=["host"])
        in_use = GaugeMetricFamily("mediacache_host_permits_in_use", "Downloads from the host in flight.",
                                   labels=["host"])
        for h in snap.hosts:
            breaker.add_metric([h.host], {"open": 1.0, "half_open": 0.5}.get(h.breaker, 0.0))
            rate.add_metric([h.host], h.rate_per_s)
            in_use.add_metric([h.host], h.permits_in_use)
        yield breaker
        yield rate
        yield in_use
        yield GaugeMetricFamily("mediacache_stored_bytes", "Total size of the stored objects of CACHED assets.",
                                value=snap.stored_bytes)
        deliveries = GaugeMetricFamily("mediacache_webhook_deliveries",
                                       "Webhook deliveries in the outbox: pending (retries included) or dead.",
                                       labels=["state"])
        deliveries.add_metric(["pending"], snap.webhooks.pending)
        deliveries.add_metric(["dead"], snap.webhooks.dead)
        yield deliveries


def render(snapshot: Snapshot) -> bytes:
    # A registry per scrape: the snapshot belongs to this request, and the worker metrics (module
    # globals) can join any number of registries.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    for collector in worker_collectors():
        registry.register(collector)
    return generate_latest(registry)
