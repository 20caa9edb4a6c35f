// Verifying webhooks by the Standard Webhooks specification (https://www.standardwebhooks.com/),
// which the server's `standardwebhooks` signer follows: headers `webhook-id`, `webhook-timestamp`
// (unix seconds) and `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries) over
// `${id}.${timestamp}.${body}`, keyed with the base64 secret after its `whsec_` prefix.

import { createHmac, timingSafeEqual } from "node:crypto";

import { keysOf } from "./keys.js";
import type { AssetStatus, ErrorKind } from "./types.js";

/** A webhook was not signed with the secret, was too old or too new, or is not well formed. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

/** The event types mediacache sends. */
export type WebhookEventType = "asset.cached" | "asset.failed" | "asset.derived" | (string & {});

/**
 * `data` of `asset.cached` and `asset.failed`: the asset's fields at its final status. Keys are
 * storage keys, not URLs (a link would expire before a retried delivery): resolve them with
 * `getUrl(id)`.
 */
export interface WebhookAssetData {
  id: string;
  status: AssetStatus;
  cache_key: string | null;
  content_type: string | null;
  size_bytes: number | null;
  sha256: string | null;
  error_kind: ErrorKind | null;
  error: string | null;
  created_at: string;
  updated_at: string;
  cached_at: string | null;
  original_url: string;
}
export const WEBHOOK_ASSET_DATA_KEYS = keysOf<WebhookAssetData>()([
  "id", "status", "cache_key", "content_type", "size_bytes", "sha256", "error_kind", "error", "created_at",
  "updated_at", "cached_at", "original_url",
]);

/** One thumbnail (`thumb`) or video poster (`poster`) in `asset.derived`, WebP. */
export interface WebhookDerivative {
  kind: "thumb" | "poster" | (string & {});
  width: number;
  height: number;
  content_type: string;
  /** Where it is stored; `GET /media/{id}?w=<width>` (or `?poster=1`) serves it. */
  cache_key: string;
  size_bytes: number;
}
export const WEBHOOK_DERIVATIVE_KEYS = keysOf<WebhookDerivative>()([
  "kind", "width", "height", "content_type", "cache_key", "size_bytes",
]);

/**
 * `data` of `asset.derived`: the derive step is over for a CACHED asset. `media_state` is `ok`
 * (with derivatives, none for audio), `too_large`, `corrupt` or `unsupported` (no derivatives: show
 * the original; `media_error` says why), or `failed` (storage or database failed on every attempt).
 */
export interface WebhookDerivedData {
  id: string;
  status: AssetStatus;
  cache_key: string | null;
  content_type: string | null;
  original_url: string;
  media_state: "ok" | "too_large" | "corrupt" | "unsupported" | "failed" | (string & {});
  media_error: string | null;
  /** As displayed (EXIF orientation and a video's rotation applied). */
  width: number | null;
  height: number | null;
  frames: number | null;
  duration_s: number | null;
  video_codec: string | null;
  audio_codec: string | null;
  /** A ThumbHash, base64-encoded: a tiny preview to paint while the media loads. */
  placeholder: string | null;
  /** Narrowest first. */
  derivatives: WebhookDerivative[];
}
export const WEBHOOK_DERIVED_DATA_KEYS = keysOf<WebhookDerivedData>()([
  "id", "status", "cache_key", "content_type", "original_url", "media_state", "media_error", "width", "height",
  "frames", "duration_s", "video_codec", "audio_codec", "placeholder", "derivatives",
]);

/** The body of a webhook: `id` is the event id (also the `webhook-id` header: dedupe by it). */
export interface WebhookEvent<D = WebhookAssetData | WebhookDerivedData> {
  type: WebhookEventType;
  id: string;
  timestamp: string;
  data: D;
}

/** What mediacache sends, told apart by `type` (narrow with `if (event.type === "asset.derived")`). */
export type MediaCacheWebhookEvent =
  | (WebhookEvent<WebhookAssetData> & { type: "asset.cached" | "asset.failed" })
  | (WebhookEvent<WebhookDerivedData> & { type: "asset.derived" });

/**
 * Request headers in any of the usual shapes: a fetch `Headers` (Next.js, Hono, Deno, Bun), Node's
 * `IncomingHttpHeaders` (`req.headers` of node:http and Express), or a plain object. Names are
 * matched without regard to case.
 */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Record<string, string | readonly string[] | undefined>;

export interface VerifyWebhookOptions {
  /** How far the timestamp may be from now, in seconds (default 300, the specification's 5 minutes). */
  toleranceS?: number;
  /** "Now", for tests: a Date or milliseconds since the epoch. */
  now?: Date | number;
}

const SECRET_PREFIX = "whsec_";
const DEFAULT_TOLERANCE_S = 5 * 60;

/**
 * Checks a webhook's signature and timestamp and returns its parsed JSON body; throws
 * {@link WebhookVerificationError} otherwise. Pass the body exactly as received (the raw text or
 * bytes, before any JSON parsing: re-serialised JSON does not verify).
 *
 * @param secret the signing secret, `whsec_<base64>` (a bare base64 secret is accepted too).
 */
export function verifyWebhook<T = MediaCacheWebhookEvent>(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyWebhookOptions = {},
): T {
  const key = decodeSecret(secret);
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  const missing = [
    ["webhook-id", id],
    ["webhook-timestamp", timestamp],
    ["webhook-signature", signatures],
  ].filter(([, value]) => !value).map(([name]) => name);
  if (missing.length > 0) throw new WebhookVerificationError(`missing header ${missing.join(", ")}`);

  if (!/^\d{1,15}$/.test(timestamp as string)) {
    throw new WebhookVerificationError("webhook-timestamp is not a whole number of seconds");
  }
  const nowMs = options.now === undefined ? Date.now() : Number(options.now);
  const tolerance = options.toleranceS ?? DEFAULT_TOLERANCE_S;
  const offset = Number(timestamp) - Math.floor(nowMs / 1000);
  if (offset < -tolerance) throw new WebhookVerificationError("message timestamp too old");
  if (offset > tolerance) throw new WebhookVerificationError("message timestamp too new");

  const body = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`, "utf8")
    .update(body)
    .digest();

  let matched = false;
  for (const entry of (signatures as string).split(" ")) {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    const given = Buffer.from(entry.slice(comma + 1), "base64");
    // timingSafeEqual needs equal lengths; a length says nothing about the secret.
    if (given.length === expected.length && timingSafeEqual(given, expected)) matched = true;
  }
  if (!matched) throw new WebhookVerificationError("no matching signature found");

  try {
    return JSON.parse(body.toString("utf8")) as T;
  } catch {
    throw new WebhookVerificationError("the signed payload is not JSON");
  }
}

function decodeSecret(secret: string): Buffer {
  if (typeof secret !== "string") throw new TypeError("the webhook secret must be a string like 'whsec_...'");
  const bare = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  const key = Buffer.from(bare, "base64");
  if (key.length === 0) throw new TypeError("the webhook secret is empty; pass the 'whsec_...' secret of the sender");
  return key;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  const record = headers as Record<string, string | readonly string[] | undefined>;
  let value = record[name];
  if (value === undefined) {
    const found = Object.keys(record).find((k) => k.toLowerCase() === name);
    value = found === undefined ? undefined : record[found];
  }
  if (Array.isArray(value)) return value[0];
  return value as string | undefined;
}
