"""Refuses local storage that cannot hold the shared database's objects (a second machine, or the
wrong MEDIACACHE_DATA_DIR): local objects live on one machine's disk, the database is everyone's."""

from __future__ import annotations

from mediacache.db.repository import AssetRepository
from mediacache.errors import ConfigError
from mediacache.settings import Settings
from mediacache.storage.base import ObjectStore

SAMPLE = 20


async def check_local_store_holds_its_assets(settings: Settings, assets: AssetRepository,
                                             store: ObjectStore) -> None:
    """With local storage and a PostgreSQL database: raises ConfigError when none of the newest
    cached assets has its object in this data directory.

    A SQLite database lives in the data directory itself, so it cannot be shared by machines that
    have different ones. A PostgreSQL database can: a second machine on local storage would
    record objects nobody else can serve and hand out links to files it does not have. What stays
    undetected: a second machine joining before the first has cached anything (its first own
    objects then pass the check); README "Scaling out" says to use S3 for many machines.
    """
    if settings.storage_backend != "local" or settings.sqlalchemy_url.startswith("sqlite"):
        return
    keys = await assets.newest_cached_keys(SAMPLE)
    for key in keys:
        if await store.head(key) is not None:
            return
    if keys:
        raise ConfigError(
            f"local storage under {settings.objects_dir.resolve()} holds none of the {len(keys)} newest cached "
            f"objects of the database {settings.database_display} (for example {keys[0]}): another machine or data "
            "directory stored them, and local files cannot be shared between machines. For several machines use S3 "
            "storage (MEDIACACHE_STORAGE=s3 with S3_ENDPOINT_URL or the R2_* settings) on every one; on one machine "
            "set MEDIACACHE_DATA_DIR to the directory that holds them")
