// Real processes for the tests: `python -m mediacache serve` on a fresh data directory and a BullMQ
// prefix of its own, and a small origin HTTP server that serves generated media and faults.
// Everything listens on 127.0.0.1 only.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { MiniRedis } from "./redis.js";

/** The package's own folder (this file is build-test/helpers/server.js once compiled). */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export const REDIS_HOST = "127.0.0.1";
export const REDIS_PORT = 6379;

/** The Python that runs mediacache: `$MEDIACACHE_PYTHON`, else the repository's `.venv`. */
export function pythonPath(): string {
  const given = process.env["MEDIACACHE_PYTHON"];
  if (!given) return resolve(PACKAGE_DIR, "..", "..", ".venv", "bin", "python");
  // A bare name ("python3") is looked up on PATH; a relative path is taken from the package folder.
  if (!given.includes("/") || isAbsolute(given)) return given;
  return resolve(PACKAGE_DIR, given);
}

const STARTUP_DEADLINE_MS = 60_000;
const STOP_DEADLINE_MS = 20_000;

export interface MediacacheServer {
  baseUrl: string;
  prefix: string;
  dataDir: string;
  /** What the server printed (the last 64 KiB), for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Extra environment, e.g. `MEDIACACHE_API_TOKEN`. */
  env?: Record<string, string>;
  /** Extra command-line arguments after `serve`, e.g. `--no-worker`. */
  args?: string[];
}

/** Variables of the caller's environment that would point the server at other services. */
const FOREIGN = /^(REDIS_|R2_|S3_|MEDIACACHE_|DATABASE_URL$|AWS_)/;

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts `python -m mediacache serve` on a free port of 127.0.0.1 and resolves once `/healthz`
 * answers. The caller must `stop()` it: that ends the process, deletes its Redis keys and its data
 * directory.
 */
export async function startMediacache(options: StartOptions = {}): Promise<MediacacheServer> {
  const redis = await MiniRedis.connect(REDIS_HOST, REDIS_PORT).catch((err: Error) => {
    throw new Error(`${err.message}; the tests need a Redis on ${REDIS_HOST}:${REDIS_PORT}`);
  });
  try {
    await redis.command("PING");
  } finally {
    redis.close();
  }
  let lastError: unknown;
  // The free port is found by binding and closing it; should another process take it in between,
  // the server exits at once ("cannot listen") and another port is tried.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(await freePort(), options);
    } catch (err) {
      lastError = err;
      if (!(err instanceof PortTaken)) throw err;
    }
  }
  throw lastError;
}

class PortTaken extends Error {}

async function startOnce(port: number, options: StartOptions): Promise<MediacacheServer> {
  const python = pythonPath();
  const dataDir = mkdtempSync(join(tmpdir(), "mediacache-ts-"));
  const prefix = `mctest-ts-${randomBytes(6).toString("hex")}`;
  const baseUrl = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !FOREIGN.test(name)) env[name] = value;
  }
  Object.assign(env, {
    MEDIACACHE_DATA_DIR: dataDir,
    MEDIACACHE_STORAGE: "local",
    REDIS_HOST,
    REDIS_PORT: String(REDIS_PORT),
    MEDIACACHE_QUEUE_PREFIX: prefix,
    MEDIACACHE_ALLOWED_NETWORKS: "127.0.0.0/8",
    MEDIACACHE_SIGNING_SECRET: "test",
    MEDIACACHE_PUBLIC_BASE_URL: baseUrl,
    // Light on a shared 2-core machine, and quick to stop.
    MEDIACACHE_CONCURRENCY: "4",
    MEDIACACHE_SHUTDOWN_GRACE_S: "2",
    ...options.env,
  });

  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-65536);
  };
  const child = spawn(
    python,
    ["-m", "mediacache", "serve", "--host", "127.0.0.1", "--port", String(port), ...(options.args ?? [])],
    // The data directory as working directory: no `.env` of the caller's folder is read.
    { cwd: dataDir, env, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((done) => {
    child.once("exit", (code) => {
      running.delete(child);
      done(code);
    });
  });
  let spawnError: Error | null = null;
  child.once("error", (err) => {
    spawnError = err;
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_DEADLINE_MS);
      await exited;
      clearTimeout(timer);
    }
    try {
      const redis = await MiniRedis.connect(REDIS_HOST, REDIS_PORT);
      try {
        await redis.deleteMatching(`${prefix}:*`);
      } finally {
        redis.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  };

  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  for (;;) {
    if (spawnError !== null) {
      await stop();
      throw new Error(`cannot run ${python} (set MEDIACACHE_PYTHON to the Python that has mediacache installed): ${
        (spawnError as Error).message}`);
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      const message = `mediacache serve exited (${child.exitCode ?? child.signalCode}) before answering /healthz:\n${output}`;
      throw /cannot listen/.test(output) ? new PortTaken(message) : new Error(message);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`mediacache serve did not answer /healthz within ${STARTUP_DEADLINE_MS} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { baseUrl, prefix, dataDir, log: () => output, stop };
}

/** A port of 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolvePort(port));
    });
  });
}

// ---- the origin ---------------------------------------------------------------------------------

export interface Origin {
  baseUrl: string;
  /** How many requests each path got. */
  hits: Map<string, number>;
  close(): Promise<void>;
}

export type Route = (req: IncomingMessage, res: ServerResponse) => void;

/** An HTTP server on 127.0.0.1 answering `routes` by path (query ignored), 404 for anything else. */
export async function startOrigin(routes: Record<string, Route>): Promise<Origin> {
  const hits = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server = createHttpServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://origin").pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const route = routes[path];
    if (route) {
      route(req, res);
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    }
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((done) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => done());
      }),
  };
}
