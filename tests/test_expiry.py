"""Signed-link expiry: TikTok, Instagram/Facebook, S3 SigV4 and SigV2, GCS V2 and V4, CloudFront."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacache.fetching.expiry import is_expired, link_expiry

T = 1_733_000_000  # 2024-11-30T20:53:20Z
WHEN = datetime.fromtimestamp(T, UTC)


def _cloudfront_policy(epoch_s: int) -> str:
    policy = {"Statement": [{"Resource": "https://d111111abcdef8.cloudfront.net/*",
                             "Condition": {"DateLessThan": {"AWS:EpochTime": epoch_s}}}]}
    raw = base64.b64encode(json.dumps(policy).encode()).decode()
    return raw.translate(str.maketrans("+=/", "-_~"))


@pytest.mark.parametrize("url", [
    # TikTok images and avatars: x-expires, unix seconds.
    f"https://p16-sign-va.tiktokcdn.com/tos-maliva-avt-0068/abc~c5_100x100.jpeg?lk3s=a5d48078&x-expires={T}"
    "&x-signature=AbC%3D",
    f"https://p77-sign.tiktokcdn-us.com/obj/x.webp?X-Expires={T}&x-signature=s",
    # TikTok videos: expire (with signature) on the video hosts.
    f"https://v16-webapp-prime.tiktok.com/video/tos/useast2a/tos-useast2a-pve-0068/o/?a=1988&bti=Ng&expire={T}"
    "&l=2024&policy=2&signature=0123abcd&tk=tt_chain_token",
    f"https://v19.tiktokcdn-us.com/abc/video/tos/x/?a=1233&expire={T}&signature=x",
    # Instagram and Facebook: oe, hexadecimal unix seconds.
    f"https://scontent-lax3-1.cdninstagram.com/v/t51.2885-15/1_n.jpg?stp=dst-jpg&_nc_ht=x&oh=00_AfB&oe={T:X}",
    f"https://instagram.fxyz1-1.fna.fbcdn.net/v/t51.29350-15/1_n.jpg?_nc_cat=1&oh=00_x&oe={T:x}",
    f"https://scontent.xx.fbcdn.net/v/t1.6435-9/1_n.jpg?_nc_cat=1&oe={T:08X}",
    # AWS S3 SigV4 presigned: signing time plus lifetime.
    "https://bucket.s3.us-east-1.amazonaws.com/key.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA%2F20241130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20241130T195320Z"
    "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=abc",
    "https://minio.example.com/b/k?x-amz-date=20241130T205220Z&x-amz-expires=60&x-amz-signature=abc",
    # GCS V4 and V2.
    "https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=x"
    "&X-Goog-Date=20241130T185320Z&X-Goog-Expires=7200&X-Goog-SignedHeaders=host&X-Goog-Signature=ab",
    f"https://storage.googleapis.com/b/o.jpg?GoogleAccessId=svc%40p.iam.gserviceaccount.com&Expires={T}"
    "&Signature=abc%3D",
    # S3 SigV2 presigned.
    f"https://bucket.s3.amazonaws.com/k.jpg?AWSAccessKeyId=AKIA&Expires={T}&Signature=abc%3D",
    # CloudFront canned and custom policies.
    f"https://d111111abcdef8.cloudfront.net/image.jpg?Expires={T}&Signature=abc~&Key-Pair-Id=K2JCJMDEHXQW5F",
    f"https://d111111abcdef8.cloudfront.net/image.jpg?Policy={_cloudfront_policy(T)}&Signature=abc"
    "&Key-Pair-Id=K2JCJMDEHXQW5F",
])
def test_signed_links_give_their_expiry(url: str) -> None:
    assert link_expiry(url) == WHEN
    assert is_expired(url, WHEN)
    assert is_expired(url, WHEN + timedelta(hours=1))
    assert not is_expired(url, WHEN - timedelta(seconds=1))


@pytest.mark.parametrize("url", [
    f"https://p16-sign.tiktokcdn.com/a.jpg?x%2Dexpires={T}",  # a percent-encoded name
    f"https://p16-sign.tiktokcdn.com/a.jpg?x-exp%69res={T}",
    f"https://p16-sign.tiktokcdn.com/a.jpg?x-exp\tires={T}",  # urlsplit drops tabs and newlines
    f"https://p16-sign.tiktokcdn.com/a.jpg?x-ex\r\npires={T}",
    f"https://scontent.cdninstagram.com/a.jpg?%6fe={T:X}",
])
def test_names_that_parsing_decodes_still_count(url: str) -> None:
    # link_expiry skips the parse when no name of interest can be in the URL: it must not skip these.
    assert link_expiry(url) == WHEN


@settings(max_examples=2000)
@given(st.text(alphabet="expirolcyEXPIROLCY%-=&?/:.\t\n0123456789abf", max_size=60))
def test_skipping_the_parse_never_changes_the_answer(query: str) -> None:
    from mediacache.fetching import expiry

    url = f"https://p16-sign.tiktokcdn.com/a.jpg?{query}"
    words = expiry._EXPIRY_WORDS
    try:
        expiry._EXPIRY_WORDS = ("",)  # every URL parsed in full
        full = link_expiry(url)
    finally:
        expiry._EXPIRY_WORDS = words
    assert link_expiry(url) == full


@pytest.mark.parametrize("url", [
    "https://example.com/a.jpg",
    "https://example.com/a.jpg?",
    "https://example.com/a.jpg?w=100&h=200",
    # Generic names on hosts that do not sign with them mean nothing.
    f"https://example.com/a.jpg?oe={T:X}",
    f"https://example.com/a.jpg?expire={T}",
    f"https://notfbcdn.net/a.jpg?oe={T:X}",
    f"https://example.com/a.jpg?Expires={T}",  # no signature parameter beside it
    f"https://example.com/a.jpg?expires={T}&w=1",
    # Garbage and impossible values are "unknown", not "expired".
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=soon",
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=",
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=-5",
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=1733000000000",  # milliseconds
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=12",
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=" + "9" * 5000,
    "https://p16-sign.tiktokcdn.com/a.jpg?x-expires=%EF%BC%91%EF%BC%97",  # fullwidth digits
    "https://scontent.cdninstagram.com/a.jpg?oe=zzzz",
    "https://scontent.cdninstagram.com/a.jpg?oe=" + "f" * 5000,
    "https://s3.amazonaws.com/b/k?X-Amz-Date=yesterday&X-Amz-Expires=60",
    "https://s3.amazonaws.com/b/k?X-Amz-Date=20241130T195320Z",
    "https://s3.amazonaws.com/b/k?X-Amz-Date=20241130T195320Z&X-Amz-Expires=-1",
    "https://s3.amazonaws.com/b/k?X-Amz-Date=99991231T235959Z&X-Amz-Expires=604800",
    "https://s3.amazonaws.com/b/k?X-Amz-Date=00010101T000000Z&X-Amz-Expires=60",
    "https://d1.cloudfront.net/a.jpg?Policy=not-base64!&Key-Pair-Id=K",
    "https://d1.cloudfront.net/a.jpg?Policy=" + base64.b64encode(b"[1,2]").decode() + "&Key-Pair-Id=K",
    "https://d1.cloudfront.net/a.jpg?Policy=" + base64.b64encode(b"[" * 3000).decode() + "&Key-Pair-Id=K",
    "not a url at all",
    "http://[::1/broken?x-expires=1733000000",
    "",
])
def test_links_without_a_known_expiry(url: str) -> None:
    assert link_expiry(url) is None
    assert not is_expired(url, datetime(2999, 1, 1, tzinfo=UTC))


def test_the_earliest_expiry_wins() -> None:
    url = (f"https://p16-sign.tiktokcdn.com/a.jpg?x-expires={T + 600}&expire={T}"
           f"&X-Amz-Date=20241130T205320Z&X-Amz-Expires=900")
    assert link_expiry(url) == WHEN


def test_sigv4_lifetime_is_capped_at_seven_days() -> None:
    url = "https://s3.amazonaws.com/b/k?X-Amz-Date=20241130T000000Z&X-Amz-Expires=999999999999"
    assert link_expiry(url) == datetime(2024, 12, 7, tzinfo=UTC)


def test_grace_and_default_now() -> None:
    url = f"https://p16-sign.tiktokcdn.com/a.jpg?x-expires={T}"
    assert not is_expired(url, WHEN + timedelta(seconds=30), grace_s=60)
    assert is_expired(url, WHEN + timedelta(seconds=61), grace_s=60)
    assert is_expired(url)  # 2024 is in the past
    future = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    assert not is_expired(f"https://p16-sign.tiktokcdn.com/a.jpg?x-expires={future}")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_expired("https://p16-sign.tiktokcdn.com/a.jpg?x-expires=1", datetime(2024, 1, 1))


@settings(max_examples=2000)
@given(st.text(max_size=300))
def test_any_text_never_raises(text: str) -> None:
    result = link_expiry(text)
    assert result is None or result.tzinfo is not None
    is_expired(text, WHEN)


@settings(max_examples=1000)
@given(st.dictionaries(
    st.sampled_from(["x-expires", "X-Expires", "expire", "oe", "Expires", "Signature", "Key-Pair-Id", "Policy",
                     "X-Amz-Date", "X-Amz-Expires", "X-Goog-Date", "X-Goog-Expires", "GoogleAccessId", "w"]),
    st.one_of(st.text(max_size=30), st.integers(-2**40, 2**40).map(str), st.integers(0, 2**40).map(hex))),
    st.sampled_from(["p16-sign.tiktokcdn.com", "scontent.cdninstagram.com", "d1.cloudfront.net", "example.com"]))
def test_any_query_never_raises(params: dict[str, str], host: str) -> None:
    result = link_expiry(f"https://{host}/a.jpg?{urlencode(params)}")
    if result is not None:
        assert datetime(2000, 1, 1, tzinfo=UTC) <= result <= datetime(3000, 1, 8, tzinfo=UTC)
