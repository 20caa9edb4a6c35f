// Request and response bodies of the mediacache HTTP API, written by hand after the server's
// OpenAPI schema (`GET /openapi.json`). Each response interface has a `*_KEYS` list beside it: a
// test fetches the schema from a real server and fails when a property there is missing here (or
// the other way round), so the two cannot drift apart unnoticed.

import { keysOf } from "./keys.js";

/** An asset's place in `PENDING -> DOWNLOADING -> CACHED`, or `FAILED` (and back to PENDING on a retry). */
export type AssetStatus = "PENDING" | "DOWNLOADING" | "CACHED" | "FAILED";
export const ASSET_STATUSES = ["PENDING", "DOWNLOADING", "CACHED", "FAILED"] as const satisfies readonly AssetStatus[];
/** The statuses at which an asset stays until someone acts (a retry, a cleanup). */
export const FINAL_STATUSES: readonly AssetStatus[] = ["CACHED", "FAILED"];

/** Why an asset failed; `transient` failures are retried by the worker, the others fail at once. */
export type ErrorKind =
  | "transient"
  | "not_found"
  | "forbidden"
  | "blocked"
  | "too_large"
  | "unsupported_type"
  | "invalid_url"
  | "too_many_redirects"
  | "expired"
  // A kind added by a newer server still type-checks (and keeps the names above suggested).
  | (string & {});

/** `GET /api/assets/{id}`: one asset. Timestamps are ISO 8601 strings, as the server sends them. */
export interface AssetRecord {
  id: string;
  original_url: string;
  status: AssetStatus;
  /** What to show now: the stored copy once CACHED, else the original URL. */
  url: string | null;
  /** The storage key, set once cached. */
  cache_key: string | null;
  content_type: string | null;
  size_bytes: number | null;
  sha256: string | null;
  attempts: number;
  /** The last failure's message. */
  error: string | null;
  error_kind: ErrorKind | null;
  created_at: string;
  updated_at: string;
  cached_at: string | null;
  /** When the asset was last asked for, and how many requests it answered (deduplication). */
  last_requested_at: string | null;
  requests: number;
  /** Media metadata, once the derive worker has read the file (null until then, or where it does not apply). */
  width: number | null;
  height: number | null;
  frames: number | null;
  duration_s: number | null;
  video_codec: string | null;
  audio_codec: string | null;
  /** A ThumbHash, base64-encoded: a tiny preview to paint while the media loads. */
  placeholder: string | null;
  /** null until derived; then pending, ok, too_large, corrupt, unsupported or failed. */
  media_state: string | null;
  media_error: string | null;
  /** WebP thumbnails (images) and posters (videos), narrowest first. */
  derivatives: Derivative[];
}
export const ASSET_RECORD_KEYS = keysOf<AssetRecord>()([
  "id", "original_url", "status", "url", "cache_key", "content_type", "size_bytes", "sha256",
  "attempts", "error", "error_kind", "created_at", "updated_at", "cached_at", "last_requested_at", "requests",
  "width", "height", "frames", "duration_s", "video_codec", "audio_codec", "placeholder", "media_state",
  "media_error", "derivatives",
]);

/** A thumbnail or poster of an asset. */
export interface Derivative {
  kind: "thumb" | "poster" | (string & {});
  width: number;
  height: number;
  content_type: string;
  url: string;
}
export const DERIVATIVE_KEYS = keysOf<Derivative>()(["kind", "width", "height", "content_type", "url"]);

/** `POST /api/assets`: 202 with the new asset's id. */
export interface QueuedAsset {
  id: string;
  status: AssetStatus;
}
export const QUEUED_ASSET_KEYS = keysOf<QueuedAsset>()(["id", "status"]);

/** `POST /api/assets/batch`: 202 with the ids in input order. */
export interface QueuedBatch {
  ids: string[];
}
export const QUEUED_BATCH_KEYS = keysOf<QueuedBatch>()(["ids"]);

/** `POST /api/urls`: one URL (or null where nothing is known) per value, in input order. */
export interface ResolvedUrls {
  urls: (string | null)[];
}
export const RESOLVED_URLS_KEYS = keysOf<ResolvedUrls>()(["urls"]);

/** BullMQ's job counts of the `media-cache` queue. */
export interface QueueStats {
  waiting: number;
  active: number;
  completed: number;
  failed: number;
  delayed: number;
}
export const QUEUE_STATS_KEYS = keysOf<QueueStats>()(["waiting", "active", "completed", "failed", "delayed"]);

/** Asset counts by status (database), and failed assets by error kind. */
export interface CacheStats {
  pending: number;
  downloading: number;
  cached: number;
  failed: number;
  total: number;
  failed_by_kind: Record<string, number>;
  /** PENDING assets whose signed link expires within 15 minutes. */
  at_risk: number;
}
export const CACHE_STATS_KEYS = keysOf<CacheStats>()([
  "pending", "downloading", "cached", "failed", "total", "failed_by_kind", "at_risk",
]);

/** One origin host as the per-host limiter sees it. */
export interface HostState {
  host: string;
  breaker: "closed" | "open" | "half_open" | (string & {});
  limits: string;
  rate_per_s: number;
  permits_in_use: number;
  recent_failures: number;
  /** Unix seconds, while the breaker is open. */
  open_until: number | null;
  /** Unix seconds, set by a 429 or 503 with Retry-After. */
  paused_until: number | null;
}
export const HOST_STATE_KEYS = keysOf<HostState>()([
  "host", "breaker", "limits", "rate_per_s", "permits_in_use", "recent_failures", "open_until", "paused_until",
]);

/** `GET /api/stats`. */
export interface Stats {
  queue: QueueStats;
  cache: CacheStats;
  hosts: HostState[];
}
export const STATS_KEYS = keysOf<Stats>()(["queue", "cache", "hosts"]);

/** `POST /api/assets/retry-failed`. */
export interface RetriedResult {
  retried: number;
}
export const RETRIED_RESULT_KEYS = keysOf<RetriedResult>()(["retried"]);

/** `POST /api/assets/cleanup`. */
export interface CleanupResult {
  removed: number;
}
export const CLEANUP_RESULT_KEYS = keysOf<CleanupResult>()(["removed"]);

/** The body of every 4xx/5xx answer. */
export interface ErrorBody {
  /** A stable, machine-readable code, e.g. `invalid_url`, `not_found`, `queue_unavailable`. */
  error: string;
  /** What is wrong, and how to fix it (a string, as the server sends it today). */
  detail: unknown;
}
export const ERROR_BODY_KEYS = keysOf<ErrorBody>()(["error", "detail"]);

/** One problem of a 422 `invalid_request` answer (request validation), beside `error` and `detail`. */
export interface ValidationProblem {
  loc: (string | number)[];
  msg: string;
  type: string;
}

// ---- request bodies (the server refuses unknown fields, so these must not send any) -------------

export interface QueueRequest {
  url: string;
}
export const QUEUE_REQUEST_KEYS = keysOf<QueueRequest>()(["url"]);

export interface QueueBatchRequest {
  urls: string[];
}
export const QUEUE_BATCH_REQUEST_KEYS = keysOf<QueueBatchRequest>()(["urls"]);

export interface ResolveRequest {
  values: (string | null)[];
  original_urls?: (string | null)[] | null;
}
export const RESOLVE_REQUEST_KEYS = keysOf<ResolveRequest>()(["values", "original_urls"]);

export interface CleanupRequest {
  days: number;
  include_referenced?: boolean;
}
export const CLEANUP_REQUEST_KEYS = keysOf<CleanupRequest>()(["days", "include_referenced"]);

// ---- client-side shapes (no endpoint of their own) ----------------------------------------------

/** One image of a TikTok photo post, as scraped. */
export interface TikTokImageInput {
  url?: string | null;
  width?: number | null;
  height?: number | null;
}

/** The media URLs of one TikTok post; any of them may be missing. */
export interface TikTokPostMediaInput {
  videoUrl?: string | null;
  coverUrl?: string | null;
  musicUrl?: string | null;
  avatarUrl?: string | null;
  images?: TikTokImageInput[];
}

/** An image's asset id (null where its URL was missing) with the size it was given. */
export interface TikTokImageRef {
  id: string | null;
  width: number | null;
  height: number | null;
}

/** Asset ids of a TikTok post's media: null where a URL was missing; images in input order. */
export interface TikTokPostMedia {
  video: string | null;
  cover: string | null;
  music: string | null;
  avatar: string | null;
  images: TikTokImageRef[];
}
