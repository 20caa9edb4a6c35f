"""S3Store from the settings: R2 from the original design's variables, or any S3-compatible endpoint."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mediacache.errors import ConfigError
from mediacache.settings import Settings
from mediacache.storage.s3 import S3Store

# ---- configuration --------------------------------------------------------------------------------

_R2_SUFFIX = ".r2.cloudflarestorage.com"


def s3_store_from_settings(settings: Settings) -> S3Store:
    """The S3 store the settings describe; one ConfigError naming everything missing or wrong.

    R2: R2_ACCOUNT_ID gives the endpoint `https://<account id>.r2.cloudflarestorage.com`, region
    `auto`. Any other S3 store: S3_ENDPOINT_URL (path-style requests) and S3_REGION (default
    `us-east-1`); AWS S3 itself needs only S3_REGION.
    """
    access_key_id, secret, bucket = settings.r2_access_key_id, settings.r2_secret_access_key, settings.r2_bucket_name
    problems: list[str] = []
    if not access_key_id:
        problems.append("R2_ACCESS_KEY_ID (the access key id of an API token)")
    if secret is None or not secret.get_secret_value():
        problems.append("R2_SECRET_ACCESS_KEY (the secret of that access key)")
    if not bucket:
        problems.append("R2_BUCKET_NAME (the bucket that holds the media)")
    account_id = settings.r2_account_id
    endpoint = settings.s3_endpoint_url
    if not (account_id or endpoint or settings.s3_region):
        problems.append("R2_ACCOUNT_ID (for Cloudflare R2) or S3_ENDPOINT_URL (for another S3-compatible store; "
                        "for AWS S3 itself S3_REGION is enough)")
    if problems or not (access_key_id and secret and bucket):
        raise ConfigError(
            f"S3 storage is selected ({_why_s3(settings)}) but its configuration is incomplete; missing: "
            + "; ".join(problems)
            + ". Set them in the environment or .env, or unset MEDIACACHE_STORAGE and every R2_*/S3_* "
              "variable to keep media in the local directory.")
    if account_id and endpoint is None and not re.fullmatch(r"[A-Za-z0-9]{1,64}", account_id):
        raise ConfigError(
            f"R2_ACCOUNT_ID={account_id!r} is not a Cloudflare account id (32 hexadecimal characters, shown in "
            "the R2 dashboard); give only the id, or set S3_ENDPOINT_URL to the full endpoint")
    # The endpoint's and the public URL's form and the link lifetime are checked once, by Settings.check().
    if endpoint is None and account_id:
        endpoint = f"https://{account_id}{_R2_SUFFIX}"
    is_r2 = bool(account_id) or (endpoint is not None and (urlsplit(endpoint).hostname or "").endswith(_R2_SUFFIX))
    region = settings.s3_region or ("auto" if is_r2 else "us-east-1")
    return S3Store(
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret.get_secret_value(),
        endpoint=endpoint,
        region=region,
        public_url=settings.r2_public_url,
    )


def _why_s3(settings: Settings) -> str:
    if settings.storage == "s3":
        return "MEDIACACHE_STORAGE=s3"
    given = [name for name, value in (
        ("R2_ACCOUNT_ID", settings.r2_account_id), ("R2_ACCESS_KEY_ID", settings.r2_access_key_id),
        ("R2_SECRET_ACCESS_KEY", settings.r2_secret_access_key), ("R2_BUCKET_NAME", settings.r2_bucket_name),
        ("S3_ENDPOINT_URL", settings.s3_endpoint_url)) if value is not None]
    return ", ".join(given) + (" is set" if len(given) == 1 else " are set")
