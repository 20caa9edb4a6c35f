"""Content sniffing: media formats are recognised from their first bytes; text, archives and junk are not."""

from __future__ import annotations

import io
import random
import statistics
import struct
import time
import wave
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacache.fetching.sniff import MEDIA_TYPES, MIN_SNIFF_BYTES, SNIFF_HEAD_BYTES, is_allowed, sniff_content_type
from mediacache.settings import Settings
from tests.support.origin import body

NOISE = random.Random(7).randbytes(8192)  # stands in for the compressed payload after each header


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0\0\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * 400)
    return buffer.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    payload = major + b"\0\0\x02\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(payload)) + b"ftyp" + payload + b"\0\0\0\x08free" + NOISE


def _ebml(doctype: bytes) -> bytes:
    element = b"\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82" \
        + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(element)]) + element + NOISE


GIF_1X1 = bytes.fromhex("47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b")

MEDIA = {
    "jpeg-jfif": (bytes.fromhex("FFD8FFE000104A46494600010100000100010000") + NOISE, "image/jpeg"),
    "jpeg-exif": (bytes.fromhex("FFD8FFE1") + b"\x00\x10Exif\x00\x00MM\x00*" + NOISE, "image/jpeg"),
    "jpeg-dqt": (bytes.fromhex("FFD8FFDB0043") + NOISE, "image/jpeg"),
    "origin-jpeg": (body("media", 1, 4096), "image/jpeg"),
    "png": (_png(), "image/png"),
    "gif89a-1x1": (GIF_1X1, "image/gif"),
    "gif87a": (b"GIF87a\x10\x00\x10\x00\x80\x00\x00" + NOISE, "image/gif"),
    "webp-lossy": (b"RIFF\x24\x10\x00\x00WEBPVP8 \x18\x10\x00\x00" + NOISE, "image/webp"),
    "webp-lossless": (b"RIFF\x24\x10\x00\x00WEBPVP8L\x18\x10\x00\x00" + NOISE, "image/webp"),
    "webp-extended": (b"RIFF\x24\x10\x00\x00WEBPVP8X\x0a\x00\x00\x00" + NOISE, "image/webp"),
    "avif": (_ftyp(b"avif", b"avif", b"mif1", b"miaf", b"MA1B"), "image/avif"),
    "avif-sequence": (_ftyp(b"avis", b"avis", b"msf1", b"miaf"), "image/avif"),
    "avif-via-mif1": (_ftyp(b"mif1", b"mif1", b"avif"), "image/avif"),
    "heic": (_ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
    "heic-via-mif1": (_ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
    "heif-generic": (_ftyp(b"mif1", b"mif1"), "image/heif"),
    "bmp": (b"BM" + struct.pack("<IHHI", 1000, 0, 0, 54) + struct.pack("<IiiHH", 40, 1, 1, 1, 24) + NOISE,
            "image/bmp"),
    "ico": (b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00\x68\x04\x00\x00\x16\x00\x00\x00" + NOISE,
            "image/x-icon"),
    "tiff": (b"II*\x00\x08\x00\x00\x00" + NOISE, "image/tiff"),
    "origin-mp4": (body("big", 1, 4096), "video/mp4"),
    "mp4-isom": (_ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    "mp4-mp42": (_ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
    "mp4-dash": (_ftyp(b"dash", b"iso6", b"mp41"), "video/mp4"),
    "mp4-iso5": (_ftyp(b"iso5", b"iso5", b"dash"), "video/mp4"),
    "mp4-avc1": (_ftyp(b"avc1", b"isom"), "video/mp4"),
    "mp4-m4v": (_ftyp(b"M4V ", b"M4V ", b"M4A ", b"mp42", b"isom"), "video/mp4"),
    "mp4-unknown-major": (_ftyp(b"zzzz", b"zzzz", b"isom"), "video/mp4"),
    "3gp": (_ftyp(b"3gp5", b"3gp5", b"isom"), "video/3gpp"),
    "quicktime": (_ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    "quicktime-no-ftyp": (b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat" + NOISE, "video/quicktime"),
    "m4a": (_ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
    "webm": (_ebml(b"webm"), "video/webm"),
    "matroska": (_ebml(b"matroska"), "video/x-matroska"),
    "avi": (b"RIFF\x24\x10\x00\x00AVI LIST\x00\x01\x00\x00hdrlavih" + NOISE, "video/x-msvideo"),
    "flv": (b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + NOISE, "video/x-flv"),
    "mpeg-ps": (b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01" + NOISE, "video/mpeg"),
    "ogg-theora": (b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora" + NOISE, "video/ogg"),
    "mp3-id3v2.4": (b"ID3\x04\x00\x00\x00\x00\x00\x0aTIT2\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + NOISE, "audio/mpeg"),
    "mp3-id3v2.3": (b"ID3\x03\x00\x00\x00\x00\x02\x01TALB" + NOISE, "audio/mpeg"),
    "mp3-mpeg1-l3": (b"\xff\xfb\x90\x64" + NOISE, "audio/mpeg"),
    "mp3-mpeg1-l3-crc": (b"\xff\xfa\x90\x64" + NOISE, "audio/mpeg"),
    "mp3-mpeg2-l3": (b"\xff\xf3\x48\xc4" + NOISE, "audio/mpeg"),
    "mp3-mpeg25-l3": (b"\xff\xe3\x18\xc4" + NOISE, "audio/mpeg"),
    "mp2-mpeg1-l2": (b"\xff\xfd\x94\x04" + NOISE, "audio/mpeg"),
    "aac-adts-mpeg4": (b"\xff\xf1\x50\x80\x02\x1f\xfc" + NOISE, "audio/aac"),
    "aac-adts-mpeg2": (b"\xff\xf9\x50\x80\x02\x1f\xfc" + NOISE, "audio/aac"),
    "ogg-vorbis": (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis" + NOISE, "audio/ogg"),
    "ogg-opus": (b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead" + NOISE, "audio/ogg"),
    "flac": (b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00" + NOISE, "audio/flac"),
    "wav": (_wav(), "audio/wav"),
    "aiff": (b"FORM\x00\x00\x10\x00AIFFCOMM\x00\x00\x00\x12" + NOISE, "audio/aiff"),
    "svg": (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1"/>',
            "image/svg+xml"),
    "svg-bare": (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"></svg>', "image/svg+xml"),
    "svg-prologue": (b'\xef\xbb\xbf  <?xml version="1.0"?>\n<!-- Generator: Adobe Illustrator 27.0 -->\n'
                     b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
                     b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [ <!ENTITY ns "x"> ]>\n'
                     b'<SVG version="1.1" xmlns="http://www.w3.org/2000/svg"></SVG>', "image/svg+xml"),
}

NOT_MEDIA = {
    "html": b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>",
    "html-bom": b"\xef\xbb\xbf\n\n  <!doctype HTML>\n<html lang=en><body>" + b"x" * 5000,
    "html-error-page": b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403</h1>"
                       b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    "html-with-svg": b"<html><body><svg xmlns='http://www.w3.org/2000/svg'></svg></body></html>",
    "xhtml": b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body/></html>',
    "json": b'{"status_code": 10204, "status_msg": "url expired", "data": null}',
    "json-array": b'[{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}]',
    "xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           b"<Message>Request has expired</Message></Error>",
    "rss": b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title></channel></rss>',
    "text": b"Access denied. Your request has been blocked by the firewall.\n",
    "text-looks-like-bmp": b"BMW M3 for sale, 2004, low miles, call 555-0100 after six pm please",
    "text-looks-like-id3": b"ID3 tags are metadata containers used in MP3 files, see id3.org for details",
    "text-looks-like-gif": b"GIF89a is the name of a file format from 1989; this is just a sentence.",
    "text-utf8": "Привет, мир! Это обычный текст, а не картинка. 你好世界".encode(),
    "utf16-json": '{"error": "expired", "code": 403, "detail": "gone"}'.encode("utf-16"),
    "csv": b"id,url,width,height\n1,https://example.com/a.jpg,100,200\n2,https://example.com/b.jpg,1,2\n",
    "javascript": b"(function(){var a=document.createElement('script');a.src='//x.js';})();\n" * 3,
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + NOISE,
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + NOISE,
    "gzip": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + NOISE,
    "elf": b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + NOISE,
    "random": NOISE,
    "zeros": b"\x00" * 4096,
    "bmp-bad-header": b"BM" + b"\xff" * 30 + NOISE,
    "mpeg-sync-reserved-bitrate": b"\xff\xfb\xf0\x64" + NOISE,
    "mpeg-sync-reserved-version": b"\xff\xeb\x90\x64" + NOISE,
    "riff-unknown": b"RIFF\x24\x10\x00\x00ABCDabcd" + NOISE,
    "iff-unknown": b"FORM\x00\x00\x10\x00ABCDabcd" + NOISE,
    "ftyp-unknown-brands": b"\x00\x00\x00\x14ftypzzzz\x00\x00\x00\x00yyyy" + NOISE,
    "empty": b"",
    "one-byte": b"\xff",
    "short-jpeg": bytes.fromhex("FFD8FFE0"),
    "short-riff": b"RIFF\x24\x00\x00\x00WEBP",
}


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_media_is_recognised(name: str) -> None:
    data, expected = MEDIA[name]
    assert sniff_content_type(data[:SNIFF_HEAD_BYTES]) == expected


@pytest.mark.parametrize("name", sorted(NOT_MEDIA))
def test_text_archives_and_junk_are_not_media(name: str) -> None:
    assert sniff_content_type(NOT_MEDIA[name][:SNIFF_HEAD_BYTES]) is None


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_a_cut_off_head_never_gives_a_wrong_type(name: str) -> None:
    # puremagic guesses from fragments on short buffers ("RIFF" reads as AVI): every prefix must
    # give either nothing or the right answer, and the right one once the deciding bytes are in.
    data, expected = MEDIA[name]
    decisive = MIN_SNIFF_BYTES  # from here on, the answer must be right
    if expected == "image/svg+xml":
        decisive = data.lower().index(b"<svg") + len(b"<svg ")
    elif data.startswith(b"OggS"):
        decisive = 36  # the codec id (audio or video) ends there
    for length in range(1, min(len(data), 300) + 1):
        found = sniff_content_type(data[:length])
        if length < MIN_SNIFF_BYTES:
            assert found is None, (length, found)
        elif length < decisive:
            assert found in (None, expected), (length, found)
        else:
            assert found == expected, (length, found)


@settings(max_examples=2000)
@given(st.binary(max_size=SNIFF_HEAD_BYTES))
def test_any_bytes_give_a_known_type_or_none(data: bytes) -> None:
    found = sniff_content_type(data)
    assert found is None or found in MEDIA_TYPES


@settings(max_examples=1000)
@given(st.text(max_size=2000))
def test_text_is_never_binary_media(text: str) -> None:
    found = sniff_content_type(text.encode())
    assert found is None or found == "image/svg+xml"


@settings(max_examples=300)
@given(st.sampled_from(sorted(MEDIA)), st.binary(min_size=0, max_size=200))
def test_what_follows_the_header_does_not_matter(name: str, tail: bytes) -> None:
    data, expected = MEDIA[name]
    if expected == "image/svg+xml":
        return  # text: binary noise after it makes it not text
    header = data[:64]
    assert sniff_content_type(header + tail) == expected


def test_sniffing_is_fast() -> None:
    heads = [data[:SNIFF_HEAD_BYTES] for data, _ in MEDIA.values()] + \
            [data[:SNIFF_HEAD_BYTES] for data in NOT_MEDIA.values()]
    timings_s = []
    for _round in range(5):
        for head in heads:
            start = time.perf_counter()
            sniff_content_type(head)
            timings_s.append(time.perf_counter() - start)
    assert statistics.median(timings_s) < 1e-3


# ---- is_allowed ------------------------------------------------------------------------------


DEFAULT = Settings(allowed_types="image/*,video/*,audio/*").allowed_type_list


@pytest.mark.parametrize(("content_type", "allowed", "expected"), [
    ("image/jpeg", DEFAULT, True),
    ("video/mp4", DEFAULT, True),
    ("audio/mpeg", DEFAULT, True),
    ("IMAGE/JPEG; charset=binary", DEFAULT, True),
    (" image/png ", DEFAULT, True),
    ("text/html", DEFAULT, False),
    ("application/json", DEFAULT, False),
    ("application/octet-stream", DEFAULT, False),
    ("image/svg+xml", DEFAULT, False),
    ("image/svg+xml", ["*/*"], False),
    ("image/svg+xml", ["*"], False),
    ("image/svg+xml", ["image/*", "image/svg+xml"], True),
    ("image/png", ["image/png"], True),
    ("image/jpeg", ["image/png"], False),
    ("image/jpeg", ["video/*"], False),
    ("image/jpeg", ["*/*"], True),
    ("image/jpeg", ["*"], True),
    ("image/jpeg", [" Image/* "], True),
    ("imagex/jpeg", ["image/*"], False),
    ("image", ["image/*", "*"], False),
    ("", DEFAULT, False),
    (None, DEFAULT, False),
    ("image/jpeg", [], False),
])
def test_is_allowed(content_type: str | None, allowed: list[str], expected: bool) -> None:
    assert is_allowed(content_type, allowed) is expected


def test_every_sniffable_type_passes_the_default_list_except_svg() -> None:
    assert {mime for _data, mime in MEDIA.values()} <= MEDIA_TYPES
    for mime in MEDIA_TYPES:
        assert mime.split("/")[0] in ("image", "video", "audio")
        assert is_allowed(mime, DEFAULT) is (mime != "image/svg+xml")
