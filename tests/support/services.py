"""Where the suite's shared services are, and the factory types its fixtures hand out."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from mediacache.service import MediaCache
from mediacache.settings import Settings
from mediacache.worker import CacheWorker

PG_ADMIN_DSN = os.environ.get("MEDIACACHE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 0
# Every variable mediacache reads: a test builds its settings explicitly, so none of these may
# leak in from the developer's shell.
MEDIACACHE_ENV_PREFIXES = ("REDIS_", "R2_", "S3_", "MEDIACACHE_", "DATABASE_URL", "AWS_")

SettingsFactory = Callable[..., Settings]
WorkerFactory = Callable[..., Awaitable[CacheWorker]]
CacheFactory = Callable[..., MediaCache]
