"""HMAC-signed, expiring links for objects in local storage (S3 backends presign instead)."""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from mediacache.storage.mac import hmac_sha256

_MAX_EXP_DIGITS = 12  # unix seconds stay under 13 digits until the year 33658


# What quote() leaves as it is: a key made only of these is its own URL path.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/~-]*")


def _mac(secret: bytes, key: str, expires_at: int) -> str:
    digest = hmac_sha256(secret, f"{key}\n{expires_at}".encode("utf-8", "surrogatepass"))
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_path(secret: bytes, key: str, *, ttl_s: int, now: float | None = None) -> str:
    """`/files/<key>?exp=<unix time>&sig=<mac>`, valid for `ttl_s` seconds."""
    return sign_paths(secret, [key], ttl_s=ttl_s, now=now)[0]


def sign_paths(secret: bytes, keys: Sequence[str], *, ttl_s: int, now: float | None = None) -> list[str]:
    """`sign_path` of each key, all expiring at the same second."""
    expires_at = int((time.time() if now is None else now) + ttl_s)
    plain = _PLAIN_PATH.fullmatch
    return [f"/files/{key if plain(key) else quote(key)}?exp={expires_at}&sig={_mac(secret, key, expires_at)}"
            for key in keys]


def verify(secret: bytes, key: str, exp: str | int | None, sig: str | None, *, now: float | None = None) -> bool:
    """True when `sig` is the MAC of (key, exp) and exp has not passed; compared in constant time."""
    if exp is None or sig is None:
        return False
    exp_text = str(exp)
    # ASCII digits of a plausible length only: int() would also take " 12", "1_2", other scripts'
    # digits and (until its 4,300-digit limit) any length.
    if not (exp_text.isascii() and exp_text.isdigit() and len(exp_text) <= _MAX_EXP_DIGITS):
        return False
    expires_at = int(exp_text)
    if expires_at < (time.time() if now is None else now):
        return False
    # Bytes, not str: compare_digest raises TypeError on a str with non-ASCII characters, and a
    # caller chooses `sig`. A surrogate (from a badly escaped query) cannot match a MAC either.
    given = sig.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(_mac(secret, key, expires_at).encode(), given)


def load_signing_key(signing_secret: SecretStr | None, data_dir: Path) -> bytes:
    """The HMAC key of local file links: MEDIACACHE_SIGNING_SECRET, or a key kept in the data dir.

    Keeping a generated key in the data directory lets a library and a server that share
    the directory sign and check the same links without any configuration.
    """
    if signing_secret is not None:
        return signing_secret.get_secret_value().encode()
    path = data_dir / "signing.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        # O_EXCL: when two processes start at once, the first key written wins for both.
        with open(path, "xb") as f:
            f.write(key)
        path.chmod(0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    return key
