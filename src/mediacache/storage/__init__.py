"""Object storage: the ObjectStore protocol, and the backend the settings choose."""

from __future__ import annotations

from mediacache.errors import ConfigError
from mediacache.settings import Settings
from mediacache.storage.base import ObjectInfo, ObjectStore
from mediacache.storage.local import LocalStore
from mediacache.storage.signing import load_signing_key

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "load_signing_key", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    """The local directory, or S3/R2 when MEDIACACHE_STORAGE or the S3 variables say so."""
    if settings.storage_backend == "s3":
        try:
            from mediacache.storage.s3_settings import s3_store_from_settings
        except ModuleNotFoundError as exc:
            if exc.name != "obstore":
                raise
            # obstore is the optional `s3` extra: local storage needs nothing of it.
            raise ConfigError(
                "S3/R2 storage is configured (MEDIACACHE_STORAGE, R2_* or S3_ENDPOINT_URL) but its client is "
                "not installed; install it with: pip install 'mediacache[s3]'") from exc

        return s3_store_from_settings(settings)
    return LocalStore(settings.objects_dir, public_base_url=settings.public_base_url,
                      signing_key=load_signing_key(settings.signing_secret, settings.data_dir))
