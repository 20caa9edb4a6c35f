"""Bearer-token auth, /healthz and /readyz (with Redis down), /metrics against the statistics, `serve`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediacache.api.server import bind
from mediacache.errors import QueueUnavailableError
from mediacache.worker import metrics as worker_metrics
from tests.support.api import new_id, running_api
from tests.support.origin import Origin
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

TOKEN = "s3cret-token-ü"


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only: what is tested here is HTTP; both databases are covered in test_api.py."""
    path = tmp_path / "mediacache.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{path}"


WRITES = [("POST", "/api/assets", {"url": "http://127.0.0.1:9/a.jpg"}),
          ("POST", "/api/assets/batch", {"urls": ["http://127.0.0.1:9/a.jpg"]}),
          ("POST", "/api/assets/retry-failed", None),
          ("POST", "/api/assets/cleanup", {"days": 30})]
READS = [("GET", "/api/stats", None), ("GET", "/api/dashboard", None),
         ("POST", "/api/urls", {"values": [None], "original_urls": ["https://x.example/a"]})]


async def test_write_endpoints_refuse_a_missing_or_wrong_token(make_settings: SettingsFactory) -> None:
    token = "t0ken-" + new_id()
    async with running_api(make_settings, run_worker=False, api_token=token) as api:
        for method, path, payload in WRITES:
            missing = await api.client.request(method, path, json=payload)
            assert missing.status_code == 401, (path, missing.text)
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert missing.json()["error"] == "unauthorized"
            for header in (f"Bearer {token}x", f"Bearer {token[:-1]}", "Bearer", f"Basic {token}", token,
                           f"Bearer {TOKEN}".encode(), b"Bearer \xff\xfe", "Bearer ".ljust(5000, "a")):
                wrong = await api.client.request(method, path, json=payload, headers={"Authorization": header})
                assert wrong.status_code == 403, (path, header[:40], wrong.text)
                assert wrong.json()["error"] == "forbidden"
            right = await api.client.request(method, path, json=payload, headers={"Authorization": f"Bearer {token}"})
            assert right.status_code in (200, 202), (path, right.text)
        # Reads stay open unless MEDIACACHE_API_TOKEN_READS=true.
        for method, path, payload in READS:
            assert (await api.client.request(method, path, json=payload)).status_code == 200, path
        assert (await api.client.get("/")).status_code == 200


async def test_reads_need_the_token_when_configured(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False, api_token=TOKEN, api_token_reads=True) as api:
        # A non-ASCII token travels as UTF-8 bytes.
        auth = {"Authorization": ("Bearer " + TOKEN).encode()}
        for method, path, payload in [*READS, ("GET", f"/api/assets/{new_id()}", None)]:
            assert (await api.client.request(method, path, json=payload)).status_code == 401, path
            answer = await api.client.request(method, path, json=payload, headers=auth)
            assert answer.status_code in (200, 404), path
        # The page renders without figures; its script fetches them with the token.
        page = await api.client.get("/")
        assert page.status_code == 200 and "API token" in page.text
        assert (await api.client.get("/healthz")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_readyz_is_503_naming_redis_when_redis_is_down(make_settings: SettingsFactory) -> None:
    port = _closed_port()
    async with running_api(make_settings, run_worker=False, redis_port=port, api_token=TOKEN) as api:
        assert (await api.client.get("/healthz")).json() == {"status": "ok"}
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        # Anonymous callers learn that Redis is away, not where it lives.
        assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable", "storage": "ok"}
        anonymous_dashboard = (await api.client.get("/api/dashboard")).json()
        assert anonymous_dashboard["queue_error"] == "unavailable" and str(port) not in ready.text
        api.client.headers["Authorization"] = f"Bearer {TOKEN}"
        checks = (await api.client.get("/readyz")).json()["checks"]
        assert checks["database"] == "ok" and checks["storage"] == "ok"
        assert checks["redis"] != "ok" and "Redis" in checks["redis"]

        queued = await api.client.post("/api/assets", json={"url": "http://127.0.0.1:9/a.jpg"})
        assert queued.status_code == 503 and queued.json()["error"] == "queue_unavailable"
        assert (await api.cache.cache_stats()).total == 0  # nothing left PENDING without a job
        assert (await api.client.get("/api/stats")).status_code == 503
        dashboard = (await api.client.get("/api/dashboard")).json()
        assert dashboard["queue"] is None and "Redis" in dashboard["queue_error"]
        families = {f.name: f for f in text_string_to_metric_families((await api.client.get("/metrics")).text)}
        assert families["mediacache_queue_up"].samples[0].value == 0
        assert "mediacache_queue_jobs" not in families


async def test_a_server_with_a_worker_refuses_to_start_without_redis(make_settings: SettingsFactory) -> None:
    with pytest.raises(QueueUnavailableError, match="Redis"):
        async with running_api(make_settings, redis_port=_closed_port()):
            pass


async def test_readyz_is_200_when_everything_answers(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "storage": "ok"}}


async def test_metrics_parse_and_match_the_statistics(make_settings: SettingsFactory, origin: Origin) -> None:
    async with running_api(make_settings) as api:
        sizes = [1500, 2500, 3500]
        ok = (await api.client.post("/api/assets/batch", json={"urls": [
            origin.url(f"/media/{40 + i}.jpg?size={s}") for i, s in enumerate(sizes)]})).json()["ids"]
        bad = (await api.client.post("/api/assets/batch", json={"urls": [
            origin.url("/status/404"), origin.url("/status/403")]})).json()["ids"]
        await api.wait_settled(ok + bad)

        async def queue_settled() -> bool:
            # The row is settled a moment before BullMQ moves the job out of "active".
            q = await api.cache.queue_stats()
            return (q.active, q.waiting, q.completed, q.failed) == (0, 0, 3, 2)
        await wait_until(queue_settled, what="BullMQ to finish the five jobs")
        # Observed as a worker would (the job handler reports each finished attempt).
        worker_metrics.observe_download(0.3)
        worker_metrics.observe_download(1.2, "not_found")

        response = await api.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        stats = await api.cache.cache_stats()
        queue = await api.cache.queue_stats()

        assets = {s.labels["status"]: s.value for s in families["mediacache_assets"].samples}
        assert assets == {"PENDING": stats.pending, "DOWNLOADING": stats.downloading, "CACHED": stats.cached,
                          "FAILED": stats.failed}
        assert (stats.cached, stats.failed) == (3, 2)
        failed = {s.labels["kind"]: s.value for s in families["mediacache_assets_failed"].samples}
        assert {k: v for k, v in failed.items() if v} == stats.failed_by_kind == {"not_found": 1, "forbidden": 1}
        jobs = {s.labels["state"]: s.value for s in families["mediacache_queue_jobs"].samples}
        assert jobs == queue.as_dict()
        assert families["mediacache_stored_bytes"].samples[0].value == sum(sizes)
        assert families["mediacache_queue_up"].samples[0].value == 1

        histogram = families["mediacache_download_seconds"]
        assert histogram.type == "histogram"
        counts = {s.labels["outcome"]: s.value for s in histogram.samples if s.name.endswith("_count")}
        assert counts["cached"] >= 1 and counts["failed"] >= 1
        downloads = {s.labels["outcome"]: s.value for s in families["mediacache_downloads"].samples
                     if s.name.endswith("_total")}
        assert downloads["cached"] >= 1
        kinds = {s.labels["kind"]: s.value for s in families["mediacache_download_failures"].samples
                 if s.name.endswith("_total")}
        assert kinds["not_found"] >= 1


def _free_port() -> int:
    return _closed_port()


async def test_serve_command_serves_and_exits_0_on_sigterm(make_settings: SettingsFactory, origin: Origin,
                                                            tmp_path: Path) -> None:
    settings = make_settings()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MEDIACACHE_", "DATABASE_"))}
    env.update({
        "DATABASE_URL": settings.sqlalchemy_url, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(settings.redis_port),
        "MEDIACACHE_QUEUE_PREFIX": settings.queue_prefix, "MEDIACACHE_DATA_DIR": str(settings.data_dir),
        "MEDIACACHE_SIGNING_SECRET": "test-secret", "MEDIACACHE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "MEDIACACHE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    })
    # Popen only starts the process; the waits below run in a thread.
    log_path = tmp_path / "serve.log"
    log_file = log_path.open("wb")  # a file, not a pipe: a full pipe would block the server's logging
    proc = subprocess.Popen([sys.executable, "-m", "mediacache", "serve", "--port", str(port)],  # noqa: ASYNC220
                            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            async def up() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await wait_until(up, timeout_s=60, what="`mediacache serve` to answer")
            queued = await client.post("/api/assets", json={"url": origin.url("/media/3.jpg?size=999")})
            asset_id = queued.json()["id"]

            async def cached() -> bool:
                return (await client.get(f"/api/assets/{asset_id}")).json()["status"] == "CACHED"
            await wait_until(cached, what="the in-process worker to cache the asset")
            got = await client.get(f"/media/{asset_id}", follow_redirects=True)
            assert got.status_code == 200 and len(got.content) == 999
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, log_path.read_text()
        assert "server stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    for collector in worker_metrics.worker_collectors():
        registry.register(collector)
    return registry.get_sample_value(name, labels) or 0.0


def test_download_attempt_counts_each_ending_of_an_attempt() -> None:
    from mediacache.domain import ErrorKind
    from mediacache.errors import DatabaseError, FetchError

    class Final(Exception):  # shaped as the handler's FinalFailure: raised from the FetchError
        pass

    class LeaseHeld(Exception):
        retry_at = 0

    before = {k: _sample("mediacache_download_failures_total", kind=k) for k in ("not_found", "transient")}
    cached_before = _sample("mediacache_download_seconds_count", outcome="cached")
    failed_before = _sample("mediacache_download_seconds_count", outcome="failed")

    with worker_metrics.download_attempt():
        pass
    for error in (FetchError(ErrorKind.NOT_FOUND, "404"), DatabaseError("down")):
        with pytest.raises(type(error)), worker_metrics.download_attempt():
            raise error
    with pytest.raises(Final), worker_metrics.download_attempt():
        raise Final("final") from FetchError(ErrorKind.NOT_FOUND, "404")
    for uncounted in (LeaseHeld(), asyncio.CancelledError()):
        with pytest.raises(type(uncounted)), worker_metrics.download_attempt():
            raise uncounted

    assert _sample("mediacache_download_seconds_count", outcome="cached") == cached_before + 1
    assert _sample("mediacache_download_seconds_count", outcome="failed") == failed_before + 3
    assert _sample("mediacache_download_failures_total", kind="not_found") == before["not_found"] + 2
    assert _sample("mediacache_download_failures_total", kind="transient") == before["transient"] + 1


async def test_connections_of_the_listening_socket_send_without_nagle_delay() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it uvicorn's response
    body waited for the client's delayed ACK of the head, about 40 ms per keep-alive request."""
    accepted: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()

    class Keep(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport.get_extra_info("socket"))

    sock = bind("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Keep, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        conn = await asyncio.wait_for(accepted, 10)
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_keep_alive_requests_are_not_held_back(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        assert (await api.client.get("/healthz")).status_code == 200
        times_ms = []
        for _ in range(9):
            start = asyncio.get_running_loop().time()
            assert (await api.client.get("/healthz")).status_code == 200
            times_ms.append((asyncio.get_running_loop().time() - start) * 1000)
        # With the delay every one of them took 40 ms or more; without, about 1 ms.
        assert sorted(times_ms)[len(times_ms) // 2] < 30, times_ms
