"""The source key: a URL without the query parameters that only sign or expire it, so one media file is one asset."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Parameters that change with every signing of the same file. Matched case-insensitively; a `*`
# stands for any run of characters. Only parameters that never select different content belong
# here: dropping one that does would serve one file for another.
DEFAULT_IGNORED_PARAMS: tuple[str, ...] = (
    # TikTok CDNs
    "x-expires", "x-signature", "x-orig-*", "expire", "signature", "policy",
    # Instagram and Facebook CDNs
    "oe", "oh", "_nc_*",
    # AWS SigV4 (S3 presigned links) and SigV2
    "x-amz-*", "awsaccesskeyid",
    # CloudFront signed links
    "expires", "key-pair-id",
    # Google Cloud Storage V4 and V2
    "x-goog-*", "googleaccessid",
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class SourceKeyRules:
    """Which query parameters a source key leaves out; built once from the settings."""

    __slots__ = ("_exact", "_wild", "patterns")

    def __init__(self, patterns: Iterable[str] = DEFAULT_IGNORED_PARAMS) -> None:
        self.patterns = tuple(p.lower() for p in patterns)
        self._exact = frozenset(p for p in self.patterns if "*" not in p)
        regex = "|".join(fnmatch.translate(p) for p in self.patterns if "*" in p)
        self._wild = re.compile(regex) if regex else None

    @classmethod
    def parse(cls, spec: str | None) -> SourceKeyRules:
        """`MEDIACACHE_DEDUP_IGNORE_PARAMS`: comma-separated names (`*` as wildcard) replacing the
        defaults; a leading `+` adds them to the defaults instead. Empty or unset: the defaults."""
        if spec is None or not spec.strip():
            return cls()
        text = spec.strip()
        extend = text.startswith("+")
        names = tuple(n.strip() for n in text.lstrip("+").split(",") if n.strip())
        return cls((DEFAULT_IGNORED_PARAMS + names) if extend else names)

    def ignores(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self._exact or (self._wild is not None and self._wild.match(lowered) is not None)


def source_key(url: str, rules: SourceKeyRules) -> str:
    """`url` normalized: scheme and host in lower case, default port and fragment dropped, the
    signing parameters of `rules` removed and the others sorted by name (their order never selects
    content). Two links to the same file signed at different times get the same key."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not rules.ignores(k)]
    kept.sort(key=lambda kv: kv[0])
    return urlunsplit((scheme, netloc, parts.path or "/", urlencode(kept, doseq=False), ""))


def source_keys(urls: Iterable[str], rules: SourceKeyRules) -> list[str]:
    return [source_key(u, rules) for u in urls]
