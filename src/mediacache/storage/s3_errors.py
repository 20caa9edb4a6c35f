"""What an obstore error from S3 means: bad credentials, a missing bucket, an unreachable endpoint."""

from __future__ import annotations

import re
from typing import Literal

from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

Problem = Literal["credentials", "bucket", "unreachable", "other"]

_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
_STATUS = re.compile(r"status code: (\d{3})")
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                     "ExpiredToken", "AuthorizationHeaderMalformed"}


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an obstore error reports, if any."""
    found = _STATUS.search(str(exc))
    return int(found.group(1)) if found else None


def s3_code(exc: BaseException) -> str | None:
    match = _CODE.search(str(exc))
    return match.group(1) if match else None


def classify(exc: BaseException) -> Problem:
    """What an obstore error says about the store: bad credentials, no bucket, no connection, or other."""
    text = str(exc)
    code = s3_code(exc)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or code in _CREDENTIAL_CODES:
        return "credentials"
    if code == "NoSuchBucket" or isinstance(exc, FileNotFoundError):
        # A PUT answered 404 can only mean that the bucket is missing.
        return "bucket"
    if "error sending request" in text or "tcp connect error" in text or "dns error" in text or "timed out" in text:
        return "unreachable"
    return "other"


def network_cause(exc: BaseException) -> str:
    text = str(exc)
    for needle, cause in (("dns error", "the host name does not resolve"),
                          ("Connection refused", "connection refused"),
                          ("timed out", "timed out"), ("TimedOut", "timed out"),
                          ("Network is unreachable", "network unreachable"),
                          ("certificate", "TLS certificate problem")):
        if needle in text:
            return cause
    return "no connection"


def summary(exc: BaseException) -> str:
    """The gist of an obstore error: HTTP status, S3 error code and message; never its debug dump."""
    head = str(exc).split("\n\nDebug source:", 1)[0]
    code = s3_code(exc)
    if code is not None:
        status = _STATUS.search(head)
        message = _MESSAGE.search(head)
        return (f"HTTP {status.group(1)} " if status else "") + code + (f": {message.group(1)}" if message else "")
    if classify(exc) == "unreachable":
        return f"{network_cause(exc)} ({head.rsplit(' - ', 1)[-1].strip()[:200]})"
    first_line = head.split("\n", 1)[0].strip()
    return first_line if len(first_line) <= 400 else first_line[:400] + "..."
