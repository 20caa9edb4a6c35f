// The client's own logic with a scripted `fetch`: headers, paths, error mapping, splitting of long
// lists and the pacing of `wait`. What the real server answers is tested in integration.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ForbiddenError,
  InvalidRequestError,
  MediaCacheApiError,
  MediaCacheClient,
  MediaCacheConnectionError,
  NotFoundError,
  ServiceUnavailableError,
  UnauthorizedError,
  type AssetRecord,
  type FetchLike,
} from "mediacache-client";

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

/** A fetch that records each request and answers with `answer(request, n)`. */
function scripted(answer: (req: Seen, n: number) => Response | Promise<Response>): { fetch: FetchLike; seen: Seen[] } {
  const seen: Seen[] = [];
  const fetch: FetchLike = async (input, init) => {
    const req: Seen = {
      method: init?.method ?? "GET",
      url: input,
      headers: { ...(init?.headers as Record<string, string>) },
      body: typeof init?.body === "string" ? JSON.parse(init.body) : undefined,
    };
    seen.push(req);
    return answer(req, seen.length);
  };
  return { fetch, seen };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

function record(id: string, status: AssetRecord["status"]): AssetRecord {
  return {
    id, original_url: `https://cdn.example/${id}.jpg`, status, url: null, cache_key: null, content_type: null,
    size_bytes: null, sha256: null, attempts: 0, error: null, error_kind: null,
    created_at: "2025-01-01T00:00:00Z", updated_at: "2025-01-01T00:00:00Z", cached_at: null,
    last_requested_at: "2025-01-01T00:00:00Z", requests: 1, width: null, height: null, frames: null,
    duration_s: null, video_codec: null, audio_codec: null, placeholder: null, media_state: null,
    media_error: null, derivatives: [],
  };
}

describe("requests", () => {
  test("paths keep the base URL's prefix; the token goes in Authorization: Bearer", async () => {
    const { fetch, seen } = scripted(() => json(202, { id: "a", status: "PENDING" }));
    const client = new MediaCacheClient({ baseUrl: "https://cache.example/mc//", token: "tok", fetch });
    assert.equal(await client.cacheImage("https://cdn.example/x.jpg"), "a");
    assert.equal(seen[0]?.url, "https://cache.example/mc/api/assets");
    assert.equal(seen[0]?.method, "POST");
    assert.equal(seen[0]?.headers["authorization"], "Bearer tok");
    assert.equal(seen[0]?.headers["content-type"], "application/json");
    assert.deepEqual(seen[0]?.body, { url: "https://cdn.example/x.jpg" });
    assert.equal(client.mediaUrl("a b"), "https://cache.example/mc/media/a%20b");
  });

  test("no Authorization header without a token", async () => {
    const { fetch, seen } = scripted(() => json(200, { retried: 2 }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    assert.equal(await client.retryFailed(), 2);
    assert.equal(seen[0]?.headers["authorization"], undefined);
    assert.equal(seen[0]?.url, "http://h/api/assets/retry-failed");
  });

  test("cleanup sends days (and include_referenced only when asked)", async () => {
    const { fetch, seen } = scripted(() => json(200, { removed: 3 }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    assert.equal(await client.cleanup(7), 3);
    assert.equal(await client.cleanup(0, { includeReferenced: true }), 3);
    assert.deepEqual(seen.map((s) => s.body), [{ days: 7 }, { days: 0, include_referenced: true }]);
  });

  test("a list longer than 1000 URLs is sent in several batches, ids kept in order", async () => {
    const { fetch, seen } = scripted((req) => json(202, { ids: (req.body as { urls: string[] }).urls.map((u) => `id-${u}`) }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    const urls = Array.from({ length: 2500 }, (_, i) => String(i));
    const ids = await client.cacheImages(urls);
    assert.deepEqual(seen.map((s) => (s.body as { urls: string[] }).urls.length), [1000, 1000, 500]);
    assert.deepEqual(ids, urls.map((u) => `id-${u}`));
    assert.deepEqual(await client.cacheImages([]), []);
    assert.equal(seen.length, 3, "an empty list makes no request");
  });

  test("getUrls sends original_urls only when given, and checks that the lengths agree", async () => {
    const { fetch, seen } = scripted((req) => json(200, { urls: (req.body as { values: unknown[] }).values.map(() => "u") }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    assert.deepEqual(await client.getUrls(["a", undefined]), ["u", "u"]);
    assert.deepEqual(seen[0]?.body, { values: ["a", null] });
    assert.equal(await client.getUrl("a", "https://o"), "u");
    assert.deepEqual(seen[1]?.body, { values: ["a"], original_urls: ["https://o"] });
    await assert.rejects(client.getUrls(["a"], []), RangeError);
  });

  test("cacheTikTokPostMedia: one batch, null for missing URLs, images keep order and size", async () => {
    const { fetch, seen } = scripted((req) => json(202, { ids: (req.body as { urls: string[] }).urls.map((u) => `id:${u}`) }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    const media = await client.cacheTikTokPostMedia({
      videoUrl: "v", coverUrl: "", avatarUrl: "a",
      images: [{ url: "i1", width: 1, height: 2 }, { url: null, width: 3, height: 4 }, { url: "i3", width: 5, height: 6 }],
    });
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.body, { urls: ["v", "a", "i1", "i3"] });
    assert.deepEqual(media, {
      video: "id:v", cover: null, music: null, avatar: "id:a",
      images: [{ id: "id:i1", width: 1, height: 2 }, { id: null, width: 3, height: 4 }, { id: "id:i3", width: 5, height: 6 }],
    });
    const empty = await client.cacheTikTokPostMedia({});
    assert.deepEqual(empty, { video: null, cover: null, music: null, avatar: null, images: [] });
    assert.equal(seen.length, 1, "nothing to queue, no request");
  });
});

describe("errors", () => {
  const cases: [number, string, Function][] = [
    [401, "unauthorized", UnauthorizedError],
    [403, "forbidden", ForbiddenError],
    [404, "not_found", NotFoundError],
    [422, "invalid_url", InvalidRequestError],
    [503, "queue_unavailable", ServiceUnavailableError],
    [400, "refused", MediaCacheApiError],
  ];
  for (const [status, code, cls] of cases) {
    test(`${status} ${code} is a ${cls.name} with the body's code and detail`, async () => {
      const { fetch } = scripted(() => json(status, { error: code, detail: `because ${status}` }));
      const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
      await assert.rejects(client.getStats(), (err: unknown) => {
        assert.ok(err instanceof cls);
        assert.ok(err instanceof MediaCacheApiError);
        assert.equal(err.status, status);
        assert.equal(err.code, code);
        assert.equal(err.detail, `because ${status}`);
        assert.equal(err.message, `${status} ${code}: because ${status}`);
        return true;
      });
    });
  }

  test("an answer that is not the JSON error body still gives a MediaCacheApiError", async () => {
    const { fetch } = scripted(() => new Response("<html>Bad Gateway</html>", { status: 502 }));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    await assert.rejects(client.getStats(), (err: unknown) => {
      assert.ok(err instanceof MediaCacheApiError);
      assert.equal(err.status, 502);
      assert.equal(err.code, "http_502");
      assert.equal(err.detail, "<html>Bad Gateway</html>");
      return true;
    });
  });

  test("a connection failure is a MediaCacheConnectionError with the cause", async () => {
    const refused = new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") });
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch: () => Promise.reject(refused) });
    await assert.rejects(client.getStats(), (err: unknown) => {
      assert.ok(err instanceof MediaCacheConnectionError);
      assert.equal(err.cause, refused);
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });
  });

  test("getAsset gives null on 404 not_found", async () => {
    const { fetch } = scripted(() => json(404, { error: "not_found", detail: "no asset with id x" }));
    assert.equal(await new MediaCacheClient({ baseUrl: "http://h", fetch }).getAsset("x"), null);
  });
});

describe("wait", () => {
  test("a server that answers at once and never settles: paced looks, the last record at the deadline", async () => {
    const { fetch, seen } = scripted((req) => json(200, record(req.url.split("/").at(-1)!.split("?")[0]!, "PENDING")));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    const started = Date.now();
    const [rec] = await client.wait(["a"], 1200);
    const elapsed = Date.now() - started;
    assert.equal(rec?.status, "PENDING");
    assert.ok(elapsed >= 1150 && elapsed < 2000, `took ${elapsed} ms`);
    // At once, then at least 200 ms apart.
    assert.ok(seen.length >= 3 && seen.length <= 7, `${seen.length} requests in 1.2 s`);
    assert.equal(seen[0]?.url, "http://h/api/assets/a", "the first look does not wait");
    for (const req of seen.slice(1)) {
      const waitS = Number(new URL(req.url).searchParams.get("wait_s") ?? "0");
      assert.ok(waitS >= 0 && waitS <= 1, `wait_s=${waitS} with about 1 s left`);
    }
  });

  test("long polls ask for at most 30 s; returns once every asset is final, in input order", async () => {
    const looks = new Map<string, number>();
    const { fetch, seen } = scripted((req) => {
      const id = new URL(req.url).pathname.split("/").at(-1)!;
      const n = (looks.get(id) ?? 0) + 1;
      looks.set(id, n);
      if (id === "gone") return json(404, { error: "not_found", detail: "no asset" });
      if (id === "bad") return json(200, record(id, "FAILED"));
      return json(200, record(id, n >= 3 ? "CACHED" : "DOWNLOADING"));
    });
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    const results = await client.wait(["x", "gone", "bad", "y"], 120_000);
    assert.deepEqual(results.map((r) => r?.status ?? null), ["CACHED", null, "FAILED", "CACHED"]);
    assert.deepEqual(results.map((r) => r?.id ?? null), ["x", null, "bad", "y"]);
    const waits = seen.map((s) => new URL(s.url).searchParams.get("wait_s")).filter((w) => w !== null).map(Number);
    assert.ok(waits.length > 0);
    assert.ok(waits.every((w) => w === 30), `wait_s values ${waits}`);
  });

  test("passing trouble (503, a refused connection) is waited out; other refusals are thrown", async () => {
    let n = 0;
    const flaky: FetchLike = async () => {
      n += 1;
      if (n === 1) throw new TypeError("fetch failed");
      if (n === 2) return json(503, { error: "database_unavailable", detail: "down" });
      return json(200, record("a", "CACHED"));
    };
    const [rec] = await new MediaCacheClient({ baseUrl: "http://h", fetch: flaky }).wait(["a"], 10_000);
    assert.equal(rec?.status, "CACHED");

    const { fetch } = scripted(() => json(403, { error: "forbidden", detail: "wrong token" }));
    await assert.rejects(new MediaCacheClient({ baseUrl: "http://h", fetch }).wait(["a"], 10_000), ForbiddenError);
  });

  test("an empty list and a zero timeout answer at once", async () => {
    const { fetch, seen } = scripted(() => json(200, record("a", "PENDING")));
    const client = new MediaCacheClient({ baseUrl: "http://h", fetch });
    assert.deepEqual(await client.wait([], 1000), []);
    const [rec] = await client.wait(["a"], 0);
    assert.equal(rec?.status, "PENDING");
    assert.equal(seen.length, 1);
    await assert.rejects(client.wait(["a"], -1), RangeError);
  });
});
