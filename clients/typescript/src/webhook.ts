// Verifying webhooks by the Standard Webhooks specification (https://www.standardwebhooks.com/),
// which the server's `standardwebhooks` signer follows: headers `webhook-id`, `webhook-timestamp`
// (unix seconds) and `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries) over
// `${id}.${timestamp}.${body}`, keyed with the base64 secret after its `whsec_` prefix.

import { createHmac, timingSafeEqual } from "node:crypto";

import type { AssetRecord } from "./types.js";

/** A webhook was not signed with the secret, was too old or too new, or is not well formed. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

/** The event types mediacache sends. */
export type WebhookEventType = "asset.cached" | "asset.failed" | "asset.derived" | (string & {});

/** The body of a mediacache webhook: `data` carries the asset record. */
export interface WebhookEvent<D = AssetRecord> {
  type: WebhookEventType;
  timestamp?: string;
  data: D;
}

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
export function verifyWebhook<T = WebhookEvent>(
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
