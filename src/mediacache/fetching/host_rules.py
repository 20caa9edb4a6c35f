"""MEDIACACHE_HOST_LIMITS: per-host rate and concurrency rules, and which rule applies to a host.

Syntax: comma-separated rules `pattern=RATE:CONCURRENCY`, for example

    *.tiktokcdn.com=20/s:8,*.cdninstagram.com=5/s:4,*=50/s:32

- `RATE` is `N/s` or `N/m` (requests per second or per minute; N may be a decimal), or
  `unlimited` (or `0`) for no rate limit.
- `CONCURRENCY` is the number of downloads from one host at once, or `unlimited` (or `0`).
- `pattern=unlimited` is short for `pattern=unlimited:unlimited`.
- Patterns: `*` (every host), `*.example.com` (example.com itself and every subdomain, at any
  depth), or an exact host `cdn.example.com` (an IP address is an exact host too).

Which rule applies: the most specific pattern that matches, whatever the order of the rules:
an exact host beats every wildcard; between two wildcards the one with more labels wins
(`*.video.example.com` beats `*.example.com`); `*` applies only when nothing else matches. When `*`
is missing, the built-in default unlimited:64 (no rate limit, 64 at a time) stands in for it. A
pattern given twice is an error, so
that no rule is ever silently ignored.

Why `*.example.com` matches example.com too: the limits are politeness towards an operator, and
the apex and its subdomains are the same operator's servers. A different limit for the apex is one
exact rule away (`example.com=2/s:1`), which beats the wildcard.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

ENV_NAME = "MEDIACACHE_HOST_LIMITS"
EXPECTED_FORM = "pattern=RATE/s:CONCURRENCY"
_EXAMPLE = "*.cdninstagram.com=5/s:4"
_UNLIMITED = frozenset({"unlimited", "0"})
# A label as it appears in a host name (IDNA-encoded; underscores occur in real CDN names).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_RATE = re.compile(r"^(?P<n>\d+(?:\.\d+)?|\.\d+)\s*/\s*(?P<unit>s|m)$")
_PER_UNIT_S = {"s": 1.0, "m": 60.0}
_CACHE_MAX_HOSTS = 4096
# The burst is a tenth of a second's worth of requests (at least one): enough to absorb jitter
# between workers, small enough that no one-second window sees more than RATE * 1.1 requests.
_BURST_WINDOW_S = 0.1


class HostRuleError(ValueError):
    """A rule of MEDIACACHE_HOST_LIMITS that cannot be parsed; `rule` is its text."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(
            f"{ENV_NAME} rule {rule!r} {reason}. Write each rule as {EXPECTED_FORM}, for example "
            f"{_EXAMPLE} (RATE is N/s, N/m or unlimited; CONCURRENCY is N or unlimited)")
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HostRule:
    """The limits of one host pattern; None means no limit."""

    pattern: str
    rate_per_s: float | None
    concurrency: int | None
    burst: int = 1

    @classmethod
    def of(cls, pattern: str, rate_per_s: float | None, concurrency: int | None) -> HostRule:
        """A rule with the default burst for its rate."""
        burst = max(1, math.ceil(rate_per_s * _BURST_WINDOW_S)) if rate_per_s else 1
        return cls(pattern, rate_per_s, concurrency, burst)

    @property
    def unlimited(self) -> bool:
        return self.rate_per_s is None and self.concurrency is None

    @property
    def limits_text(self) -> str:
        """The limits in the variable's own syntax, e.g. `20/s:8`."""
        if self.unlimited:
            return "unlimited"
        if self.rate_per_s is None:
            rate = "unlimited"
        elif self.rate_per_s < 1 and _whole(self.rate_per_s * 60):
            rate = f"{round(self.rate_per_s * 60)}/m"
        else:
            rate = f"{self.rate_per_s:g}/s"
        return f"{rate}:{'unlimited' if self.concurrency is None else self.concurrency}"

    def __str__(self) -> str:
        return f"{self.pattern}={self.limits_text}"


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-9


# Without a rule of the user's, a host gets no rate limit and 64 downloads at a time: politeness
# by concurrency, Retry-After and the breaker, never a cap that would slow a fast CDN down.
DEFAULT_RULE = HostRule.of("*", None, 64)


def normalize_host(host: str) -> str:
    """The host as rules and limiter keys see it: lower case, IDNA, no trailing dot or brackets."""
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if ":" in name:
        try:
            return str(ipaddress.IPv6Address(name))  # one spelling per address
        except ValueError:
            return name
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name


class HostRules:
    """The parsed rules; `rule_for(host)` answers which one applies."""

    def __init__(self, rules: Iterable[HostRule]) -> None:
        self.exact: dict[str, HostRule] = {}
        self.wildcards: dict[str, HostRule] = {}  # keyed by the suffix after `*.`
        default: HostRule | None = None
        for rule in rules:
            if rule.pattern == "*":
                if default is not None:
                    raise HostRuleError(str(rule), "repeats the pattern '*'")
                default = rule
                continue
            wildcard = rule.pattern.startswith("*.")
            table, name = (self.wildcards, rule.pattern[2:]) if wildcard else (self.exact, rule.pattern)
            if name in table:
                raise HostRuleError(str(rule), f"repeats the pattern {rule.pattern!r}")
            table[name] = rule
        self.default = default or DEFAULT_RULE
        # Hosts repeat a lot (a few CDNs serve most media): answers are remembered, boundedly.
        self._cache: dict[str, HostRule] = {}

    @classmethod
    def parse(cls, text: str | None) -> HostRules:
        """Parses MEDIACACHE_HOST_LIMITS; an empty or missing value gives the default for every host."""
        return cls(parse_rule(part) for part in (text or "").split(",") if part.strip())

    @property
    def rules(self) -> list[HostRule]:
        """Every rule, most specific first, the default last."""
        exact = sorted(self.exact.values(), key=lambda r: r.pattern)
        wild = sorted(self.wildcards.values(), key=lambda r: (-r.pattern.count("."), r.pattern))
        return [*exact, *wild, self.default]

    def rule_for(self, host: str) -> HostRule:
        """The most specific rule matching `host`."""
        found = self._cache.get(host)
        if found is None:
            if len(self._cache) >= _CACHE_MAX_HOSTS:
                self._cache.clear()
            found = self._cache[host] = self._match(normalize_host(host))
        return found

    def _match(self, name: str) -> HostRule:
        found = self.exact.get(name)
        if found is not None:
            return found
        # Longest suffix first: `a.b.example.com` tries a.b.example.com, b.example.com, example.com, com.
        labels = name.split(".")
        for start in range(len(labels)):
            found = self.wildcards.get(".".join(labels[start:]))
            if found is not None:
                return found
        return self.default

    def __str__(self) -> str:
        return ",".join(str(rule) for rule in self.rules)

    def __repr__(self) -> str:
        return f"HostRules({str(self)!r})"


def parse_host_limits(text: str | None) -> HostRules:
    """MEDIACACHE_HOST_LIMITS as HostRules; raises HostRuleError naming the first bad rule."""
    return HostRules.parse(text)


def parse_rule(text: str) -> HostRule:
    """One `pattern=RATE:CONCURRENCY` rule."""
    rule = text.strip()
    pattern_text, sep, limits = rule.partition("=")
    if not sep:
        raise HostRuleError(rule, "has no '='")
    pattern = _parse_pattern(rule, pattern_text.strip())
    limits = limits.strip().lower()
    if limits == "unlimited":
        return HostRule.of(pattern, None, None)
    rate_text, sep, concurrency_text = limits.rpartition(":")
    if not sep:
        raise HostRuleError(rule, "has no ':' between the rate and the concurrency")
    rate_per_s = _parse_rate(rule, rate_text.strip())
    return HostRule.of(pattern, rate_per_s, _parse_concurrency(rule, concurrency_text.strip()))


def _parse_pattern(rule: str, pattern: str) -> str:
    if pattern == "*":
        return pattern
    if not pattern:
        raise HostRuleError(rule, "has an empty host pattern")
    wildcard = pattern.startswith("*.")
    name = pattern[2:] if wildcard else pattern
    try:
        name = normalize_host(name)
    except UnicodeError as exc:
        raise HostRuleError(rule, f"has a host pattern that is not a valid host name ({exc})") from exc
    if ":" in name:
        if not wildcard and _is_ipv6(name):
            return name  # an exact host
        raise HostRuleError(rule, f"has the host pattern {pattern!r}; a pattern names a host, without a port")
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise HostRuleError(
            rule, f"has the host pattern {pattern!r}; use *, *.example.com or an exact host such as cdn.example.com")
    return f"*.{name}" if wildcard else name


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def _parse_rate(rule: str, text: str) -> float | None:
    if text in _UNLIMITED:
        return None
    match = _RATE.match(text)
    if match is None:
        raise HostRuleError(rule, f"has the rate {text!r}; give it as N/s, N/m or unlimited")
    per_s = float(match["n"]) / _PER_UNIT_S[match["unit"]]
    if per_s == 0:
        # `0/s` reads as "never"; only a bare 0 means "no limit", so make the writer say which.
        raise HostRuleError(rule, f"has the rate {text!r}; write unlimited (or 0) for no rate limit")
    return per_s


def _parse_concurrency(rule: str, text: str) -> int | None:
    if text in _UNLIMITED:
        return None
    if not text.isdigit() or not text.isascii():
        raise HostRuleError(rule, f"has the concurrency {text!r}; give it as a whole number or unlimited")
    return int(text) or None
