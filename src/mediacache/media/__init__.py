"""Media processing: metadata, limits, placeholders and WebP derivatives, decoded in a sandbox.

    async with MediaSandbox(workers=1) as sandbox:
        report = await sandbox.analyze(path, "image/jpeg", widths=(320, 640))
"""

from mediacache.media.derive import DEFAULT_WIDTHS, plan_widths
from mediacache.media.limits import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, Limits
from mediacache.media.pipeline import analyze_file
from mediacache.media.report import Derivative, MediaRefused, MediaReport, ReportKind
from mediacache.media.sandbox import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_TIMEOUT_S,
    MediaSandbox,
    SandboxClosedError,
    SandboxError,
    SandboxStartError,
)

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MEMORY_BYTES",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WIDTHS",
    "Derivative",
    "Limits",
    "MediaRefused",
    "MediaReport",
    "MediaSandbox",
    "ReportKind",
    "SandboxClosedError",
    "SandboxError",
    "SandboxStartError",
    "analyze_file",
    "plan_widths",
]
