"""The worker's side of per-host politeness: a permit before each download, its outcome after.

`Politeness.run(job, token, download)` asks the shared host limiter (fetching/host_limiter.py) for
a permit for the job's host before the handler claims the asset, so a job that must wait holds
neither a lease nor a worker slot: it goes to BullMQ's delayed set (`moveToDelayed`, which spends no
attempt) and its slot is free for other hosts' jobs at once. After the download the permit goes back
(`release_soon`: the job does not wait for Redis; host_limiter.py) with what the attempt says about
the host:

    handler result / error                     outcome for the host
    cached                                     ok
    FetchError.host_verdict "ok"               ok        (the host answered, e.g. 404)
    FetchError.host_verdict "failure"          failure   (time-out, connection error, 5xx)
    FetchError.host_verdict "throttled"        throttled (429, or 503 with Retry-After)
    no verdict (storage, database, skipped)    abandoned (says nothing about the host)
    shutdown, cancellation                     abandoned

A Redis outage of the limiter makes jobs wait (the limiter answers Wait('redis_unavailable') and
logs once), never fail and never run unlimited.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bullmq.custom_errors import DelayedError

from mediacache.errors import FetchError, FinalFailureError
from mediacache.fetching.expiry import is_expired
from mediacache.fetching.host_client import build_limiter
from mediacache.fetching.host_limiter import Grant, HostLimiter, HostState, Outcome, Wait
from mediacache.fetching.host_wait import acquire_or_wait, delayed_until_ms
from mediacache.settings import Settings

log = logging.getLogger("mediacache.worker")

T = TypeVar("T")


# The common case, `http(s)://host[:port]/...` with a plain host name, read without urlsplit (a
# tenth of its cost, per download); anything else (user info, brackets, odd characters) goes
# through urlsplit, which this agrees with whenever it matches.
_PLAIN_HOST = re.compile(r"https?://([a-z0-9.-]+)(?::[0-9]*)?(?:[/?#]|$)", re.IGNORECASE)


def host_of(url: Any) -> str | None:
    """The host of a job's URL, or None when it has none (the handler then refuses the URL)."""
    if not isinstance(url, str):
        return None
    plain = _PLAIN_HOST.match(url)
    if plain is not None:
        return plain[1].lower()
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def outcome_of(result: BaseException | str) -> Outcome:
    """What an attempt says about its host: `result` is the handler's status or its error."""
    if isinstance(result, str):
        return Outcome.ok() if result == "cached" else Outcome.abandoned()
    verdict = getattr(result, "host_verdict", None) if isinstance(result, FetchError | FinalFailureError) else None
    if verdict == "ok":
        return Outcome.ok()
    if verdict == "failure":
        return Outcome.failure()
    if verdict == "throttled":
        return Outcome.throttled(getattr(result, "retry_after_s", None))
    return Outcome.abandoned()


class Politeness:
    """Permits per host around each download of one worker process; shared state lives in Redis."""

    def __init__(self, settings: Settings, *, limiter: HostLimiter | None = None) -> None:
        self.enabled = settings.host_limiting
        self.rules = settings.host_rules
        # redis-py connects on first use: building the client costs nothing while limiting is off.
        self._limiter = limiter or (build_limiter(settings) if self.enabled else None)

    @property
    def limiter(self) -> HostLimiter:
        if self._limiter is None:
            raise RuntimeError("host limiting is off (MEDIACACHE_HOST_LIMITING=false) or closed")
        return self._limiter

    async def run(self, job: Any, token: str, download: Callable[[], Awaitable[T]]) -> T:
        """Runs `download` under a permit for the job's host; raises DelayedError (after moving the
        job to the delayed set, spending no attempt) when the host must wait."""
        grant = await self._admit(job, token) if self.enabled else None
        if grant is None:
            return await download()
        limiter = self.limiter
        try:
            async with limiter.renewing(grant):
                result = await download()
        except BaseException as exc:
            limiter.release_soon(grant, outcome_of(exc))
            raise
        limiter.release_soon(grant, outcome_of(str(getattr(result, "status", ""))))
        return result

    async def _admit(self, job: Any, token: str) -> Grant | None:
        url = (getattr(job, "data", None) or {}).get("url")
        host = host_of(url)
        # No permit for what makes no request: the handler refuses a URL without a host, and fails
        # an expired link at once (fetching/fetch.py) without waiting for its host.
        if host is None or is_expired(str(url)):
            return None
        decision = await acquire_or_wait(self.limiter, host, self.rules.rule_for(host))
        if isinstance(decision, Grant):
            return decision
        await self._delay(job, token, decision)
        raise DelayedError(f"host {decision.host}: waiting ({decision.reason}) for {decision.retry_in_s:.2f} s")

    @staticmethod
    async def _delay(job: Any, token: str, wait: Wait) -> None:
        await job.moveToDelayed(delayed_until_ms(wait), token)

    async def snapshot(self) -> list[HostState]:
        return await self.limiter.snapshot() if self._limiter is not None else []

    async def close(self) -> None:
        if self._limiter is not None:
            # Sends the releases still queued (release_soon), then closes the client.
            await self._limiter.aclose()
            self._limiter = None
