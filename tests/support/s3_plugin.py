"""pytest fixtures for a real S3 server: the shared SeaweedFS of the session and a fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.s3server import S3Server, running_server, temporary_bucket


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """SeaweedFS on 127.0.0.1 checking SigV4 signatures; started unless another session runs one."""
    with running_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A uniquely named, empty bucket; deleted after the test with its objects and unfinished uploads."""
    with temporary_bucket(s3_server) as bucket:
        yield bucket


def s3_settings_overrides(server: S3Server, bucket: str) -> dict[str, Any]:
    """Keyword arguments for `load_settings` that point mediacache at `bucket` on `server`."""
    return {
        "storage": "s3",
        "s3_endpoint_url": server.endpoint,
        "s3_region": server.region,
        "r2_access_key_id": server.access_key_id,
        "r2_secret_access_key": server.secret_access_key,
        "r2_bucket_name": bucket,
    }
