"""An Origin that counts downloads in flight and can throttle (429) or drop connections, for politeness tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tests.support.origin import Origin


@dataclass
class PoliteOrigin(Origin):
    """`throttle_next`: answer that many requests 429 with `Retry-After: retry_after_s`;
    `dropping`: close every connection right after its request line (a host that is down);
    `in_flight_max`: the most requests answered at once; `throttled_at`, `dropped_at`: when."""

    throttle_next: int = 0
    retry_after_s: int = 3
    dropping: bool = False
    in_flight: int = 0
    in_flight_max: int = 0
    delay_s: float = 0.0
    throttled_at: list[float] | None = None
    dropped_at: list[float] | None = None

    def __post_init__(self) -> None:
        self.throttled_at, self.dropped_at = [], []

    async def _respond(self, writer: asyncio.StreamWriter, method: str, target: str) -> bool:
        if self.dropping:
            assert self.dropped_at is not None
            self.dropped_at.append(time.monotonic())
            return False
        if self.throttle_next > 0:
            self.throttle_next -= 1
            assert self.throttled_at is not None
            self.throttled_at.append(time.monotonic())
            writer.write((f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: {self.retry_after_s}\r\n"
                          "Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nslow").encode())
            return True
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return await super()._respond(writer, method, target)
        finally:
            self.in_flight -= 1


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of `times` within any window of `window_s`."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
