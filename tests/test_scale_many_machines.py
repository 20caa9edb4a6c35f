"""Many machines, no shared disk: two groups (HTTP service and worker each) with their own
MEDIACACHE_DATA_DIR share one queue, one PostgreSQL database and one bucket; links made by one are
served by the other; local storage that cannot serve the shared database is refused at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mediacache.errors import ConfigError
from mediacache.service import MediaCache
from mediacache.worker import CacheWorker
from tests.support.api import running_api
from tests.support.origin import Origin, body
from tests.support.s3_plugin import s3_settings_overrides
from tests.support.s3server import S3Server
from tests.support.services import SettingsFactory

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@ON_POSTGRESQL
async def test_two_groups_on_s3_serve_each_others_assets(
        make_settings: SettingsFactory, s3_server: S3Server, s3_bucket: str, origin: Origin, tmp_path: Path) -> None:
    s3: dict[str, Any] = s3_settings_overrides(s3_server, s3_bucket)
    dir_a, dir_b = tmp_path / "machine-a", tmp_path / "machine-b"
    sizes = [3000 + 101 * i for i in range(30)]
    urls = [origin.url(f"/media/{i}.jpg?size={size}") for i, size in enumerate(sizes)]
    async with running_api(make_settings, data_dir=dir_a, **s3) as a, \
            running_api(make_settings, data_dir=dir_b, **s3) as b:
        assert a.settings.queue_prefix == b.settings.queue_prefix
        ids = (await a.client.post("/api/assets/batch", json={"urls": urls})).json()["ids"]
        await a.wait_settled(ids)
        assert (await b.cache.cache_stats()).cached == len(ids)
        async with httpx.AsyncClient(timeout=30) as plain:
            for i, asset_id in enumerate(ids):
                # A link handed out by machine A (presigned by S3 itself) works anywhere ...
                link_a = await a.cache.get_url(asset_id)
                assert link_a is not None and link_a.startswith(s3_server.endpoint)
                assert (await plain.get(link_a)).content == body("media", i, sizes[i])
                # ... and machine B's HTTP service sends its clients to the same object.
                redirect = await b.client.get(f"/media/{asset_id}", follow_redirects=False)
                assert redirect.status_code == 302
                assert (await plain.get(redirect.headers["location"])).content == body("media", i, sizes[i])
            urls_b = (await b.client.post("/api/urls", json={"values": ids})).json()["urls"]
            assert all(u.startswith(s3_server.endpoint) for u in urls_b)
    assert not _files(dir_a / "objects") and not _files(dir_b / "objects")
    assert not (_files(dir_a) & _files(dir_b))


# On SQLite: with PostgreSQL, the second server on local storage is refused (the test below).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_local_links_signed_by_one_server_pass_the_others_check_with_the_shared_secret(
        make_settings: SettingsFactory, origin: Origin, tmp_path: Path) -> None:
    dir_a, dir_b = tmp_path / "machine-a", tmp_path / "machine-b"
    async with running_api(make_settings, data_dir=dir_a) as a:
        asset_id = (await a.client.post("/api/assets", json={"url": origin.url("/media/3.jpg?size=4000")})).json()["id"]
        await a.wait_settled([asset_id])
        link = await a.cache.get_url(asset_id)
        assert link is not None and link.startswith(a.url + "/files/")
        assert (await a.client.get(link)).content == body("media", 3, 4000)
    path = link.removeprefix(a.url)
    async with running_api(make_settings, data_dir=dir_b, run_worker=False) as b:
        # The signature is accepted (same MEDIACACHE_SIGNING_SECRET); the file is not on this disk.
        assert (await b.client.get(path)).status_code == 404
    async with running_api(make_settings, data_dir=dir_b, run_worker=False, signing_secret="another") as c:
        assert (await c.client.get(path)).status_code == 403


@ON_POSTGRESQL
async def test_a_second_machine_on_local_storage_is_refused_at_start_up(
        make_settings: SettingsFactory, origin: Origin, tmp_path: Path) -> None:
    dir_a, dir_b = tmp_path / "machine-a", tmp_path / "machine-b"
    async with running_api(make_settings, data_dir=dir_a) as a:
        asset_id = (await a.client.post("/api/assets", json={"url": origin.url("/media/4.jpg?size=4000")})).json()["id"]
        await a.wait_settled([asset_id])
    async with MediaCache(make_settings(data_dir=dir_b)) as other:
        with pytest.raises(ConfigError) as caught:
            await CacheWorker(other).start()
    message = str(caught.value)
    print(f"\nsecond machine on local storage: {message}")
    assert str((dir_b / "objects").resolve()) in message and "MEDIACACHE_STORAGE=s3" in message
    assert "\n" not in message
    # The machine that holds the objects starts as before.
    async with MediaCache(make_settings(data_dir=dir_a)) as same:
        await same.check_storage_placement()
