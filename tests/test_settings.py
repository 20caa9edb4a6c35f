"""Settings: the seed's variables, database URL spellings, one clear error, and no leaked secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mediacache.errors import ConfigError
from mediacache.settings import load_settings, normalize_database_url
from mediacache.storage.signing import load_signing_key

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings()
    assert s.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / '.mediacache' / 'mediacache.db'}"
    assert s.storage_backend == "local" and not s.redis_configured
    assert s.redis_connection()["host"] == "127.0.0.1" and s.redis_connection()["port"] == 6379
    assert s.queue_prefix == "bull" and s.url_ttl_s == 3600 and s.max_bytes == 512 * 1024 * 1024


@pytest.mark.parametrize(("given", "expected"), [
    ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
    ("postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
    ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
    ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
    ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
])
def test_database_url_spellings(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(("env", "needle"), [
    ({"DATABASE_URL": "mysql://root:hunter2@db/app"}, "DATABASE_URL="),
    ({"DATABASE_URL": "nonsense"}, "DATABASE_URL="),
    ({"REDIS_PORT": "sixty"}, "REDIS_PORT='sixty'"),
    ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ({"MEDIACACHE_URL_TTL_S": "999999999"}, "MEDIACACHE_URL_TTL_S=999999999"),
    ({"MEDIACACHE_PUBLIC_BASE_URL": "ftp://x"}, "MEDIACACHE_PUBLIC_BASE_URL"),
    ({"MEDIACACHE_ALLOWED_NETWORKS": "10.0.0.0/8,banana"}, "MEDIACACHE_ALLOWED_NETWORKS"),
    ({"MEDIACACHE_STORAGE": "ftp"}, "MEDIACACHE_STORAGE"),
    ({"MEDIACACHE_THUMB_WIDTHS": "320,big"}, "MEDIACACHE_THUMB_WIDTHS='320,big'"),
    ({"MEDIACACHE_THUMB_WIDTHS": "0"}, "MEDIACACHE_THUMB_WIDTHS"),
    ({"MEDIACACHE_DERIVE": "maybe"}, "MEDIACACHE_DERIVE"),
    ({"MEDIACACHE_MAX_PIXELS": "0"}, "MEDIACACHE_MAX_PIXELS"),
])
def test_bad_values_give_one_clear_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert needle in message
    assert "hunter2" not in message


def test_seed_redis_variables_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "redis.internal")
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("REDIS_DB", "4")
    s = load_settings()
    conn = s.redis_connection()
    assert (conn["host"], conn["port"], conn["password"], conn["db"]) == ("redis.internal", 6380, "s3cret-pw", 4)
    # The 5 s redis-py default would fight BullMQ's blocking waits.
    assert conn["socket_timeout"] is None or conn["socket_timeout"] >= 30
    assert s.redis_configured

    monkeypatch.setenv("REDIS_URL", "redis://:url-pw@cache:6390/2")
    conn = load_settings().redis_connection()
    assert (conn["host"], conn["port"], conn["password"], conn["db"]) == ("cache", 6390, "url-pw", 2)


def test_empty_redis_password_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "")
    assert load_settings().redis_connection()["password"] is None


def test_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REDIS_DB=7\nMEDIACACHE_QUEUE_PREFIX=fromfile\n")
    s = load_settings()
    assert s.redis_db == 7 and s.queue_prefix == "fromfile"


def test_secrets_never_appear_in_reprs_or_logs(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    secrets = {"REDIS_PASSWORD": "pw-redis-1", "R2_SECRET_ACCESS_KEY": "pw-r2-2",
               "DATABASE_URL": "postgresql://app:pw-db-3@db/app", "MEDIACACHE_SIGNING_SECRET": "pw-sign-4",
               "MEDIACACHE_API_TOKEN": "pw-token-5", "REDIS_URL": "redis://:pw-url-6@r:6379/0",
               "R2_ACCESS_KEY_ID": "id", "R2_BUCKET_NAME": "b", "R2_ACCOUNT_ID": "acc"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings: %s / %r", s, s)
    shown = repr(s) + str(s) + caplog.text + s.database_display + s.redis_display
    for value in ("pw-redis-1", "pw-r2-2", "pw-db-3", "pw-sign-4", "pw-token-5", "pw-url-6"):
        assert value not in shown
    assert s.sqlalchemy_url == "postgresql+asyncpg://app:pw-db-3@db/app"


def test_storage_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().storage_backend == "local"
    monkeypatch.setenv("R2_BUCKET_NAME", "media")
    assert load_settings().storage_backend == "s3"
    monkeypatch.setenv("MEDIACACHE_STORAGE", "local")
    assert load_settings().storage_backend == "local"


def test_signing_key_is_generated_once_and_shared(tmp_path: Path) -> None:
    a = load_settings(data_dir=tmp_path / "d")
    b = load_settings(data_dir=tmp_path / "d")
    key = load_signing_key(a.signing_secret, a.data_dir)
    assert len(key) == 64 and load_signing_key(b.signing_secret, b.data_dir) == key
    assert (tmp_path / "d" / "signing.key").stat().st_mode & 0o077 == 0


def test_media_settings_default_on_with_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    # The media extra is installed in the test environment, so derivatives default to on.
    assert s.derive_enabled and s.thumb_width_list == (320, 640)
    assert (s.max_pixels, s.max_frames, s.derive_concurrency) == (50_000_000, 1000, 1)
    monkeypatch.setenv("MEDIACACHE_DERIVE", "off")
    monkeypatch.setenv("MEDIACACHE_THUMB_WIDTHS", "640, 200,640")
    s = load_settings()
    assert not s.derive_enabled and s.thumb_width_list == (200, 640)
