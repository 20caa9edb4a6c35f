"""Settings(BaseSettings): the only place environment variables (and `.env`) are read."""

from __future__ import annotations

import ipaddress
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mediacache.errors import ConfigError
from mediacache.fetching.host_limiter import BreakerPolicy
from mediacache.fetching.host_rules import HostRuleError, HostRules, parse_host_limits
from mediacache.fetching.source_key import SourceKeyRules
from mediacache.settings.secret_urls import check_url_syntax, mask_url

MAX_PRESIGN_TTL_S = 7 * 24 * 3600  # S3 SigV4 refuses presigned URLs valid for longer
_REDIS_EXAMPLE = "redis://:p%40ss@host:6379/0"
_BREAKER = re.compile(r"^(?P<failures>\d+)\s*/\s*(?P<window>\d+(?:\.\d+)?)s\s*:\s*(?P<open>\d+(?:\.\d+)?)s$")


def _var(name: str, default: Any, **constraints: Any) -> Any:
    """A field read from the environment variable `name`."""
    return Field(default=default, validation_alias=AliasChoices(name), **constraints)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        populate_by_name=True,
    )

    # Redis, with the original Node design's variable names.
    redis_url: SecretStr | None = _var("REDIS_URL", None)
    redis_host: str = _var("REDIS_HOST", "127.0.0.1")
    redis_port: int = _var("REDIS_PORT", 6379, ge=1, le=65535)
    redis_password: SecretStr | None = _var("REDIS_PASSWORD", None)
    redis_db: int = _var("REDIS_DB", 0, ge=0, le=1_000_000)
    queue_prefix: str = _var("MEDIACACHE_QUEUE_PREFIX", "bull", min_length=1)
    # Failover through Sentinel and TLS (broker/connection.py builds the clients from these).
    redis_sentinels: str | None = _var("REDIS_SENTINELS", None)
    redis_sentinel_master: str | None = _var("REDIS_SENTINEL_MASTER", None)
    redis_sentinel_username: str | None = _var("REDIS_SENTINEL_USERNAME", None)
    redis_sentinel_password: SecretStr | None = _var("REDIS_SENTINEL_PASSWORD", None)
    redis_tls_ca_file: Path | None = _var("REDIS_TLS_CA_FILE", None)
    redis_tls_cert_file: Path | None = _var("REDIS_TLS_CERT_FILE", None)
    redis_tls_key_file: Path | None = _var("REDIS_TLS_KEY_FILE", None)

    # Database.
    database_url: SecretStr | None = _var("DATABASE_URL", None)
    data_dir: Path = _var("MEDIACACHE_DATA_DIR", Path(".mediacache"))
    # PgBouncer in transaction mode: asyncpg must not keep prepared statements (db/engine.py).
    db_pgbouncer: bool = _var("MEDIACACHE_DB_PGBOUNCER", False)
    # Connections one process keeps to the database, at most (db/engine.py).
    db_pool_size: int = _var("MEDIACACHE_DB_POOL_SIZE", 20, ge=1, le=1000)

    # Storage: the original design's R2 variables, and any S3-compatible store.
    storage: Literal["local", "s3"] | None = _var("MEDIACACHE_STORAGE", None)
    r2_account_id: str | None = _var("R2_ACCOUNT_ID", None)
    r2_access_key_id: str | None = _var("R2_ACCESS_KEY_ID", None)
    r2_secret_access_key: SecretStr | None = _var("R2_SECRET_ACCESS_KEY", None)
    r2_bucket_name: str | None = _var("R2_BUCKET_NAME", None)
    r2_public_url: str | None = _var("R2_PUBLIC_URL", None)
    s3_endpoint_url: str | None = _var("S3_ENDPOINT_URL", None)
    s3_region: str | None = _var("S3_REGION", None)

    # URLs handed out.
    public_base_url: str = _var("MEDIACACHE_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    url_ttl_s: int = _var("MEDIACACHE_URL_TTL_S", 3600, ge=1)
    signing_secret: SecretStr | None = _var("MEDIACACHE_SIGNING_SECRET", None)

    # Fetching.
    allowed_networks: str = _var("MEDIACACHE_ALLOWED_NETWORKS", "")
    connect_timeout_s: float = _var("MEDIACACHE_CONNECT_TIMEOUT_S", 5.0, gt=0)
    read_timeout_s: float = _var("MEDIACACHE_READ_TIMEOUT_S", 15.0, gt=0)
    download_deadline_s: float = _var("MEDIACACHE_DOWNLOAD_DEADLINE_S", 300.0, gt=0)
    max_bytes: int = _var("MEDIACACHE_MAX_BYTES", 512 * 1024 * 1024, gt=0)
    allowed_types: str = _var("MEDIACACHE_ALLOWED_TYPES", "image/*,video/*,audio/*")

    # Deduplication: one asset per source key (the URL without its signing parameters).
    dedup: bool = _var("MEDIACACHE_DEDUP", True)
    dedup_ignore_params: str = _var("MEDIACACHE_DEDUP_IGNORE_PARAMS", "")

    # Worker.
    concurrency: int = _var("MEDIACACHE_CONCURRENCY", 16, ge=1, le=1000)
    job_attempts: int = _var("MEDIACACHE_JOB_ATTEMPTS", 3, ge=1, le=100)
    backoff_ms: int = _var("MEDIACACHE_BACKOFF_MS", 1000, ge=0)
    lease_s: float = _var("MEDIACACHE_LEASE_S", 60.0, gt=0)
    lock_duration_ms: int = _var("MEDIACACHE_LOCK_DURATION_MS", 30000, ge=1000)
    shutdown_grace_s: float = _var("MEDIACACHE_SHUTDOWN_GRACE_S", 25.0, gt=0)
    reconcile_interval_s: float = _var("MEDIACACHE_RECONCILE_INTERVAL_S", 60.0, ge=0)
    # The loop of `mediacache worker` and `serve` (cli/running.py): uvloop where installed.
    event_loop: Literal["auto", "uvloop", "asyncio"] = _var("MEDIACACHE_EVENT_LOOP", "auto")

    # Per-host politeness (fetching/host_rules.py, worker/politeness.py).
    host_limits: str = _var("MEDIACACHE_HOST_LIMITS", "")
    # FAILURES/WINDOWs:OPENs: that many failures to one host within the window open its breaker
    # for OPEN seconds; then a single probe decides.
    host_breaker: str = _var("MEDIACACHE_HOST_BREAKER", "5/30s:30s")
    # How soon the permits of a killed worker come back; holders renew theirs for long downloads.
    host_permit_ttl_s: float = _var("MEDIACACHE_HOST_PERMIT_TTL_S", 60.0, gt=0)
    # Off only for measuring the limiter's cost (bench/): downloads then run unlimited.
    host_limiting: bool = _var("MEDIACACHE_HOST_LIMITING", True)

    # Webhooks (see `events.webhooks`). The backoff figures exist so tests and benches can shorten them.
    webhook_url: str = _var("MEDIACACHE_WEBHOOK_URL", "")
    webhook_secret: SecretStr | None = _var("MEDIACACHE_WEBHOOK_SECRET", None)
    webhook_retry_hours: float = _var("MEDIACACHE_WEBHOOK_RETRY_HOURS", 24.0, gt=0)
    webhook_allowed_networks: str = _var("MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS", "")
    webhook_timeout_s: float = _var("MEDIACACHE_WEBHOOK_TIMEOUT_S", 10.0, gt=0)
    webhook_backoff_s: float = _var("MEDIACACHE_WEBHOOK_BACKOFF_S", 1.0, gt=0)
    webhook_backoff_max_s: float = _var("MEDIACACHE_WEBHOOK_BACKOFF_MAX_S", 600.0, gt=0)
    webhook_poll_s: float = _var("MEDIACACHE_WEBHOOK_POLL_S", 2.0, gt=0)
    # POSTs in flight per worker process (see `events.webhooks` on why not many more).
    webhook_concurrency: int = _var("MEDIACACHE_WEBHOOK_CONCURRENCY", 16, ge=1, le=256)

    # Media: metadata, placeholders and WebP derivatives on the media-derive queue.
    derive: Literal["on", "off"] | None = _var("MEDIACACHE_DERIVE", None)
    thumb_widths: str = _var("MEDIACACHE_THUMB_WIDTHS", "320,640")
    max_pixels: int = _var("MEDIACACHE_MAX_PIXELS", 50_000_000, ge=1)
    max_frames: int = _var("MEDIACACHE_MAX_FRAMES", 1000, ge=1)
    derive_concurrency: int = _var("MEDIACACHE_DERIVE_CONCURRENCY", 1, ge=1, le=64)

    # Output.
    log_format: Literal["text", "json"] = _var("MEDIACACHE_LOG_FORMAT", "text")

    # HTTP service.
    api_token: SecretStr | None = _var("MEDIACACHE_API_TOKEN", None)
    # Unset: reads need the token when the server listens beyond loopback (api/auth.py).
    api_token_reads: bool | None = _var("MEDIACACHE_API_TOKEN_READS", None)
    request_body_timeout_s: float = _var("MEDIACACHE_REQUEST_BODY_TIMEOUT_S", 30.0, gt=0)

    @field_validator("redis_url", "database_url", "redis_password", "r2_secret_access_key", "signing_secret",
                     "api_token", "webhook_secret",
                     "r2_account_id", "r2_access_key_id", "r2_bucket_name", "r2_public_url",
                     "s3_endpoint_url", "s3_region", "storage", "derive", "redis_sentinels", "redis_sentinel_master",
                     "redis_sentinel_username", "redis_sentinel_password", "redis_tls_ca_file",
                     "redis_tls_cert_file", "redis_tls_key_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `REDIS_PASSWORD=` in a .env file (as in the original design's example .env) means "no password".
        return None if isinstance(value, str) and not value.strip() else value

    # ---- derived values -------------------------------------------------------------------

    @property
    def redis_configured(self) -> bool:
        """True when a Redis server was named (so an embedded server must never stand in for it).

        Only a host, port, URL, password, Sentinels or TLS files name a server; REDIS_DB alone picks
        a database of whichever server runs, the embedded one included.
        """
        return bool(self.model_fields_set & {"redis_url", "redis_host", "redis_port", "redis_password",
                                             "redis_sentinels", "redis_sentinel_master", "redis_tls_ca_file",
                                             "redis_tls_cert_file"})

    @property
    def redis_tls(self) -> bool:
        """rediss://, or any REDIS_TLS_* file: TLS to the data nodes (and to the Sentinels)."""
        rediss = self.redis_url is not None and urlsplit(self.redis_url.get_secret_value()).scheme == "rediss"
        return rediss or self.redis_tls_ca_file is not None or self.redis_tls_cert_file is not None

    def redis_tls_options(self) -> dict[str, Any]:
        """redis-py's TLS keyword arguments, the same for data nodes and Sentinels."""
        if not self.redis_tls:
            return {}
        opts: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
        if self.redis_tls_ca_file is not None:
            opts["ssl_ca_certs"] = str(self.redis_tls_ca_file)
        if self.redis_tls_cert_file is not None:
            opts["ssl_certfile"] = str(self.redis_tls_cert_file)
            opts["ssl_keyfile"] = str(self.redis_tls_key_file or self.redis_tls_cert_file)
        return opts

    @property
    def redis_sentinel_list(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty when Sentinel is not used."""
        out: list[tuple[str, int]] = []
        for raw in (self.redis_sentinels or "").split(","):
            part = raw.strip()
            if not part:
                continue
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"REDIS_SENTINELS={self.redis_sentinels!r}: {part!r} is not host:port; "
                                  "write it like sentinel-1:26379,sentinel-2:26379")
            out.append((host.strip("[]"), int(port)))
        return out

    def redis_connection(self) -> dict[str, Any]:
        """Keyword arguments for redis-py, as a dict rather than a URL.

        bullmq 3.4 builds its client from a URL with redis-py's default 5 s socket time-out,
        which cuts BullMQ's blocking waits short: delayed retries then run minutes late and
        Worker.close() can hang. A dict with a longer time-out avoids both.
        """
        opts: dict[str, Any] = {"socket_timeout": 30.0, "socket_connect_timeout": 5.0}
        if self.redis_url is not None:
            parts = urlsplit(self.redis_url.get_secret_value())
            opts.update(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                        db=int(parts.path.lstrip("/") or 0),
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password else None)
        else:
            opts.update(host=self.redis_host, port=self.redis_port, db=self.redis_db,
                        password=self.redis_password.get_secret_value() if self.redis_password else None)
        opts.update(self.redis_tls_options())
        return opts

    @property
    def redis_display(self) -> str:
        if self.redis_sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.redis_sentinel_list)
            return f"redis-sentinel://{hosts}/{self.redis_sentinel_master}/{self.redis_db}"
        c = self.redis_connection()
        return f"{'rediss' if c.get('ssl') else 'redis'}://{c['host']}:{c['port']}/{c['db']}"

    @cached_property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL in the async driver's spelling; default: a SQLite file in the data dir."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'mediacache.db').resolve()}"
        return normalize_database_url(self.database_url.get_secret_value())

    @property
    def database_display(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.sqlalchemy_url).render_as_string(hide_password=True)

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def storage_backend(self) -> Literal["local", "s3"]:
        if self.storage is not None:
            return self.storage
        s3_vars = (self.r2_account_id, self.r2_access_key_id, self.r2_secret_access_key,
                   self.r2_bucket_name, self.s3_endpoint_url)
        return "s3" if any(v is not None for v in s3_vars) else "local"

    @property
    def allowed_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(part.strip(), strict=False)
                for part in self.allowed_networks.split(",") if part.strip()]

    @property
    def webhook_url_list(self) -> list[str]:
        return [part.strip() for part in self.webhook_url.split(",") if part.strip()]

    @property
    def webhook_allowed_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(part.strip(), strict=False)
                for part in self.webhook_allowed_networks.split(",") if part.strip()]

    @property
    def allowed_type_list(self) -> list[str]:
        return [part.strip().lower() for part in self.allowed_types.split(",") if part.strip()]

    @cached_property
    def source_key_rules(self) -> SourceKeyRules:
        return SourceKeyRules.parse(self.dedup_ignore_params)

    @property
    def derive_enabled(self) -> bool:
        """MEDIACACHE_DERIVE, or when unset: on exactly when the `media` extra is installed."""
        if self.derive is not None:
            return self.derive == "on"
        return media_extra_installed()

    @property
    def thumb_width_list(self) -> tuple[int, ...]:
        return tuple(sorted({int(part) for part in self.thumb_widths.split(",") if part.strip()}))

    @cached_property
    def host_rules(self) -> HostRules:
        """MEDIACACHE_HOST_LIMITS parsed; a bad rule is a ConfigError naming it and the expected form."""
        try:
            return parse_host_limits(self.host_limits)
        except HostRuleError as exc:
            raise ConfigError(str(exc)) from None

    @cached_property
    def breaker_policy(self) -> BreakerPolicy:
        """MEDIACACHE_HOST_BREAKER parsed (FAILURES/WINDOWs:OPENs, e.g. 5/30s:30s)."""
        match = _BREAKER.match(self.host_breaker.strip().lower())
        if match is None or int(match["failures"]) < 1 or float(match["open"]) <= 0 or float(match["window"]) <= 0:
            raise ConfigError(
                f"MEDIACACHE_HOST_BREAKER={self.host_breaker!r} is not FAILURES/WINDOWs:OPENs; write it like "
                "5/30s:30s (5 failures within 30 s open the breaker for 30 s)")
        return BreakerPolicy(failures=int(match["failures"]), window_s=float(match["window"]),
                             open_s=float(match["open"]))

    def check(self) -> Settings:
        """Cross-field checks; raises ConfigError naming the variable, the value and the fix."""
        self.sqlalchemy_url  # noqa: B018 - validates DATABASE_URL
        if self.url_ttl_s > MAX_PRESIGN_TTL_S:
            raise ConfigError(
                f"MEDIACACHE_URL_TTL_S={self.url_ttl_s} is longer than presigned URLs can live "
                f"({MAX_PRESIGN_TTL_S} s, 7 days); set it to {MAX_PRESIGN_TTL_S} or less")
        for name, value in (("MEDIACACHE_PUBLIC_BASE_URL", self.public_base_url),
                            ("R2_PUBLIC_URL", self.r2_public_url), ("S3_ENDPOINT_URL", self.s3_endpoint_url)):
            if value is not None:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ConfigError(f"{name}={value!r} is not an http(s) URL; give one like https://media.example.com")
        if self.redis_url is not None:
            check_url_syntax("REDIS_URL", self.redis_url.get_secret_value(), _REDIS_EXAMPLE)
            scheme = urlsplit(self.redis_url.get_secret_value()).scheme
            if scheme not in ("redis", "rediss"):
                raise ConfigError(f"REDIS_URL has scheme {scheme!r}; use redis://host:port/db or rediss://...")
        self._check_parses()
        self._check_redis_failover_and_tls()
        try:
            self.allowed_network_list  # noqa: B018
        except ValueError as exc:
            raise ConfigError(
                f"MEDIACACHE_ALLOWED_NETWORKS={self.allowed_networks!r} is not a comma-separated list of "
                f"CIDR networks ({exc}); write it like 10.0.0.0/8,127.0.0.2/32") from exc
        self._check_webhooks()

        try:
            widths = self.thumb_width_list
        except ValueError:
            widths = ()
        if not widths or not all(16 <= w <= 4096 for w in widths):
            raise ConfigError(
                f"MEDIACACHE_THUMB_WIDTHS={self.thumb_widths!r} is not a comma-separated list of widths in "
                "pixels from 16 to 4096; write it like 320,640")
        if self.derive == "on" and not media_extra_installed():
            raise ConfigError(
                "MEDIACACHE_DERIVE=on, but the media libraries are not installed; install them with "
                "pip install 'mediacache[media]' or set MEDIACACHE_DERIVE=off")
        self.host_rules  # noqa: B018 - validates MEDIACACHE_HOST_LIMITS
        self.breaker_policy  # noqa: B018
        return self

    def _check_parses(self) -> None:
        # Whatever check_url_syntax let through must also parse for redis-py and SQLAlchemy; their
        # error texts quote the URL's parts, so only the masked URL is shown.
        from sqlalchemy.engine import make_url

        for name, value, parse in (("REDIS_URL", self.redis_url, lambda: self.redis_connection()),
                                   ("DATABASE_URL", self.database_url, lambda: make_url(self.sqlalchemy_url).port)):
            if value is None:
                continue
            try:
                parse()
            except Exception as exc:
                raise ConfigError(f"{name}={mask_url(value.get_secret_value())} cannot be parsed "
                                  f"({type(exc).__name__}); check its spelling and percent-encode special "
                                  "characters in the password") from None

    def _check_redis_failover_and_tls(self) -> None:
        if self.redis_sentinels:
            self.redis_sentinel_list  # noqa: B018 - validates the list
            if not self.redis_sentinel_master:
                raise ConfigError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not; give the master name "
                                  "from the Sentinels' `sentinel monitor NAME ...` line")
            if self.redis_url is not None:
                raise ConfigError("REDIS_URL and REDIS_SENTINELS are both set; with Sentinel give REDIS_PASSWORD "
                                  "and REDIS_DB for the primary and drop REDIS_URL")
        elif self.redis_sentinel_master:
            raise ConfigError(f"REDIS_SENTINEL_MASTER={self.redis_sentinel_master!r} is set but REDIS_SENTINELS is "
                              "not; list the Sentinels like sentinel-1:26379,sentinel-2:26379")
        if self.redis_tls_key_file is not None and self.redis_tls_cert_file is None:
            raise ConfigError("REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE; give the client certificate "
                              "that goes with the key")
        for name, path in (("REDIS_TLS_CA_FILE", self.redis_tls_ca_file),
                           ("REDIS_TLS_CERT_FILE", self.redis_tls_cert_file),
                           ("REDIS_TLS_KEY_FILE", self.redis_tls_key_file)):
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                raise ConfigError(f"{name}={str(path)!r} is not a readable file; give the path of a PEM file")

    def _check_webhooks(self) -> None:
        for url in self.webhook_url_list:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"MEDIACACHE_WEBHOOK_URL has {url!r}, which is not an http(s) URL; give "
                                  "comma-separated URLs like https://app.example.com/hooks/media")
        if self.webhook_url_list and self.webhook_secret is None:
            raise ConfigError("MEDIACACHE_WEBHOOK_URL is set but MEDIACACHE_WEBHOOK_SECRET is not; set it to a "
                              "Standard Webhooks secret: whsec_ followed by the base64 of 24 to 64 random bytes")
        if self.webhook_secret is not None:
            from mediacache.events.signing import check_secret

            check_secret(self.webhook_secret.get_secret_value())
        try:
            self.webhook_allowed_network_list  # noqa: B018
        except ValueError as exc:
            raise ConfigError(
                f"MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS={self.webhook_allowed_networks!r} is not a comma-separated "
                f"list of CIDR networks ({exc}); write it like 10.0.0.0/8,127.0.0.1/32") from exc

    def __repr_args__(self) -> Any:
        # SecretStr already hides secrets; DATABASE_URL and REDIS_URL are shown without passwords.
        for name, value in super().__repr_args__():
            if name == "database_url" and value is not None:
                yield name, self.database_display
            elif name == "redis_url" and value is not None:
                yield name, self.redis_display
            else:
                yield name, value


def media_extra_installed() -> bool:
    """True when the `media` extra's decoders can be imported (checked without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("pyvips", "av", "pillow_heif", "thash"))


def normalize_database_url(url: str) -> str:
    """Accepts the usual spellings of SQLite and PostgreSQL URLs; returns the async driver's."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"DATABASE_URL={mask_url(url)} is not a URL; use sqlite+aiosqlite:///path/to/file.db or "
            "postgresql://user:password@host:5432/dbname")
    drivers = {
        "sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
    driver = drivers.get(scheme.lower())
    if driver is None:
        raise ConfigError(
            f"DATABASE_URL={mask_url(url)} has a scheme that mediacache does not support; use "
            "sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname")
    if driver.startswith("postgresql"):
        # SQLite paths may hold any character; only a network URL has a password to split on.
        check_url_syntax("DATABASE_URL", url, "postgresql://user:p%40ss@host:5432/dbname")
    return f"{driver}://{rest}"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Reads the environment (and `env_file`, `.env` of the current directory by default; None: no
    file) into Settings; one ConfigError for any bad value."""
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc
    return settings.check()


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = Settings.model_fields.get(field)
        alias = info.validation_alias if info else None
        env_name = alias.choices[0] if isinstance(alias, AliasChoices) else field.upper()
        value = err.get("input")
        shown = "***" if info is not None and "Secret" in str(info.annotation) else repr(value)
        lines.append(f"{env_name}={shown}: {err['msg']}; fix the variable in the environment or .env")
    return "invalid configuration:\n  " + "\n  ".join(lines)
