"""HTTP Range header parsing (RFC 9110 section 14) for one byte range; no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediacache.errors import RangeNotSatisfiableError

# ASCII digits only: `\d` also matches other scripts' digits, which int() would accept.
_SPEC = re.compile(r"^\s*([0-9]*)\s*-\s*([0-9]*)\s*$")
# Python refuses to convert numbers of more than 4,300 digits (a ValueError, so a 500); any
# number this long is past every object, so it is read as "beyond the end" without converting it.
_MAX_DIGITS = 18
_BEYOND_ANY_OBJECT = 10**_MAX_DIGITS


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_OBJECT if len(digits) > _MAX_DIGITS else int(digits)


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send, or None to send the whole body (no header, or one we ignore).

    A header that is not a `bytes=` range, is malformed, or asks for several ranges is ignored, as
    RFC 9110 allows: the whole body with 200 is always a correct answer. A well-formed range
    outside the body raises RangeNotSatisfiableError.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.match(spec)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        # A suffix range: the last N bytes.
        suffix = _number(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError
        return ByteRange(max(0, size - suffix), size)
    start = _number(first)
    if last and _number(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise RangeNotSatisfiableError
    end = size if not last else min(_number(last) + 1, size)
    return ByteRange(start, end)
