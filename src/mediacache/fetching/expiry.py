"""When a signed CDN link stops working, read from its query string (TikTok, Instagram, S3, GCS, CloudFront)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

# Timestamps outside this window are not expiry times (a millisecond value, a typo, garbage): the
# link is then treated as having no known expiry rather than as expired.
_MIN_EPOCH_S = 946_684_800        # 2000-01-01
_MAX_EPOCH_S = 32_503_680_000     # 3000-01-01
_MAX_SIGV4_EXPIRES_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days

# `oe` and `expire` are short, generic names; they are only read on the CDNs that sign with them.
_META_HOST_SUFFIXES = ("fbcdn.net", "cdninstagram.com", "instagram.com", "facebook.com", "fbsbx.com")
_TIKTOK_HOST_SUFFIXES = ("tiktokcdn.com", "tiktokcdn-us.com", "tiktokcdn-eu.com", "tiktok.com", "tiktokv.com",
                         "tiktokv.us", "tiktokv.eu", "ibyteimg.com", "byteimg.com", "muscdn.com")
# `Expires` is also a generic name; it counts only next to the signature parameters of the
# schemes that use it: S3 SigV2 (AWSAccessKeyId), GCS V2 (GoogleAccessId), CloudFront (Key-Pair-Id).
_EXPIRES_COMPANIONS = ("awsaccesskeyid", "googleaccessid", "key-pair-id", "signature")
# Every expiry read below needs a parameter whose name holds one of these words; a URL with none of
# them (and nothing that urlsplit or parse_qsl would decode or remove to make one) has no expiry,
# which one scan tells at a fraction of the cost of parsing the query (this runs per download).
_EXPIRY_WORDS = ("expire", "oe", "policy", "%", "\t", "\r", "\n")


def link_expiry(url: str) -> datetime | None:
    """The moment (UTC) the signed `url` stops working, or None when it carries no expiry we know.

    Recognised: TikTok `x-expires` (and `expire` on TikTok hosts), Instagram/Facebook `oe` (hex
    seconds), AWS SigV4 `X-Amz-Date` + `X-Amz-Expires`, GCS V4 `X-Goog-Date` + `X-Goog-Expires`,
    `Expires` of S3 SigV2, GCS V2 and CloudFront canned policies, and a CloudFront custom `Policy`'s
    `DateLessThan`. When several are present the earliest wins. Never raises on odd input.
    """
    lowered = url.lower()
    if not any(word in lowered for word in _EXPIRY_WORDS):
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return None
    if not parts.query:
        return None
    # Parameter names are matched case-insensitively: signers differ (X-Amz-* vs x-amz-*), and a
    # wrong guess only costs a missed expiry, never a refused download.
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        params.setdefault(key.lower(), value)
    found = [
        _epoch(params.get("x-expires")),
        _epoch(params.get("expire")) if _on(host, _TIKTOK_HOST_SUFFIXES) else None,
        _hex_epoch(params.get("oe")) if _on(host, _META_HOST_SUFFIXES) else None,
        _dated(params.get("x-amz-date"), params.get("x-amz-expires")),
        _dated(params.get("x-goog-date"), params.get("x-goog-expires")),
        _epoch(params.get("expires")) if any(k in params for k in _EXPIRES_COMPANIONS) else None,
        _cloudfront_policy(params.get("policy")) if "key-pair-id" in params else None,
    ]
    times = [t for t in found if t is not None]
    return min(times) if times else None


def expires_later(new_url: str, old_url: str) -> bool:
    """True when both links carry a known expiry and `new_url`'s comes later (a fresher signature)."""
    new, old = link_expiry(new_url), link_expiry(old_url)
    return new is not None and old is not None and new > old


def is_expired(url: str, now: datetime | None = None, *, grace_s: float = 0.0) -> bool:
    """True when `url` carries an expiry that is at least `grace_s` seconds in the past at `now`.

    `now` must be timezone-aware (default: the current time). A link without a known expiry is
    never expired. Use `grace_s` for clock skew against the CDN when refusing before a request.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("is_expired(now=...) needs a timezone-aware datetime, e.g. datetime.now(UTC)")
    expiry = link_expiry(url)
    if expiry is None:
        return False
    return expiry + timedelta(seconds=grace_s) <= (now or datetime.now(UTC))


def _on(host: str, suffixes: tuple[str, ...]) -> bool:
    return any(host == s or host.endswith("." + s) for s in suffixes)


def _from_epoch(seconds: int) -> datetime | None:
    if not _MIN_EPOCH_S <= seconds <= _MAX_EPOCH_S:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _epoch(value: str | None) -> datetime | None:
    if not value or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return _from_epoch(int(value))


def _hex_epoch(value: str | None) -> datetime | None:
    if not value or len(value) > 12:
        return None
    try:
        return _from_epoch(int(value, 16))
    except ValueError:
        return None


def _dated(date: str | None, expires: str | None) -> datetime | None:
    """SigV4-style: a signing time `YYYYMMDDTHHMMSSZ` plus a lifetime in seconds."""
    if not date or not expires or not expires.isascii() or not expires.isdigit():
        return None
    try:
        signed = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    if not _MIN_EPOCH_S <= signed.timestamp() <= _MAX_EPOCH_S:
        return None  # also keeps year 9999 + a lifetime from overflowing datetime
    # Signers refuse longer lifetimes, so a link is valid for at most the maximum whatever it says.
    lifetime_s = min(int(expires), _MAX_SIGV4_EXPIRES_S) if len(expires) <= 9 else _MAX_SIGV4_EXPIRES_S
    return signed + timedelta(seconds=lifetime_s)


def _cloudfront_policy(value: str | None) -> datetime | None:
    """A CloudFront custom policy: URL-safe base64 JSON (with - _ ~ for + = /) holding DateLessThan."""
    if not value or len(value) > 8192:
        return None
    try:
        raw = base64.b64decode(value.translate(str.maketrans("-_~", "+=/")), validate=True)
        policy = json.loads(raw)
        times = [int(statement["Condition"]["DateLessThan"]["AWS:EpochTime"])
                 for statement in policy["Statement"]]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        return None
    found = [t for t in (_from_epoch(s) for s in times) if t is not None]
    return min(found) if found else None
