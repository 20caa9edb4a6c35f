"""Content sniffing: which media type the first bytes of a download really are, and whether it is allowed."""

from __future__ import annotations

import re

import filetype
import puremagic
from filetype.types import image as filetype_image

# Read this many bytes of a body before deciding. Every signature used here sits in the first
# 64 bytes except an SVG's root element, which can follow a long XML prologue and comments.
SNIFF_HEAD_BYTES = 4096
# Below this, signatures are cut off and puremagic guesses from fragments ("RIFF" alone reads as
# AVI, a bare EBML header as WebM), so a shorter head is never called media. The smallest real
# media files (a 1x1 GIF is 35 bytes) are longer.
MIN_SNIFF_BYTES = 32

# Bytes that never occur in text (NUL and the C0 controls other than \t \n \f \r, plus DEL).
# Every binary media format has some of them in its first bytes, while HTML, JSON, XML and plain
# text (the usual error pages) have none, so text is ruled out before any signature is consulted.
_BINARY_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_TEXT_PROBE_BYTES = 512

# puremagic's MIME spellings -> the one we store. Types outside this table are not cached, even when
# puremagic knows them: its many two- and three-byte signatures for obscure formats would otherwise
# let arbitrary binary data in as "media".
_CANONICAL = {
    "image/jpeg": "image/jpeg", "image/png": "image/png", "image/gif": "image/gif",
    "image/webp": "image/webp", "image/avif": "image/avif", "image/heic": "image/heic",
    "image/heif": "image/heif", "image/tiff": "image/tiff",
    "image/bmp": "image/bmp", "image/x-ms-bmp": "image/bmp",
    "image/x-icon": "image/x-icon", "image/vnd.microsoft.icon": "image/x-icon",
    "video/mp4": "video/mp4", "video/quicktime": "video/quicktime", "video/webm": "video/webm",
    "video/x-matroska": "video/x-matroska", "video/avi": "video/x-msvideo", "video/x-msvideo": "video/x-msvideo",
    "video/x-flv": "video/x-flv", "video/3gpp": "video/3gpp", "video/3gpp2": "video/3gpp2",
    "video/mpeg": "video/mpeg",
    "audio/mpeg": "audio/mpeg", "audio/mp4": "audio/mp4", "audio/x-m4b": "audio/mp4", "audio/aac": "audio/aac",
    "audio/flac": "audio/flac", "audio/wav": "audio/wav", "audio/wave": "audio/wav", "audio/x-wav": "audio/wav",
    "audio/aiff": "audio/aiff", "audio/x-aiff": "audio/aiff",
    # Ogg and EBML are containers; _refine() decides audio or video from the codec or doctype.
    "application/ogg": "audio/ogg", "audio/ogg": "audio/ogg", "video/ogg": "video/ogg",
    "audio/x-vorbis+ogg": "audio/ogg", "audio/x-opus+ogg": "audio/ogg", "audio/x-flac+ogg": "audio/ogg",
    "audio/x-speex+ogg": "audio/ogg", "video/x-theora+ogg": "video/ogg",
    "application/x-matroska": "video/x-matroska", "audio/x-matroska": "video/x-matroska",
}

# ISO base media files (mp4, mov, m4a, 3gp, heic, avif) all start with an `ftyp` box, and only its
# brands say which one a file is. puremagic keys on a few brand spellings (it misses dash, iso5,
# mif1, avc1 ...) and ranks a plain 28-byte `ftyp` box as video/mp4 ahead of its own avif match, so
# for these files the brand table below decides. Major brand first, then the compatible brands.
_FTYP_BRANDS = {
    b"avif": "image/avif", b"avis": "image/avif",
    b"heic": "image/heic", b"heix": "image/heic", b"heim": "image/heic", b"heis": "image/heic",
    b"hevc": "image/heic", b"hevx": "image/heic",
    b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"M4P ": "audio/mp4", b"F4A ": "audio/mp4", b"F4B ": "audio/mp4",
    b"qt  ": "video/quicktime",
    b"3gp4": "video/3gpp", b"3gp5": "video/3gpp", b"3gp6": "video/3gpp", b"3gp7": "video/3gpp",
    b"3gs7": "video/3gpp", b"3ge6": "video/3gpp", b"3ge7": "video/3gpp", b"3gg6": "video/3gpp",
    b"3g2a": "video/3gpp2", b"3g2b": "video/3gpp2", b"3g2c": "video/3gpp2",
    b"isom": "video/mp4", b"iso2": "video/mp4", b"iso3": "video/mp4", b"iso4": "video/mp4",
    b"iso5": "video/mp4", b"iso6": "video/mp4", b"iso7": "video/mp4", b"iso8": "video/mp4",
    b"iso9": "video/mp4", b"mp41": "video/mp4", b"mp42": "video/mp4", b"mp71": "video/mp4",
    b"avc1": "video/mp4", b"dash": "video/mp4", b"msdh": "video/mp4", b"msix": "video/mp4",
    b"cmfc": "video/mp4", b"cmf2": "video/mp4", b"M4V ": "video/mp4", b"M4VH": "video/mp4", b"M4VP": "video/mp4",
    b"f4v ": "video/mp4", b"mmp4": "video/mp4", b"MSNV": "video/mp4", b"NDAS": "video/mp4", b"XAVC": "video/mp4",
}
# Generic HEIF/MIAF brands: the compatible brands then say avif or heic; alone they mean heif.
_HEIF_GENERIC_BRANDS = {b"mif1": "image/heif", b"msf1": "image/heif", b"miaf": "image/heif"}

# The codec id of an Ogg stream's first packet, at byte 28: video codecs, everything else is audio.
_OGG_VIDEO_CODECS = (b"\x80theora", b"fishead\x00", b"BBCD\x00", b"\x80daala")
_OGG_CODEC_END = 36

# MPEG audio frame header fields (ISO 11172-3): version 01 and layer 00 (other than ADTS AAC),
# bitrate index 1111 and sample-rate index 11 are reserved, so a header with them is not audio.
_MPEG_RESERVED_VERSION = 0b01

_SVG_PROLOGUE = re.compile(
    rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:(?:<!--.*?-->|<!DOCTYPE[^>[]*(?:\[.*?\])?\s*>)\s*)*<svg[\s>/]",
    re.DOTALL | re.IGNORECASE)


# The formats most downloads are, decided by filetype's specific matchers in under a microsecond;
# puremagic scans its whole table of ~1,400 signatures (~0.2 ms) for everything else.
_COMMON_IMAGES = [filetype_image.Jpeg(), filetype_image.Png(), filetype_image.Gif(), filetype_image.Webp()]

# Every type sniff_content_type can return.
MEDIA_TYPES: frozenset[str] = frozenset({*_CANONICAL.values(), *_FTYP_BRANDS.values(),
                                         *_HEIF_GENERIC_BRANDS.values(), "image/svg+xml"})


def sniff_content_type(head: bytes) -> str | None:
    """The media MIME type of a body that starts with `head` (give SNIFF_HEAD_BYTES), or None.

    `head` is the first SNIFF_HEAD_BYTES of the body, or all of it when the body is shorter; a head
    under MIN_SNIFF_BYTES gives None. None means "not a recognised image, video or audio format":
    HTML error pages, JSON, XML, plain text, archives and unknown binaries all give None.
    filetype decides JPEG, PNG, GIF and WebP; puremagic the rest, except where its table falls short
    (ISO-BMFF brands, MPEG audio frame headers, SVG, the contents of Ogg, Matroska and RIFF containers).
    """
    if len(head) < MIN_SNIFF_BYTES:
        return None
    probe = head[:_TEXT_PROBE_BYTES]
    if len(probe.translate(None, _BINARY_BYTES)) == len(probe):
        return "image/svg+xml" if _SVG_PROLOGUE.match(head) else None
    if head.startswith(b"\xff\xfe"):
        # The UTF-16LE byte order mark: text, though it would pass for an MPEG layer I frame header.
        return None
    if head[4:8] == b"ftyp":
        return _ftyp_type(head)
    common = filetype.match(head, matchers=_COMMON_IMAGES)
    if common is not None:
        return str(common.mime)
    if head[0] == 0xFF and head[1:2] and head[1] & 0xE0 == 0xE0:
        return _mpeg_audio_type(head)
    return _refine(_puremagic_type(head), head)


def is_allowed(content_type: str | None, allowed: list[str]) -> bool:
    """Whether `content_type` matches one of the `allowed` patterns (`image/png`, `image/*`, `*/*`).

    SVG is only allowed when listed by name: it can carry scripts, and served from our storage
    origin a script-bearing SVG is a stored XSS, so no wildcard ever lets it in.
    """
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    if "/" not in mime:
        return False
    major = mime.split("/", 1)[0]
    for pattern in allowed:
        pattern = pattern.strip().lower()
        if pattern == mime:
            return True
        if mime == "image/svg+xml":
            continue
        if pattern in ("*", "*/*") or pattern == f"{major}/*":
            return True
    return False


def _puremagic_type(head: bytes) -> str | None:
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    best_other = 0.0
    for match in matches:  # sorted by confidence, highest first
        # Negative offsets are end-of-file signatures, meaningless on the head of a body. A bare
        # container tag says only "some RIFF/IFF file"; the form type at byte 8 says which, and
        # puremagic matches that separately.
        if match.offset < 0 or match.byte_match in _CONTAINER_TAGS:
            continue
        canonical = _CANONICAL.get(match.mime_type)
        if canonical is None:
            if match.mime_type:
                best_other = max(best_other, match.confidence)
            continue
        # A more confident non-media match (a zip, a pdf) wins over a weak media one.
        return canonical if match.confidence >= best_other else None
    return None


def _refine(mime: str | None, head: bytes) -> str | None:
    """Container types that puremagic names by container, resolved by what they contain."""
    if mime in ("audio/ogg", "video/ogg"):
        if len(head) < _OGG_CODEC_END:
            return None  # the codec id is cut off: audio or video cannot be told yet
        return "video/ogg" if head[28:40].startswith(_OGG_VIDEO_CODECS) else "audio/ogg"
    if mime in ("video/webm", "video/x-matroska"):
        # The EBML header's DocType element (id 0x4282) says webm or matroska.
        doctype = re.search(rb"\x42\x82[\x80-\xff](webm|matroska)", head[:64])
        if doctype is not None:
            return "video/webm" if doctype.group(1) == b"webm" else "video/x-matroska"
        return mime
    if mime == "image/bmp":
        # "BM" is only two bytes: also require the zero reserved words and a known DIB header size.
        return mime if head[6:10] == b"\0\0\0\0" and head[14:18] in _BMP_DIB_SIZES else None
    return mime


_CONTAINER_TAGS = frozenset({b"RIFF", b"FORM"})
_BMP_DIB_SIZES = {size.to_bytes(4, "little") for size in (12, 16, 40, 52, 56, 64, 108, 124)}


def _ftyp_type(head: bytes) -> str | None:
    size = int.from_bytes(head[0:4], "big")
    end = min(len(head), size if size >= 16 else 16)
    major = head[8:12]
    compatible = [head[i:i + 4] for i in range(16, end - 3, 4)]
    if major in _HEIF_GENERIC_BRANDS:
        for brand in compatible:
            if _FTYP_BRANDS.get(brand, "").startswith("image/"):
                return _FTYP_BRANDS[brand]
        return _HEIF_GENERIC_BRANDS[major]
    if major in _FTYP_BRANDS:
        return _FTYP_BRANDS[major]
    for brand in compatible:
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
    return _refine(_puremagic_type(head), head)


def _mpeg_audio_type(head: bytes) -> str | None:
    """MP3 (any MPEG version and layer) or ADTS AAC from the first frame header; puremagic knows only
    some of the sixteen sync patterns (it misses MPEG-2 layer III, common in low-bitrate speech)."""
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    if layer == 0:
        # ADTS: MPEG-2/4 AAC. Sampling index 13-15 is reserved.
        return "audio/aac" if (head[1] & 0xF6) == 0xF0 and (head[2] >> 2) & 0xF < 13 else None
    bitrate_index = head[2] >> 4
    sample_rate_index = (head[2] >> 2) & 0b11
    if version == _MPEG_RESERVED_VERSION or bitrate_index == 0xF or sample_rate_index == 0b11:
        return None
    return "audio/mpeg"
