"""The one fixture of the lower-level scale tests that the suite's scale plugin does not offer.

Sentinel, TLS Redis and the one-connection PgBouncer come from tests/support/scale_plugin.py,
which also decides how a missing binary is treated (a skip here, a failure under CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scale import servers
from tests.support.scale_plugin import serve


@pytest.fixture
def pgbouncer() -> Iterator[servers.PgBouncer]:
    """PgBouncer in transaction mode, 5 server connections, in front of a fresh database."""
    yield from serve(servers.pgbouncer(pool_size=5))
