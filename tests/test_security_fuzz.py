"""Short fuzz of the parsers a caller reaches first: Range headers and link signatures raise only our errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mediacache.api.ranges import parse_range
from mediacache.errors import RangeNotSatisfiableError
from mediacache.fetching.netguard import is_localhost_name
from mediacache.storage.signing import sign_path, verify

_numbers = st.one_of(st.integers(min_value=0, max_value=10**30).map(str), st.text("0123456789", min_size=4000,
                                                                                    max_size=6000), st.text(max_size=8))
_ranges = st.one_of(st.text(max_size=60), st.builds(lambda a, b: f"bytes={a}-{b}", _numbers, _numbers))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(header=_ranges, size=st.integers(min_value=0, max_value=2**40))
def test_parse_range_raises_only_range_not_satisfiable(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if got is not None:
        assert 0 <= got.start < got.end <= size


@settings(max_examples=400, deadline=None, derandomize=True)
@given(key=st.text(max_size=40), exp=st.one_of(st.none(), st.integers(), st.text(max_size=20)),
       sig=st.one_of(st.none(), st.text(max_size=60)))
def test_verify_only_says_yes_or_no(key: str, exp: int | str | None, sig: str | None) -> None:
    assert verify(b"k", key, exp, sig) in (True, False)


def test_a_signed_link_still_verifies() -> None:
    query = sign_path(b"k", "media/a/b.jpg", ttl_s=60).split("?", 1)[1]
    exp, sig = (part.split("=", 1)[1] for part in query.split("&"))
    assert verify(b"k", "media/a/b.jpg", exp, sig)
    assert not verify(b"k", "media/a/b.jpg", exp, sig + "\u00e9")


def test_every_spelling_of_localhost_is_localhost() -> None:
    for host in ("localhost", "LOCALHOST.", "LocalHost", "a.localhost", "x.LOCALHOST.."):
        assert is_localhost_name(host), host
    assert not is_localhost_name("localhost.example.com") and not is_localhost_name("notlocalhost")
