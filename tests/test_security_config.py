"""Configuration errors never show a secret (issue 12, point 4), and `serve` refuses to listen openly (point 9)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mediacache.api.exposure import check_exposure, is_loopback
from mediacache.cli.app import app
from mediacache.errors import ConfigError
from mediacache.settings import load_settings

SECRET = "dbsecretPW6"


@pytest.mark.parametrize("overrides", [
    {"database_url": "u:dbsecretPW6@127.0.0.1"},
    {"database_url": "postgresql://u:db@dbsecretPW6@host/x"},
    {"database_url": "postgresql://u:dbsecretPW6@host:12x/x"},
    {"database_url": "postgresql://u:dbsecretPW6@host:99999/x"},
    {"redis_url": "redis://:db/dbsecretPW6@host:6379/0"},
    {"redis_url": "redis://:db#dbsecretPW6@host:6379/0"},
    {"redis_url": "redis://:db?dbsecretPW6@host:6379/0"},
    {"redis_url": "redis://:dbsecretPW6@host:70000/0"},
    {"redis_url": "redis://:dbsecretPW6@host:port/0"},
    {"redis_url": "redis://:db[secretPW6@host/0".replace("db[secretPW6", "db[" + SECRET)},
])
def test_a_malformed_url_is_one_masked_config_error(overrides: dict[str, str], clean_env: None) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert SECRET not in message and "\n" not in message
    assert ("DATABASE_URL" in message) or ("REDIS_URL" in message)


_PART = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scheme=st.sampled_from(["postgresql", "postgres", "postgresql+asyncpg", "redis", "rediss", "sqlite", "x"]),
       user=_PART, before=_PART, after=_PART, host=_PART, port=_PART, path=_PART,
       which=st.sampled_from(["database_url", "redis_url"]))
def test_no_configuration_error_contains_the_secret(scheme: str, user: str, before: str, after: str, host: str,
                                                    port: str, path: str, which: str) -> None:
    secret = before + "S3cr3tXq" + after
    url = f"{scheme}://{user}:{secret}@{host}:{port}/{path}"
    try:
        loaded = load_settings(**{which: url})
    except ConfigError as exc:
        assert secret not in str(exc) and "S3cr3tXq" not in str(exc)
    else:
        assert "S3cr3tXq" not in repr(loaded)


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(clean_env: None) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("LOCALHOST.")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("example.com")
    # 192.0.2.1 is on no interface here: had the check not refused, binding would fail instead.
    result = CliRunner().invoke(app, ["serve", "--host", "192.0.2.1", "--port", "0"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "MEDIACACHE_API_TOKEN" in str(result.exception) and "--allow-anonymous" in str(result.exception)
    check_exposure(load_settings(), "192.0.2.1", allow_anonymous=True)
    check_exposure(load_settings(api_token="t"), "0.0.0.0", allow_anonymous=False)
