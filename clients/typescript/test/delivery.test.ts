// verifyWebhook against real deliveries: a `python -m mediacache serve` with MEDIACACHE_WEBHOOK_URL
// pointing at a node:http receiver on 127.0.0.1 caches and derives a PNG from the test's origin,
// and POSTs asset.cached and asset.derived there, signed with the secret of the test.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import {
  MediaCacheClient,
  WEBHOOK_ASSET_DATA_KEYS,
  WEBHOOK_DERIVATIVE_KEYS,
  WEBHOOK_DERIVED_DATA_KEYS,
  WebhookVerificationError,
  verifyWebhook,
  type MediaCacheWebhookEvent,
} from "mediacache-client";

import { makePng } from "./helpers/png.js";
import { startMediacache, startOrigin, type MediacacheServer, type Origin } from "./helpers/server.js";

const DELIVERY_MS = 90_000; // the derive worker's sandbox starts with the server, on a shared machine

interface Delivery {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A receiver on a free port of 127.0.0.1 that keeps every POST's raw body and headers and answers 204. */
async function startReceiver(): Promise<{ url: string; deliveries: Delivery[]; close(): Promise<void> }> {
  const deliveries: Delivery[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (req.method === "POST") deliveries.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/media`,
    deliveries,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

function typeOf(delivery: Delivery): string {
  return (JSON.parse(delivery.body.toString("utf8")) as { type: string }).type;
}

async function waitFor<T>(what: string, find: () => T | undefined, log: () => string): Promise<T> {
  const deadline = Date.now() + DELIVERY_MS;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${DELIVERY_MS} ms; the server said:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("verifyWebhook on deliveries from a real mediacache serve", () => {
  const secret = `whsec_${randomBytes(24).toString("base64")}`;
  const photo = makePng(7, 400, 300);
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let origin: Origin;
  let server: MediacacheServer;
  let assetId = "";
  let photoUrl = "";

  before(async () => {
    receiver = await startReceiver();
    origin = await startOrigin({
      "/img/photo.png": (_req, res) => {
        res.writeHead(200, { "content-type": "image/png", "content-length": photo.length });
        res.end(photo);
      },
    });
    server = await startMediacache({
      env: {
        MEDIACACHE_WEBHOOK_URL: receiver.url,
        MEDIACACHE_WEBHOOK_SECRET: secret,
        // The SSRF guard refuses loopback receivers unless their range is allowed.
        MEDIACACHE_WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8",
        MEDIACACHE_DERIVE: "on",
      },
    });
    photoUrl = `${origin.baseUrl}/img/photo.png`;
    assetId = await new MediaCacheClient({ baseUrl: server.baseUrl }).cacheImage(photoUrl);
  });

  after(async () => {
    await server?.stop();
    await origin?.close();
    await receiver?.close();
  });

  test("asset.cached verifies from the raw body and headers, with the asset's fields", async () => {
    const delivery = await waitFor("asset.cached webhook",
      () => receiver.deliveries.find((d) => typeOf(d) === "asset.cached"), () => server.log());
    // node:http's lower-case header record, with the raw bytes and with the text.
    const event = verifyWebhook(delivery.body, delivery.headers, secret);
    assert.deepEqual(verifyWebhook(delivery.body.toString("utf8"), delivery.headers, secret), event);
    assert.equal(event.type, "asset.cached");
    assert.equal(event.id, delivery.headers["webhook-id"]);
    // assert.equal narrowed the event to asset.cached: its data is the asset's fields.
    assert.deepEqual(Object.keys(event.data).sort(), [...WEBHOOK_ASSET_DATA_KEYS].sort());
    assert.equal(event.data.id, assetId);
    assert.equal(event.data.status, "CACHED");
    assert.equal(event.data.original_url, photoUrl);
    assert.equal(event.data.size_bytes, photo.length);
    assert.equal(event.data.content_type, "image/png");
  });

  test("a tampered body, a changed header and another secret are refused", async () => {
    const delivery = await waitFor("asset.cached webhook",
      () => receiver.deliveries.find((d) => typeOf(d) === "asset.cached"), () => server.log());
    const tampered = Buffer.from(delivery.body.toString("utf8").replace('"CACHED"', '"FAILED"'), "utf8");
    assert.notDeepEqual(tampered, delivery.body);
    assert.throws(() => verifyWebhook(tampered, delivery.headers, secret), (err: unknown) => {
      assert.ok(err instanceof WebhookVerificationError);
      assert.match(err.message, /no matching signature/);
      return true;
    });
    const oneByteMore = Buffer.concat([delivery.body, Buffer.from(" ")]);
    assert.throws(() => verifyWebhook(oneByteMore, delivery.headers, secret), WebhookVerificationError);
    assert.throws(
      () => verifyWebhook(delivery.body, { ...delivery.headers, "webhook-id": `${String(delivery.headers["webhook-id"])}x` }, secret),
      WebhookVerificationError,
    );
    const another = `whsec_${randomBytes(24).toString("base64")}`;
    assert.throws(() => verifyWebhook(delivery.body, delivery.headers, another), WebhookVerificationError);
  });

  test("asset.derived verifies and carries the size, placeholder and thumbnails", async () => {
    const delivery = await waitFor("asset.derived webhook",
      () => receiver.deliveries.find((d) => typeOf(d) === "asset.derived"), () => server.log());
    const event: MediaCacheWebhookEvent = verifyWebhook(delivery.body, delivery.headers, secret);
    assert.equal(event.type, "asset.derived");
    const data = event.data;
    assert.deepEqual(Object.keys(data).sort(), [...WEBHOOK_DERIVED_DATA_KEYS].sort());
    assert.equal(data.id, assetId);
    assert.equal(data.media_state, "ok", data.media_error ?? "");
    assert.deepEqual([data.width, data.height, data.frames], [400, 300, 1]);
    assert.ok(data.placeholder && data.placeholder.length > 10, "a ThumbHash placeholder");
    assert.deepEqual(data.derivatives.map((d) => [d.kind, d.width, d.height]), [["thumb", 320, 240]]);
    const [thumb] = data.derivatives;
    assert.ok(thumb);
    assert.deepEqual(Object.keys(thumb).sort(), [...WEBHOOK_DERIVATIVE_KEYS].sort());
    assert.equal(thumb.cache_key, `media/${assetId}/d/thumb-320.webp`);
    assert.equal(thumb.content_type, "image/webp");
    // What the event says is what the server serves.
    const served = await fetch(`${server.baseUrl}/media/${assetId}?w=320`);
    const body = Buffer.from(await served.arrayBuffer());
    assert.equal(served.status, 200);
    assert.equal(body.length, thumb.size_bytes);
    assert.equal(body.subarray(8, 12).toString("ascii"), "WEBP");
    assert.throws(() => verifyWebhook(delivery.body, delivery.headers, `whsec_${randomBytes(24).toString("base64")}`),
      WebhookVerificationError);
  });
});
