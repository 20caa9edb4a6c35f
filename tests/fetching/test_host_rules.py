"""MEDIACACHE_HOST_LIMITS parsing: the syntax, the errors, which rule applies to a host, and which host a URL has."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacache.fetching.host_rules import DEFAULT_RULE, HostRule, HostRuleError, parse_host_limits
from mediacache.worker.politeness import host_of

EXAMPLE = "*.tiktokcdn.com=20/s:8,*.cdninstagram.com=5/s:4,*=50/s:32"


def test_the_documented_example() -> None:
    rules = parse_host_limits(EXAMPLE)
    tiktok = rules.rule_for("v16-webapp.tiktokcdn.com")
    assert (tiktok.pattern, tiktok.rate_per_s, tiktok.concurrency) == ("*.tiktokcdn.com", 20.0, 8)
    assert rules.rule_for("scontent.cdninstagram.com").concurrency == 4
    assert rules.rule_for("example.org") == HostRule.of("*", 50.0, 32)


def test_a_wildcard_matches_the_apex_and_any_depth_of_subdomain() -> None:
    rules = parse_host_limits("*.example.com=2/s:1")
    for host in ("example.com", "a.example.com", "a.b.c.example.com", "EXAMPLE.com.", "A.Example.COM"):
        assert rules.rule_for(host).pattern == "*.example.com", host
    for host in ("notexample.com", "example.com.evil.net", "com"):
        assert rules.rule_for(host) is DEFAULT_RULE, host


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_the_most_specific_pattern_wins_whatever_the_order(order: int) -> None:
    parts = ["*=9/s:9", "*.example.com=1/s:1", "*.video.example.com=2/s:2", "cdn.video.example.com=3/s:3"]
    rules = parse_host_limits(",".join(parts[order:] + parts[:order]))
    assert rules.rule_for("cdn.video.example.com").rate_per_s == 3  # exact beats every wildcard
    assert rules.rule_for("x.cdn.video.example.com").rate_per_s == 2  # exact is not a wildcard
    assert rules.rule_for("img.video.example.com").rate_per_s == 2  # more labels win
    assert rules.rule_for("video.example.com").rate_per_s == 2
    assert rules.rule_for("img.example.com").rate_per_s == 1
    assert rules.rule_for("other.net").rate_per_s == 9  # `*` only when nothing else matches


def test_without_a_star_rule_the_built_in_default_applies() -> None:
    assert parse_host_limits("a.com=1/s:1").rule_for("b.com") == DEFAULT_RULE
    assert (DEFAULT_RULE.rate_per_s, DEFAULT_RULE.concurrency) == (None, 64)
    assert parse_host_limits("").rule_for("b.com") == DEFAULT_RULE
    assert parse_host_limits(None).rule_for("b.com") == DEFAULT_RULE


def test_rates_per_minute_decimals_and_no_limit() -> None:
    rules = parse_host_limits(
        " a.com = 30/m : 2 , b.com=0.5/s:unlimited, c.com=unlimited:0, d.com=0:3, e.com=unlimited, ")
    assert rules.rule_for("a.com").rate_per_s == 0.5
    assert rules.rule_for("b.com") == HostRule.of("b.com", 0.5, None)
    assert rules.rule_for("c.com").unlimited
    assert (rules.rule_for("d.com").rate_per_s, rules.rule_for("d.com").concurrency) == (None, 3)
    assert rules.rule_for("e.com").unlimited
    assert str(rules.rule_for("a.com")) == "a.com=30/m:2"
    assert str(rules.rule_for("e.com")) == "e.com=unlimited"


def test_the_burst_is_a_tenth_of_a_second_of_requests() -> None:
    rules = parse_host_limits("a.com=20/s:1,b.com=5/s:1,c.com=30/m:1,d.com=unlimited:1,*=50/s:32")
    assert [rules.rule_for(h).burst for h in ("a.com", "b.com", "c.com", "d.com", "x.com")] == [2, 1, 1, 1, 5]


def test_rules_print_back_in_their_own_syntax_most_specific_first() -> None:
    rules = parse_host_limits(EXAMPLE + ",cdn.tiktokcdn.com=1/s:1")
    assert str(rules) == "cdn.tiktokcdn.com=1/s:1,*.cdninstagram.com=5/s:4,*.tiktokcdn.com=20/s:8,*=50/s:32"
    assert str(parse_host_limits(str(rules))) == str(rules)


def test_ip_addresses_are_exact_hosts() -> None:
    rules = parse_host_limits("127.0.0.1=1/s:1,[::1]=2/s:2")
    assert rules.rule_for("127.0.0.1").rate_per_s == 1
    assert rules.rule_for("0:0::1").rate_per_s == 2
    assert rules.rule_for("[::1]").rate_per_s == 2


@pytest.mark.parametrize(("text", "bad_rule", "says"), [
    ("a.com", "a.com", "has no '='"),
    ("a.com=5/s", "a.com=5/s", "no ':'"),
    ("a.com=5/h:3", "a.com=5/h:3", "the rate '5/h'"),
    ("a.com=fast:3", "a.com=fast:3", "the rate 'fast'"),
    ("a.com=0/s:3", "a.com=0/s:3", "write unlimited (or 0) for no rate limit"),
    ("a.com=5/s:-1", "a.com=5/s:-1", "the concurrency '-1'"),
    ("a.com=5/s:2.5", "a.com=5/s:2.5", "the concurrency '2.5'"),
    ("=5/s:1", "=5/s:1", "empty host pattern"),
    ("*.*.com=1/s:1", "*.*.com=1/s:1", "host pattern '*.*.com'"),
    ("cdn*.com=1/s:1", "cdn*.com=1/s:1", "host pattern 'cdn*.com'"),
    ("a..com=1/s:1", "a..com=1/s:1", "host pattern 'a..com'"),
    ("a.com:443=1/s:1", "a.com:443=1/s:1", "without a port"),
    ("*=1/s:1,ok.com=1/s:1,broken", "broken", "has no '='"),
])
def test_a_malformed_rule_is_named_with_the_expected_form(text: str, bad_rule: str, says: str) -> None:
    with pytest.raises(HostRuleError) as info:
        parse_host_limits(text)
    message = str(info.value)
    assert info.value.rule == bad_rule
    assert f"rule {bad_rule!r}" in message
    assert says in message
    assert "MEDIACACHE_HOST_LIMITS" in message and "pattern=RATE/s:CONCURRENCY" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["a.com=1/s:1,A.COM=2/s:2", "*=1/s:1,*=2/s:2", "*.a.com=1/s:1,*.a.com.=1/s:1"])
def test_a_pattern_given_twice_is_an_error(text: str) -> None:
    with pytest.raises(HostRuleError, match="repeats the pattern"):
        parse_host_limits(text)


@settings(max_examples=3000)
@given(st.sampled_from(["http://", "https://", "HTTP://", " http://", "ftp://", "http:/", ""]),
       st.text(alphabet="aZ09.-_:@[]/?#%\t\n é", max_size=40))
def test_the_worker_reads_the_host_as_urlsplit_does(scheme: str, rest: str) -> None:
    # host_of reads plain hosts without urlsplit, to save its cost per download: same answer always.
    url = scheme + rest
    try:
        expected = urlsplit(url).hostname or None
    except ValueError:
        expected = None
    assert host_of(url) == expected
