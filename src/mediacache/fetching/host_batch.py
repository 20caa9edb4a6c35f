"""Sends the host limiter's operations to Redis together: one script call at a time, on a connection of its own.

What one process asks at one moment goes in one call: every operation queued while the previous
call was out, or within the same turn of the event loop. An operation may wait a little for
company (`send_by`); one that must go now takes everything queued with it. The limiter
(host_limiter.py) decides what the operations mean; this module only carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

# At most this many operations in one script call; more go in the next.
BATCH_MAX_OPS = 256


@dataclass(slots=True, eq=False)
class BatchOp:
    """One operation waiting for, or in, a script call. Its reply goes to `future` (None when Redis
    did not answer); an operation whose future is done before it is sent (its caller gave up) is
    left out."""

    label: str  # what it is, for the limiter ("a" acquire, "r" release)
    keys: tuple[bytes, ...]
    arg: bytes
    future: asyncio.Future[Any] | None
    send_by: float  # event-loop time; 0: as soon as no call is out
    # Sent with the milliseconds it waited appended to `arg` (a release's hold time is measured
    # from its end, not from when it reached Redis).
    stamp_age: bool = False
    context: Any = None  # the limiter's, for handling the reply
    queued_at: float = field(default_factory=time.monotonic)


class ScriptBatch:
    """Queues BatchOps and sends them as one EVALSHA of `script` with `leading_keys` first.

    `on_reply(op, reply)` hears each reply before its future does (reply None: no answer);
    `on_down(exc, ops)` hears a call Redis did not answer within `timeout_s`, `on_up()` the next
    one it did.
    """

    def __init__(self, client: aioredis.Redis, script: AsyncScript, *, leading_keys: Sequence[bytes],
                 timeout_s: float, on_reply: Callable[[BatchOp, Any], Any],
                 on_down: Callable[[BaseException, list[BatchOp]], None], on_up: Callable[[], None]) -> None:
        self.client = client
        self.script = script
        self.leading_keys = list(leading_keys)
        self.timeout_s = timeout_s
        self.on_reply, self.on_down, self.on_up = on_reply, on_down, on_up
        self._queue: list[BatchOp] = []
        self._sender: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._conn: Any = None  # the connection of the calls (_call)
        self.calls = 0  # script calls sent (round trips), for benchmarks and tests

    def submit(self, op: BatchOp) -> None:
        self._queue.append(op)
        if self._sender is not None:
            return  # it takes what was queued meanwhile once its call is back
        if not op.send_by:
            self._start_sender()
        else:
            self._send_at(op.send_by)

    async def flush(self) -> None:
        """Sends everything queued now and returns once Redis has answered (or not)."""
        for op in self._queue:
            op.send_by = 0.0
        while self._queue or self._sender is not None:
            if self._sender is None:
                self._start_sender()
            assert self._sender is not None
            await asyncio.shield(self._sender)

    async def aclose(self) -> None:
        """Sends what is queued, then gives its connection back (the client stays open)."""
        try:
            await self.flush()
        finally:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self.client.connection_pool.release(conn)

    def _send_at(self, when: float) -> None:
        if self._linger is not None:
            if self._linger.when() <= when:
                return
            self._linger.cancel()
        self._linger = asyncio.get_running_loop().call_at(when, self._linger_over)

    def _linger_over(self) -> None:
        self._linger = None
        for op in self._queue:
            op.send_by = 0.0
        if self._sender is None and self._queue:
            self._start_sender()

    def _start_sender(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        # A task, not a call now: everything queued until it first runs (this turn of the event
        # loop) goes in the same call.
        self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        """One call at a time; what is queued while it is out goes in the next one."""
        try:
            # Whatever is queued goes together, as soon as one of the operations must go.
            while any(not op.send_by for op in self._queue):
                ops, self._queue = self._queue[:BATCH_MAX_OPS], self._queue[BATCH_MAX_OPS:]
                if not await self._send(ops):
                    # Redis did not answer within the time-out: what waits would fare no better now.
                    ops, self._queue = self._queue, []
                    self._give_up(ops)
        finally:
            self._sender = None
            if self._queue:
                self._send_at(min(op.send_by for op in self._queue))

    async def _send(self, ops: list[BatchOp]) -> bool:
        """One script call for `ops`; False when Redis did not answer (each op has been told)."""
        now = time.monotonic()
        live: list[BatchOp] = []
        keys: list[bytes] = list(self.leading_keys)
        args: list[bytes] = []
        for op in ops:
            if op.future is not None and op.future.done():
                continue  # its caller gave up (cancelled) before it went out
            args.append(op.arg + str(int((now - op.queued_at) * 1000)).encode() if op.stamp_age else op.arg)
            live.append(op)
            keys.extend(op.keys)
        if not live:
            return True
        try:
            # A time-out after the script ran leaves its effects unknown to us: the limiter's
            # permits lapse within their TTL, a smaller harm than callers that hang with Redis.
            async with asyncio.timeout(self.timeout_s):
                replies = await self._call(keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self.on_down(exc, live)
            self._give_up(live)
            return False
        except BaseException:
            self._give_up(live)
            raise
        self.on_up()
        for op, reply in zip(live, replies, strict=True):
            reply = self.on_reply(op, reply)
            if op.future is not None and not op.future.done():
                op.future.set_result(reply)
        return True

    async def _call(self, keys: list[bytes], args: list[bytes]) -> Any:
        """EVALSHA on a connection kept here, not one taken from the pool and given back per call:
        only one call is out at a time, and the pool's bookkeeping (a lock, a readiness check,
        usage metrics) was a fifth of a call's client CPU (profiled)."""
        for attempt in range(2):
            conn = self._conn
            if conn is None:
                conn = self._conn = await self.client.connection_pool.get_connection()
            self.calls += 1
            try:
                await conn.send_packed_command(
                    conn.pack_command("EVALSHA", self.script.sha, len(keys), *keys, *args), check_health=False)
                return await conn.read_response()
            except NoScriptError:
                # A restarted or flushed Redis forgot the script: load it once more.
                await self.client.script_load(self.script.script)
            except ResponseError:
                raise  # the connection is fine; the call itself failed
            except BaseException as exc:
                # The connection's state is unknown (a reply may be half read): it is not used again.
                self._conn = None
                await self._drop(conn)
                # One more try on a fresh connection for one that Redis (or a proxy) closed while it
                # was idle, as redis-py's own retry does.
                if attempt == 1 or not isinstance(exc, RedisConnectionError | OSError):
                    raise
        raise RedisError("the host limiter's script could not be loaded")

    async def _drop(self, conn: Any) -> None:
        await conn.disconnect(nowait=True)
        with contextlib.suppress(KeyError):
            await self.client.connection_pool.release(conn)

    @staticmethod
    def _give_up(ops: list[BatchOp]) -> None:
        for op in ops:
            if op.future is not None and not op.future.done():
                op.future.set_result(None)
