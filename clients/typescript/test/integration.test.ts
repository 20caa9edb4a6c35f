// The client against a real `python -m mediacache serve` (SQLite and local storage in a fresh data
// directory, the Redis on 127.0.0.1:6379 under a prefix of its own) downloading from an origin
// server of the test's own. The steps run in order and build on each other: the counts that
// getStats and cleanup report are exact.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";

import {
  ASSET_RECORD_KEYS,
  ASSET_STATUSES,
  CACHE_STATS_KEYS,
  CLEANUP_REQUEST_KEYS,
  CLEANUP_RESULT_KEYS,
  ERROR_BODY_KEYS,
  ForbiddenError,
  InvalidRequestError,
  MediaCacheApiError,
  MediaCacheClient,
  QUEUE_BATCH_REQUEST_KEYS,
  QUEUE_REQUEST_KEYS,
  QUEUE_STATS_KEYS,
  QUEUED_ASSET_KEYS,
  QUEUED_BATCH_KEYS,
  RESOLVE_REQUEST_KEYS,
  RESOLVED_URLS_KEYS,
  RETRIED_RESULT_KEYS,
  STATS_KEYS,
  UnauthorizedError,
  type AssetRecord,
  type FetchLike,
} from "mediacache-client";

import { makePng } from "./helpers/png.js";
import { startMediacache, startOrigin, type MediacacheServer, type Origin } from "./helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SETTLE_MS = 30_000;
const SLOW_MS = 4_000;

const images = new Map<string, Buffer>();
for (const [n, name] of ["one", "two", "three", "four", "video", "cover", "avatar", "photo1", "photo2", "slow"].entries()) {
  images.set(`/img/${name}.png`, makePng(n + 1));
}

function png(path: string): Buffer {
  const body = images.get(path);
  assert.ok(body, `no image ${path}`);
  return body;
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

async function download(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

describe("MediaCacheClient against a real mediacache serve", () => {
  let origin: Origin;
  let server: MediacacheServer;
  let client: MediaCacheClient;
  /** Every request the client made, as "METHOD path". */
  const calls: string[] = [];
  const settled = new Set<string>(); // asset ids the steps below left CACHED or FAILED
  let firstId = "";
  let firstUrl = "";

  before(async () => {
    const routes: Record<string, (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void> = {};
    for (const [path, body] of images) {
      routes[path] = (_req, res) => {
        res.writeHead(200, { "content-type": "image/png", "content-length": body.length });
        res.end(body);
      };
    }
    routes["/img/slow.png"] = (_req, res) => {
      const body = png("/img/slow.png");
      setTimeout(() => {
        res.writeHead(200, { "content-type": "image/png", "content-length": body.length });
        res.end(body);
      }, SLOW_MS).unref();
    };
    origin = await startOrigin(routes);
    server = await startMediacache();
    const counting: FetchLike = (input, init) => {
      calls.push(`${init?.method ?? "GET"} ${new URL(input).pathname}`);
      return fetch(input, init);
    };
    client = new MediaCacheClient({ baseUrl: server.baseUrl, fetch: counting });
  });

  after(async () => {
    await server?.stop();
    await origin?.close();
  });

  test("cacheImage queues one URL; wait sees it CACHED; getUrl gives a /files/ link with the same bytes", async () => {
    const url = `${origin.baseUrl}/img/one.png`;
    const id = await client.cacheImage(url);
    assert.match(id, UUID);
    const early = await client.getAsset(id);
    assert.ok(early);
    assert.equal(early.id, id);
    assert.equal(early.original_url, url);

    const [record] = await client.wait([id], SETTLE_MS);
    assert.ok(record, "the asset exists");
    assert.equal(record.status, "CACHED", `not cached: ${JSON.stringify(record)}`);
    settled.add(id);
    assert.equal(record.size_bytes, png("/img/one.png").length);
    assert.equal(record.sha256, sha256(png("/img/one.png")));
    assert.equal(record.content_type, "image/png");
    assert.ok(record.cache_key);
    assert.ok(record.cached_at);
    assert.equal(record.error, null);

    const stored = await client.getUrl(id);
    assert.ok(stored);
    assert.ok(stored.startsWith(`${server.baseUrl}/files/`), `not a local storage link: ${stored}`);
    const got = await download(stored);
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, png("/img/one.png"));
    // The record's url is the stored copy too (a signed link of its own).
    assert.ok(record.url?.startsWith(`${server.baseUrl}/files/`));
    firstId = id;
    firstUrl = stored;
  });

  test("cacheImages queues a batch, ids in input order; getUrls resolves them in one request", async () => {
    const paths = ["/img/two.png", "/img/three.png", "/img/four.png"];
    const urls = paths.map((p) => `${origin.baseUrl}${p}`);
    const ids = await client.cacheImages(urls);
    assert.equal(ids.length, 3);
    assert.equal(new Set(ids).size, 3);
    for (const id of ids) assert.match(id, UUID);

    const records = await client.wait(ids, SETTLE_MS);
    records.forEach((rec, i) => {
      assert.ok(rec);
      assert.equal(rec.status, "CACHED", JSON.stringify(rec));
      assert.equal(rec.original_url, urls[i], "ids are in input order");
      assert.equal(rec.sha256, sha256(png(paths[i] as string)));
      settled.add(rec.id);
    });

    const before = calls.length;
    const links = await client.getUrls(ids);
    assert.equal(calls.length - before, 1, "one request for the whole list");
    assert.deepEqual(calls.at(-1), "POST /api/urls");
    for (const [i, link] of links.entries()) {
      assert.ok(link?.startsWith(`${server.baseUrl}/files/`), String(link));
      assert.deepEqual((await download(link as string)).body, png(paths[i] as string));
    }

    // No value, and an id nobody knows: the original URL given for it.
    const unknown = "00000000-0000-4000-8000-000000000000";
    const mixed = await client.getUrls([ids[0], null, unknown], [null, "https://cdn.example/a.png", "https://cdn.example/b.png"]);
    assert.ok(mixed[0]?.startsWith(`${server.baseUrl}/files/`));
    assert.deepEqual(mixed.slice(1), ["https://cdn.example/a.png", "https://cdn.example/b.png"]);
    assert.equal(await client.getUrl(unknown), null);
    assert.equal(await client.getUrl(unknown, "https://cdn.example/c.png"), "https://cdn.example/c.png");
  });

  test("cacheTikTokPostMedia queues every URL in one batch request, null where a URL is missing, images in order", async () => {
    const u = (name: string) => `${origin.baseUrl}/img/${name}.png`;
    const before = calls.length;
    const media = await client.cacheTikTokPostMedia({
      videoUrl: u("video"),
      coverUrl: u("cover"),
      musicUrl: null,
      avatarUrl: u("avatar"),
      images: [
        { url: u("photo1"), width: 1080, height: 1920 },
        { url: u("photo2"), width: 720, height: 1280 },
      ],
    });
    assert.deepEqual(calls.slice(before), ["POST /api/assets/batch"]);
    assert.equal(media.music, null);
    assert.deepEqual(media.images.map((i) => [i.width, i.height]), [[1080, 1920], [720, 1280]]);

    const expected: [string | null, string][] = [
      [media.video, u("video")],
      [media.cover, u("cover")],
      [media.avatar, u("avatar")],
      [media.images[0]?.id ?? null, u("photo1")],
      [media.images[1]?.id ?? null, u("photo2")],
    ];
    const ids = expected.map(([id]) => {
      assert.ok(id);
      assert.match(id, UUID);
      return id;
    });
    assert.equal(new Set(ids).size, 5);
    const records = await client.wait(ids, SETTLE_MS);
    records.forEach((rec, i) => {
      assert.ok(rec);
      assert.equal(rec.original_url, expected[i]?.[1], "each slot holds the asset of its own URL");
      assert.equal(rec.status, "CACHED", JSON.stringify(rec));
      settled.add(rec.id);
    });
  });

  test("getAsset gives null for an unknown id, and for something that is no id (no such asset)", async () => {
    assert.equal(await client.getAsset("00000000-0000-4000-8000-000000000000"), null);
    // The server matches only UUID paths: anything else names no asset, a 404 like an unknown id.
    assert.equal(await client.getAsset("not-an-id"), null);
  });

  test("a bad URL gives MediaCacheApiError 422 invalid_url with the server's detail, and queues nothing", async () => {
    const totalBefore = (await client.getStats()).cache.total;
    for (const bad of ["ftp://x", "http://user:pw@x/"]) {
      const raw = await fetch(`${server.baseUrl}/api/assets`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ url: bad }),
      });
      const body = (await raw.json()) as { error: string; detail: string };
      assert.equal(raw.status, 422);

      await assert.rejects(client.cacheImage(bad), (err: unknown) => {
        assert.ok(err instanceof MediaCacheApiError, String(err));
        assert.ok(err instanceof InvalidRequestError);
        assert.equal(err.status, 422);
        // Refused by the schema's URL rule (invalid_request) or by the server's own check (invalid_url).
        assert.ok(["invalid_url", "invalid_request"].includes(err.code), err.code);
        assert.equal(err.code, body.error);
        // The server's own message (which may mask a password), word for word.
        assert.equal(err.detail, body.detail);
        assert.ok(err.detail.length > 0);
        assert.ok(err.message.includes(err.detail));
        return true;
      });
    }
    // One bad URL refuses the whole batch.
    await assert.rejects(client.cacheImages([`${origin.baseUrl}/img/one.png`, "ftp://x"]), (err: unknown) => {
      assert.ok(err instanceof MediaCacheApiError);
      assert.equal(err.status, 422);
      assert.ok(["invalid_url", "invalid_request"].includes(err.code), err.code);
      return true;
    });
    assert.equal((await client.getStats()).cache.total, totalBefore);
  });

  test("an origin 404 fails the asset; getStats counts it; retryFailed queues it again", async () => {
    const id = await client.cacheImage(`${origin.baseUrl}/missing.png`);
    const [failed] = await client.wait([id], SETTLE_MS);
    assert.ok(failed);
    assert.equal(failed.status, "FAILED", JSON.stringify(failed));
    assert.equal(failed.error_kind, "not_found");
    assert.ok(failed.error);
    settled.add(id);

    const stats = await client.getStats();
    assert.deepEqual(Object.keys(stats).sort(), ["cache", "hosts", "queue"]);
    assert.equal(stats.cache.cached, settled.size - 1);
    assert.equal(stats.cache.failed, 1);
    assert.equal(stats.cache.pending, 0);
    assert.equal(stats.cache.downloading, 0);
    assert.equal(stats.cache.total, settled.size);
    assert.deepEqual(stats.cache.failed_by_kind, { not_found: 1 });
    for (const key of QUEUE_STATS_KEYS) assert.equal(typeof stats.queue[key], "number", key);

    const hitsBefore = origin.hits.get("/missing.png") ?? 0;
    assert.equal(await client.retryFailed(), 1);
    const again = await client.getAsset(id);
    assert.ok(again);
    assert.ok(["PENDING", "DOWNLOADING", "FAILED"].includes(again.status));
    const [refailed] = await client.wait([id], SETTLE_MS);
    assert.equal(refailed?.status, "FAILED");
    assert.ok((origin.hits.get("/missing.png") ?? 0) > hitsBefore, "the retry downloaded again");
  });

  test("cleanup(0) removes every settled asset with its stored copy", async () => {
    // The last step's retry left its asset queued again: let it settle first.
    const records = await client.wait([...settled], SETTLE_MS);
    assert.ok(records.every((r) => r && (r.status === "CACHED" || r.status === "FAILED")));

    assert.equal(await client.cleanup(0), settled.size);
    const stats = await client.getStats();
    assert.equal(stats.cache.total, 0);
    assert.equal(await client.getAsset(firstId), null);
    assert.equal((await download(firstUrl)).status, 404, "the stored object is gone too");
    assert.equal(await client.cleanup(0), 0);
  });

  test("wait returns the last record seen when the time runs out, without polling in a tight loop", async () => {
    const id = await client.cacheImage(`${origin.baseUrl}/img/slow.png`);
    const before = calls.length;
    const started = Date.now();
    const [record] = await client.wait([id], 1500);
    const elapsed = Date.now() - started;
    assert.ok(record);
    assert.ok(record.status === "PENDING" || record.status === "DOWNLOADING", record.status);
    assert.ok(elapsed >= 1400 && elapsed < SLOW_MS, `took ${elapsed} ms`);
    const looks = calls.slice(before).filter((c) => c === `GET /api/assets/${id}`).length;
    // One look at once, then at least 200 ms between looks: at most 1 + 1500/200.
    assert.ok(looks >= 2 && looks <= 8, `${looks} requests in 1.5 s`);

    const [done] = await client.wait([id], SETTLE_MS);
    assert.equal(done?.status, "CACHED");
    assert.equal(await client.cleanup(0), 1);
  });

  test("the client's types name every property of the server's OpenAPI schema (and no other)", async () => {
    const res = await fetch(`${server.baseUrl}/openapi.json`);
    assert.equal(res.status, 200);
    const spec = (await res.json()) as OpenApi;
    const ref = (schema: Schema | undefined, where: string): Schema => {
      assert.ok(schema, `no schema at ${where}`);
      if (!schema.$ref) return schema;
      const name = schema.$ref.replace("#/components/schemas/", "");
      const found = spec.components.schemas[name];
      assert.ok(found, `${where}: no component ${name}`);
      return found;
    };
    const operation = (method: string, path: string): Operation => {
      // Path parameters are matched whatever their name ({asset_id}, {id}).
      const shape = path.replace(/\{[^}]+\}/g, "{}");
      const found = Object.entries(spec.paths).find(([p]) => p.replace(/\{[^}]+\}/g, "{}") === shape);
      assert.ok(found, `the server has no path ${path}`);
      const op = found[1][method];
      assert.ok(op, `the server has no ${method.toUpperCase()} ${path}`);
      return op;
    };
    const sameKeys = (schema: Schema, keys: readonly string[], where: string): void => {
      const properties = Object.keys(schema.properties ?? {}).sort();
      const missing = properties.filter((p) => !keys.includes(p));
      const extra = keys.filter((k) => !properties.includes(k));
      assert.deepEqual(missing, [], `${where}: the server has properties the client does not know`);
      assert.deepEqual(extra, [], `${where}: the client has properties the server does not send`);
    };
    const response = (method: string, path: string, status: string, keys: readonly string[]): Schema => {
      const where = `${method.toUpperCase()} ${path} ${status}`;
      const schema = ref(operation(method, path).responses[status]?.content?.["application/json"]?.schema, where);
      sameKeys(schema, keys, where);
      return schema;
    };
    const request = (method: string, path: string, keys: readonly string[]): void => {
      const where = `${method.toUpperCase()} ${path} request body`;
      sameKeys(ref(operation(method, path).requestBody?.content?.["application/json"]?.schema, where), keys, where);
    };

    const asset = response("get", "/api/assets/{id}", "200", ASSET_RECORD_KEYS);
    response("post", "/api/assets", "202", QUEUED_ASSET_KEYS);
    response("post", "/api/assets/batch", "202", QUEUED_BATCH_KEYS);
    response("post", "/api/urls", "200", RESOLVED_URLS_KEYS);
    const stats = response("get", "/api/stats", "200", STATS_KEYS);
    sameKeys(ref(stats.properties?.["queue"], "Stats.queue"), QUEUE_STATS_KEYS, "Stats.queue");
    sameKeys(ref(stats.properties?.["cache"], "Stats.cache"), CACHE_STATS_KEYS, "Stats.cache");
    response("post", "/api/assets/retry-failed", "200", RETRIED_RESULT_KEYS);
    response("post", "/api/assets/cleanup", "200", CLEANUP_RESULT_KEYS);
    response("get", "/api/assets/{id}", "404", ERROR_BODY_KEYS);
    response("post", "/api/assets", "422", ERROR_BODY_KEYS);

    request("post", "/api/assets", QUEUE_REQUEST_KEYS);
    request("post", "/api/assets/batch", QUEUE_BATCH_REQUEST_KEYS);
    request("post", "/api/urls", RESOLVE_REQUEST_KEYS);
    request("post", "/api/assets/cleanup", CLEANUP_REQUEST_KEYS);

    const status = ref(asset.properties?.["status"], "AssetRecord.status");
    assert.deepEqual([...(status.enum ?? [])].sort(), [...ASSET_STATUSES].sort(), "the asset statuses");

    // And a real record has exactly those keys (the schema could be right and the server not).
    const id = await client.cacheImage(`${origin.baseUrl}/img/one.png`);
    const record = (await client.getAsset(id)) as AssetRecord;
    assert.deepEqual(Object.keys(record).sort(), [...ASSET_RECORD_KEYS].sort());
    await client.wait([id], SETTLE_MS);
  });
});

describe("MediaCacheClient with MEDIACACHE_API_TOKEN set on the server", () => {
  const token = "s3cret-token";
  let server: MediacacheServer;

  before(async () => {
    // No worker: only the token checks matter here, nothing is downloaded.
    server = await startMediacache({ env: { MEDIACACHE_API_TOKEN: token }, args: ["--no-worker"] });
  });

  after(async () => {
    await server?.stop();
  });

  test("writes need the bearer token: 401 without, 403 with a wrong one; reads stay open", async () => {
    const url = "http://127.0.0.1:9/never-fetched.png";
    await assert.rejects(new MediaCacheClient({ baseUrl: server.baseUrl }).cacheImage(url), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.status, 401);
      assert.equal(err.code, "unauthorized");
      return true;
    });
    await assert.rejects(new MediaCacheClient({ baseUrl: server.baseUrl, token: "wrong" }).cacheImage(url), (err: unknown) => {
      assert.ok(err instanceof ForbiddenError, String(err));
      assert.equal(err.status, 403);
      assert.equal(err.code, "forbidden");
      return true;
    });
    const authed = new MediaCacheClient({ baseUrl: `${server.baseUrl}/`, token });
    const id = await authed.cacheImage(url);
    assert.match(id, UUID);
    const stats = await new MediaCacheClient({ baseUrl: server.baseUrl }).getStats();
    assert.equal(stats.cache.pending, 1);
  });
});

// The parts of an OpenAPI document the drift test reads.
interface Schema {
  $ref?: string;
  properties?: Record<string, Schema>;
  enum?: string[];
}
interface Operation {
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  responses: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}
interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
}
