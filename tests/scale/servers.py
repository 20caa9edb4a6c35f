"""Real servers for the scale tests, each started on 127.0.0.1 on free ports in a temp dir.

- `sentinel_cluster()`: a Redis primary, one replica and three Sentinels (`redis-server --sentinel`),
  with `kill_primary()` to SIGKILL the primary and wait for the Sentinels to agree on a new one.
- `make_certs()` and `tls_redis()`: a CA, a server and a client certificate made with the `openssl`
  command line, and a TLS-only redis-server (`--port 0 --tls-port P`).
- `pgbouncer()`: Debian's PgBouncer in transaction pool mode in front of the local PostgreSQL.

Every wait polls a condition against a deadline; nothing sleeps for a fixed time. Every context
manager stops what it started (SIGTERM, then SIGKILL) and removes its temp dir, also when the body
raises. Processes started from the main thread also get PR_SET_PDEATHSIG, so a pytest that is
itself killed does not leave servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

HOST = "127.0.0.1"
PGBOUNCER_INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer"


# ---- small tools ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.02,
             procs: tuple[Server, ...] = ()) -> Any:
    """Polls `predicate` until it returns something truthy (and returns that); exceptions count as
    "not yet". Fails with `what` (and the last exception) after `timeout_s`, or at once when one of
    `procs` has exited."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last = exc
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(
                    f"{p.name} exited with {p.proc.returncode} while waiting for {what}:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what} (last error: {last!r})")
        time.sleep(interval_s)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (after any uid change, which would clear it).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def need_binary(name: str, hint: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if path is None:
        raise FileNotFoundError(f"{name} is needed for the scale tests: {hint}")
    return path


@dataclass
class Server:
    """One child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, *, user: str | None = None) -> Server:
        out = open(log, "ab")  # the child gets its own copy of the descriptor; ours is closed below
        try:
            pdeath = threading.current_thread() is threading.main_thread()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent if pdeath else None, user=user)
        finally:
            out.close()
        return cls(name, proc, log)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def _workdir(prefix: str, *, owner: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Group:
    """Servers stopped in reverse order of start, whatever happens."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for s in reversed(self.servers):
            with contextlib.suppress(Exception):
                s.stop()


# ---- Redis primary + replica + three Sentinels ------------------------------------------------

@dataclass
class SentinelCluster:
    master_name: str
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    nodes: dict[int, Server]
    sentinels: list[Server]
    password: str | None = None
    sentinel_password: str | None = None
    down_after_ms: int = 1000
    failovers: list[dict[str, float]] = field(default_factory=list)

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [(HOST, p) for p in self.sentinel_ports]

    def node_client(self, port: int, **kw: Any) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, password=self.password, socket_timeout=2,
                           socket_connect_timeout=1, decode_responses=True, **kw)

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, password=self.sentinel_password, socket_timeout=2,
                           socket_connect_timeout=1, decode_responses=True)

    def master_seen_by(self, port: int) -> int | None:
        with self.sentinel_client(port) as c:
            addr = c.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
        return int(addr[1]) if addr else None

    def masters_seen(self) -> list[int | None]:
        seen: list[int | None] = []
        for p, s in zip(self.sentinel_ports, self.sentinels, strict=True):
            try:
                seen.append(self.master_seen_by(p) if s.alive else None)
            except redis.RedisError:
                seen.append(None)
        return seen

    def current_primary(self) -> int:
        ports = {p for p in self.masters_seen() if p is not None}
        if len(ports) != 1:
            raise RuntimeError(f"sentinels disagree on the primary: {self.masters_seen()}")
        return ports.pop()

    def role(self, port: int) -> str:
        with self.node_client(port) as c:
            return str(c.info("replication")["role"])

    def _ready(self) -> bool:
        """Every sentinel sees the primary, the replica and both other sentinels, and the replica
        is in sync: only then can a failover get its quorum and a replica to promote."""
        with self.node_client(self.primary_port) as c:
            info = c.info("replication")
        if info.get("connected_slaves") != 1 or info["slave0"]["state"] != "online":
            return False
        for port in self.sentinel_ports:
            with self.sentinel_client(port) as c:
                m = c.execute_command("SENTINEL", "master", self.master_name)
            m = dict(zip(m[::2], m[1::2], strict=True)) if isinstance(m, list) else m
            if int(m["num-slaves"]) != 1 or int(m["num-other-sentinels"]) != 2 or m["flags"] != "master":
                return False
        return True

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        wait_for(self._ready, timeout_s=timeout_s, what="the sentinels to see the primary, replica and each other",
                 procs=(*self.nodes.values(), *self.sentinels), interval_s=0.05)

    def cut_replication(self) -> int:
        """Cuts the replica off its primary, for good: a wrong masterauth on the replica, then
        CLIENT KILL TYPE replica on the primary (without the first, the replica is back within
        milliseconds). Writes acknowledged from now on are on the primary only: kill it and they
        are lost. Returns the replica's port; `restore_replication(port)` undoes the masterauth."""
        primary = self.current_primary()
        replica = next(p for p in self.nodes if p != primary and self.nodes[p].alive)
        with self.node_client(replica) as c:
            c.config_set("masterauth", "not-the-password")
        with self.node_client(primary) as c:
            c.client_kill_filter(_type="replica")
        wait_for(lambda: self.role_info(replica).get("master_link_status") == "down", timeout_s=5,
                 what="the replica to see its link down", interval_s=0.005)
        return replica

    def restore_replication(self, replica: int) -> None:
        with self.node_client(replica) as c:
            c.config_set("masterauth", self.password or "")

    def role_info(self, port: int) -> dict[str, Any]:
        with self.node_client(port) as c:
            return dict(c.info("replication"))

    def kill_primary(self, timeout_s: float = 30.0) -> dict[str, float]:
        """SIGKILLs the primary; waits until every sentinel names another node as primary and that
        node says it is one. Returns times (monotonic) and the seconds the failover took."""
        old = self.current_primary()
        t_kill = time.monotonic()
        self.nodes[old].kill()

        def promoted() -> int | None:
            seen = self.masters_seen()
            if all(p is not None and p != old for p in seen) and len(set(seen)) == 1:
                new = seen[0]
                assert new is not None
                return new if self.role(new) == "master" else None
            return None

        new = wait_for(promoted, timeout_s=timeout_s, what=f"a new primary after killing :{old}", interval_s=0.02)
        t_new = time.monotonic()
        result = {"old_port": old, "new_port": new, "t_kill": t_kill, "t_promoted": t_new,
                  "failover_s": t_new - t_kill}
        self.failovers.append(result)
        return result


def _redis_node_argv(binary: str, port: int, workdir: Path, password: str | None) -> list[str]:
    argv = [binary, "--bind", HOST, "--port", str(port), "--dir", str(workdir), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
            "--dbfilename", f"dump-{port}.rdb", "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0"]
    if password:
        argv += ["--requirepass", password, "--masterauth", password]
    return argv


@contextlib.contextmanager
def sentinel_cluster(*, master_name: str = "mediacache", down_after_ms: int = 1000,
                     failover_timeout_ms: int = 3000, password: str | None = None,
                     sentinel_password: str | None = None) -> Iterator[SentinelCluster]:
    binary = need_binary("redis-server", "apt-get install -y redis-server")
    group = _Group()
    with _workdir("mc-sentinel-") as work:
        try:
            primary_port, replica_port = free_port(), free_port()
            nodes = {
                primary_port: group.add(Server.start(f"redis primary :{primary_port}",
                                                     _redis_node_argv(binary, primary_port, work, password),
                                                     work / f"redis-{primary_port}.log")),
            }
            nodes[replica_port] = group.add(Server.start(
                f"redis replica :{replica_port}",
                [*_redis_node_argv(binary, replica_port, work, password), "--replicaof", HOST, str(primary_port)],
                work / f"redis-{replica_port}.log"))
            cluster = SentinelCluster(master_name, primary_port, replica_port, [], nodes, [],
                                      password=password, sentinel_password=sentinel_password,
                                      down_after_ms=down_after_ms)

            def synced() -> bool:
                with cluster.node_client(replica_port) as c:
                    return c.info("replication").get("master_link_status") == "up"

            wait_for(synced, timeout_s=15, what="the replica to sync", procs=tuple(nodes.values()))
            # Sentinels start after the replica is in sync, so their first INFO of the primary
            # already lists it (otherwise they learn of it only at the next 10 s INFO).
            for i in range(3):
                port = free_port()
                conf = work / f"sentinel-{port}.conf"
                lines = [
                    f"port {port}", f"bind {HOST}", "daemonize no", "protected-mode no", f"dir {work}",
                    f"logfile {work}/sentinel-{port}.log",
                    f"sentinel monitor {master_name} {HOST} {primary_port} 2",
                    f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                    f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {master_name} 1",
                ]
                if password:
                    lines.append(f"sentinel auth-pass {master_name} {password}")
                if sentinel_password:
                    # A sentinel with requirepass also needs the password of its peers.
                    lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"]
                conf.write_text("\n".join(lines) + "\n")
                # The log goes to `logfile`; stdout catches start-up errors before it is opened.
                cluster.sentinels.append(group.add(Server.start(
                    f"sentinel {i} :{port}", [binary, str(conf), "--sentinel"], work / f"sentinel-{port}.out")))
                cluster.sentinel_ports.append(port)
            cluster.wait_ready()
            yield cluster
        finally:
            group.stop_all()


# ---- TLS --------------------------------------------------------------------------------------

@dataclass
class Certs:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: the "wrong CA" case


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, with the
    `openssl` command line (EC P-256 keys, valid for 2 days), and an unrelated second CA."""
    need_binary("openssl", "apt-get install -y openssl")
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=mediacache test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=d)
    exts = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                  "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n",
        "client": "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n",
    }
    for name, ext in exts.items():
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=mediacache test {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return Certs(d, d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
                 d / "other-ca.crt")


@dataclass
class TlsRedis:
    port: int
    certs: Certs
    require_client_cert: bool
    server: Server

    def connection(self, **overrides: Any) -> dict[str, Any]:
        """redis-py keyword arguments for this server (what a dict `connection` gives bullmq)."""
        opts: dict[str, Any] = {
            "host": HOST, "port": self.port, "socket_timeout": 30.0, "socket_connect_timeout": 5.0,
            "ssl": True, "ssl_ca_certs": str(self.certs.ca), "ssl_cert_reqs": "required",
            "ssl_certfile": str(self.certs.client_cert), "ssl_keyfile": str(self.certs.client_key),
        }
        opts.update(overrides)
        return opts


def redis_has_tls(binary: str) -> bool:
    """The Debian build links libssl into redis-server itself (TLS built in, not a module)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    return "libssl" in out


@contextlib.contextmanager
def tls_redis(*, require_client_cert: bool = True) -> Iterator[TlsRedis]:
    binary = need_binary("redis-server", "apt-get install -y redis-server")
    if not redis_has_tls(os.path.realpath(binary)):
        raise RuntimeError(f"{binary} is built without TLS")
    with _workdir("mc-tls-redis-") as work:
        certs = make_certs(work / "certs")
        port = free_port()
        server = Server.start(f"tls redis :{port}", [
            binary, "--bind", HOST, "--port", "0", "--tls-port", str(port), "--dir", str(work),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes" if require_client_cert else "no",
        ], work / "redis.log")
        try:
            tls = TlsRedis(port, certs, require_client_cert, server)

            def pong() -> bool:
                with redis.Redis(**{**tls.connection(), "socket_timeout": 2}) as c:
                    return bool(c.ping())

            wait_for(pong, timeout_s=15, what="the TLS redis-server to answer", procs=(server,))
            yield tls
        finally:
            server.stop()


# ---- PgBouncer --------------------------------------------------------------------------------

@dataclass
class PgBouncer:
    port: int
    database: str
    server: Server
    ini: Path
    version: str

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@{HOST}:{self.port}/{self.database}"

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """A command on PgBouncer's admin console (`SHOW POOLS`, ...), over psql."""
        out = subprocess.run(["psql", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", "pgbouncer",
                              "-At", "-F", "\t", "-c", command], capture_output=True, text=True, check=True, timeout=10)
        return [tuple(line.split("\t")) for line in out.stdout.splitlines()]


def pgbouncer_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].split()[-1]


def _psql_admin(pg_dsn: str, sql: str) -> None:
    subprocess.run(["psql", pg_dsn, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], check=True, capture_output=True,
                   timeout=30)


@contextlib.contextmanager
def pgbouncer(*, pg_host: str = HOST, pg_port: int = 5432, pool_size: int = 5, max_client_conn: int = 200,
              extra: dict[str, str] | None = None) -> Iterator[PgBouncer]:
    """PgBouncer (pool_mode=transaction, auth_type=trust) in front of a database it creates.

    PgBouncer refuses to run as root, so as root it runs as the `postgres` user (from a temp dir
    that user owns)."""
    binary = need_binary("pgbouncer", f"install it with `{PGBOUNCER_INSTALL}`")
    need_binary("psql", "apt-get install -y postgresql-client")
    user = "postgres" if os.geteuid() == 0 else None
    admin_dsn = f"postgresql://postgres@{pg_host}:{pg_port}/postgres"
    database = f"mc_scale_{os.getpid()}_{os.urandom(3).hex()}"
    with _workdir("mc-pgbouncer-", owner=user) as work:
        _psql_admin(admin_dsn, f'CREATE DATABASE "{database}"')
        server: Server | None = None
        try:
            port = free_port()
            (work / "userlist.txt").write_text('"postgres" ""\n')
            settings = {
                "listen_addr": HOST, "listen_port": str(port), "unix_socket_dir": "",
                "auth_type": "trust", "auth_file": str(work / "userlist.txt"), "admin_users": "postgres",
                "pool_mode": "transaction", "max_client_conn": str(max_client_conn),
                "default_pool_size": str(pool_size), "min_pool_size": "0", "reserve_pool_size": "0",
                "pidfile": str(work / "pgbouncer.pid"), "logfile": "",
                "ignore_startup_parameters": "extra_float_digits", "server_login_retry": "1",
                "log_connections": "0", "log_disconnections": "0",
            }
            settings.update(extra or {})
            ini = work / "pgbouncer.ini"
            target = f"host={pg_host} port={pg_port} dbname={database} user=postgres"
            ini.write_text(f"[databases]\n{database} = {target}\n\n"
                           "[pgbouncer]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
            if user is not None:
                pw = pwd.getpwnam(user)
                for f in work.iterdir():
                    os.chown(f, pw.pw_uid, pw.pw_gid)
            server = Server.start(f"pgbouncer :{port}", [binary, str(ini)], work / "pgbouncer.log", user=user)
            bouncer = PgBouncer(port, database, server, ini, pgbouncer_version(binary))

            def answers() -> bool:
                subprocess.run(["psql", "-h", HOST, "-p", str(port), "-U", "postgres", "-d", database, "-qAtc",
                                "SELECT 1"], check=True, capture_output=True, timeout=5)
                return True

            wait_for(answers, timeout_s=15, what="pgbouncer to answer", procs=(server,), interval_s=0.05)
            yield bouncer
        finally:
            if server is not None:
                server.stop()
            _psql_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
