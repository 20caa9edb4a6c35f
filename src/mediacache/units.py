"""Sizes as people read them: one formatter shared by messages, the CLI and the dashboard."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    """`629145600` -> `600.0 MiB` (binary units; whole bytes below 1 KiB)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def bytes_and_human(n: int) -> str:
    """`629145600` -> `629145600 bytes (600.0 MiB)`: exact for logs, readable for people."""
    return f"{n} bytes ({human_bytes(n)})"
