"""Whether a listen address is beyond loopback, and the refusal to serve such an address anonymously."""

from __future__ import annotations

import ipaddress

from mediacache.errors import ConfigError
from mediacache.fetching.netguard import is_localhost_name
from mediacache.settings import Settings


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost names; anything else (0.0.0.0, a LAN address) is exposed."""
    if is_localhost_name(host):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(settings: Settings, host: str, *, allow_anonymous: bool) -> None:
    """Refuses to listen beyond loopback with no MEDIACACHE_API_TOKEN, unless `allow_anonymous`."""
    if is_loopback(host) or settings.api_token is not None or allow_anonymous:
        return
    raise ConfigError(
        f"--host {host} listens beyond loopback, but MEDIACACHE_API_TOKEN is not set, so anyone who can reach "
        "it could queue, delete and read; set one (e.g. MEDIACACHE_API_TOKEN=$(openssl rand -hex 32)), or pass "
        "--allow-anonymous if the network in front of it is trusted")
