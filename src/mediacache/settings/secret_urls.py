"""URLs that carry passwords (DATABASE_URL, REDIS_URL): masked for messages, their syntax checked.

Every configuration error about such a URL goes through mask_url, and no library error text
about it is ever shown: those messages quote the parts they failed on, passwords included.
"""

from __future__ import annotations

import re

from mediacache.errors import ConfigError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")

# What a password may not hold unescaped: each ends the userinfo (or the authority) early for
# some parser, which then reads the rest of the password as a host, port or path, and prints it.
_USERINFO_BREAKERS = {"@": "%40", "/": "%2F", "?": "%3F", "#": "%23", "[": "%5B", "]": "%5D"}


def mask_url(url: str) -> str:
    """`url` as a message may show it: everything before the last `@` after `scheme://` is `***`.

    The last `@`, not the first, because an unescaped `@` in a password is the common mistake. A
    value that is not `scheme://...` at all is not shown: it may be a bare password or `user:pw@host`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        return f"<a value of {len(url)} characters, not shown>"
    at = rest.rfind("@")
    return url if at < 0 else f"{scheme}://***@{rest[at + 1:]}"


def check_url_syntax(name: str, url: str, example: str) -> None:
    """Raises ConfigError (the URL masked) unless `url` splits the same way for every parser.

    `name` is the variable and `example` a well-formed URL for the message.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        raise ConfigError(f"{name}={mask_url(url)} is not a URL; write it like {example}")
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        for char, escaped in _USERINFO_BREAKERS.items():
            if char in userinfo:
                raise ConfigError(
                    f"{name}={mask_url(url)}: its user name or password holds an unescaped {char!r}; "
                    f"percent-encode it as {escaped} (like {example})")
    authority = rest[at + 1:]
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    if authority.startswith("["):  # [IPv6]:port
        _bracket, _, after = authority.partition("]")
        port = after.removeprefix(":") if after.startswith(":") else None
    else:
        port = authority.rpartition(":")[2] if ":" in authority else None
    if port is not None and port != "" and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"{name}={mask_url(url)} has the port {port[:20]!r}, which is not a number "
                          f"from 1 to 65535; write it like {example}")
