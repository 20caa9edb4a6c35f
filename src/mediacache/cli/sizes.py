"""Byte sizes as people write them on a command line: 50GiB, 500MB, 1.5G, 1024."""

from __future__ import annotations

import re

# Decimal units are powers of 1000 and binary ones of 1024, as their names say; a bare letter
# (50G) is read as binary, as `du` and `ls -h` print it.
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in `text`; raises ValueError naming the value and the accepted forms."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write bytes (1024) or a number with a unit: "
                         "500MB, 50GiB, 1.5TB (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)")
    return int(float(match.group(1)) * _UNITS[unit])
