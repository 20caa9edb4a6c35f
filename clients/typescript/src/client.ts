import {
  MediaCacheApiError,
  MediaCacheConnectionError,
  MediaCacheError,
  apiErrorFrom,
} from "./errors.js";
import {
  FINAL_STATUSES,
  type AssetRecord,
  type CleanupRequest,
  type CleanupResult,
  type QueueBatchRequest,
  type QueuedAsset,
  type QueuedBatch,
  type QueueRequest,
  type ResolvedUrls,
  type ResolveRequest,
  type RetriedResult,
  type Stats,
  type TikTokPostMedia,
  type TikTokPostMediaInput,
} from "./types.js";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface MediaCacheClientOptions {
  /** Where the service runs, e.g. `http://127.0.0.1:8000` (a path prefix is kept). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <token>` (the server's `MEDIACACHE_API_TOKEN`). */
  token?: string | undefined;
  /** A `fetch` to use instead of the platform's (tests, proxies, instrumentation). */
  fetch?: FetchLike | undefined;
}

export interface CleanupOptions {
  /** Also delete assets that application rows (TikTok posts, carousels) point at. */
  includeReferenced?: boolean;
}

/** The server takes at most this many URLs (or values) per request; larger lists are split. */
export const MAX_BATCH = 1000;
/** The longest `wait_s` one `GET /api/assets/{id}?wait_s=N` asks for. */
export const MAX_WAIT_S = 30;
/** Pause between two looks at an asset that is not final yet: from the first figure, growing to the second. */
const BACKOFF_MS: readonly [number, number] = [200, 500];
/** How many assets `wait` watches at a time. */
const WAIT_LANES = 8;
/** How much longer than `wait_s` a long poll may take before the client gives up on that request. */
const LONG_POLL_GRACE_MS = 5_000;

/**
 * A client of the mediacache HTTP service. Every method is one request (two or more only where a
 * list is longer than {@link MAX_BATCH}, and `wait`, which polls).
 *
 * Methods throw {@link MediaCacheApiError} (or one of its subclasses by status) when the service
 * refuses, and {@link MediaCacheConnectionError} when it cannot be reached.
 */
export class MediaCacheClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: FetchLike;

  constructor(options: MediaCacheClientOptions) {
    if (!options || typeof options.baseUrl !== "string" || options.baseUrl === "") {
      throw new TypeError("MediaCacheClient needs { baseUrl }, e.g. 'http://127.0.0.1:8000'");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token || undefined;
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  // ---- queueing -----------------------------------------------------------------------------

  /** Queues one media URL; resolves to the new asset's id at once (the download runs in the background). */
  async cacheImage(url: string): Promise<string> {
    const body: QueueRequest = { url };
    const queued = await this.#request<QueuedAsset>("POST", "/api/assets", body);
    return queued.id;
  }

  /**
   * Queues many URLs; ids in input order. Up to {@link MAX_BATCH} URLs are one request and one
   * transaction on the server (one bad URL refuses them all); a longer list is sent in several.
   */
  async cacheImages(urls: readonly string[]): Promise<string[]> {
    const ids: string[] = [];
    for (const chunk of chunks(urls, MAX_BATCH)) {
      const body: QueueBatchRequest = { urls: chunk };
      const queued = await this.#request<QueuedBatch>("POST", "/api/assets/batch", body);
      ids.push(...queued.ids);
    }
    return ids;
  }

  /**
   * Queues every media URL of a TikTok post in one batch request. Each slot gets its asset id, or
   * null where its URL is missing; images keep their order, width and height.
   */
  async cacheTikTokPostMedia(media: TikTokPostMediaInput): Promise<TikTokPostMedia> {
    const urls: string[] = [];
    const slot = (url: string | null | undefined): number | null => {
      if (!url) return null;
      urls.push(url);
      return urls.length - 1;
    };
    const video = slot(media.videoUrl);
    const cover = slot(media.coverUrl);
    const music = slot(media.musicUrl);
    const avatar = slot(media.avatarUrl);
    const images = media.images ?? [];
    const imageSlots = images.map((img) => slot(img.url));
    const ids = urls.length > 0 ? await this.cacheImages(urls) : [];
    const pick = (i: number | null): string | null => (i === null ? null : (ids[i] ?? null));
    return {
      video: pick(video),
      cover: pick(cover),
      music: pick(music),
      avatar: pick(avatar),
      images: images.map((img, n) => ({
        id: pick(imageSlots[n] ?? null),
        width: img.width ?? null,
        height: img.height ?? null,
      })),
    };
  }

  // ---- resolution ---------------------------------------------------------------------------

  /**
   * What to show for an asset id (or a legacy storage key) now: the stored copy once CACHED, else
   * `originalUrl` (or the asset's own original URL); null where nothing is known.
   */
  async getUrl(id: string | null | undefined, originalUrl?: string | null): Promise<string | null> {
    const [url] = await this.getUrls([id], [originalUrl ?? null]);
    return url ?? null;
  }

  /** {@link getUrl} for many values in one query on the server; URLs in input order. */
  async getUrls(
    ids: readonly (string | null | undefined)[],
    originalUrls?: readonly (string | null | undefined)[] | null,
  ): Promise<(string | null)[]> {
    if (originalUrls != null && originalUrls.length !== ids.length) {
      throw new RangeError(
        `getUrls got ${ids.length} ids but ${originalUrls.length} original URLs; give one (or null) per id`,
      );
    }
    const urls: (string | null)[] = [];
    for (let start = 0; start < ids.length; start += MAX_BATCH) {
      const body: ResolveRequest = { values: ids.slice(start, start + MAX_BATCH).map((v) => v ?? null) };
      if (originalUrls != null) {
        body.original_urls = originalUrls.slice(start, start + MAX_BATCH).map((v) => v ?? null);
      }
      const resolved = await this.#request<ResolvedUrls>("POST", "/api/urls", body);
      urls.push(...resolved.urls);
    }
    return urls;
  }

  /**
   * The service's `/media/{id}` link for `<img src>` and `<video src>`: it redirects to the stored
   * copy once CACHED, else to the original. No request is made.
   */
  mediaUrl(id: string): string {
    return `${this.baseUrl}/media/${encodeURIComponent(id)}`;
  }

  // ---- records ------------------------------------------------------------------------------

  /** The asset's record, or null when the service knows no asset with this id. */
  async getAsset(id: string): Promise<AssetRecord | null> {
    return this.#getAsset(id, 0, undefined);
  }

  /**
   * Waits until each asset is CACHED or FAILED, or `timeoutMs` has passed, and returns the records
   * in input order: final ones, or the last one seen when the time ran out (check `status`); null
   * for an id the service does not know.
   *
   * Each look is `GET /api/assets/{id}?wait_s=N` (N <= 30), which lets a server that supports it
   * hold the answer until the asset settles; an answer that is not final yet is followed by a
   * pause of 200-500 ms, so a server that answers at once is never polled in a tight loop.
   */
  async wait(ids: readonly string[], timeoutMs: number): Promise<(AssetRecord | null)[]> {
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new RangeError(`wait needs a timeout in milliseconds >= 0, got ${timeoutMs}`);
    }
    const deadline = Date.now() + timeoutMs;
    const results: (AssetRecord | null)[] = new Array(ids.length).fill(null);
    let next = 0;
    const lane = async (): Promise<void> => {
      for (let i = next++; i < ids.length; i = next++) {
        results[i] = await this.#waitOne(ids[i] as string, deadline);
      }
    };
    await Promise.all(Array.from({ length: Math.min(WAIT_LANES, ids.length) }, lane));
    return results;
  }

  async #waitOne(id: string, deadline: number): Promise<AssetRecord | null> {
    let record: AssetRecord | null = null;
    let lastError: unknown = null;
    let pause = BACKOFF_MS[0];
    for (let first = true; ; first = false) {
      const remainingMs = deadline - Date.now();
      // The first look answers at once (most assets are settled already); later ones long-poll.
      const waitS = first ? 0 : Math.max(0, Math.min(MAX_WAIT_S, Math.floor(remainingMs / 1000)));
      try {
        const seen = await this.#getAsset(id, waitS, Math.max(0, remainingMs) + LONG_POLL_GRACE_MS);
        if (seen === null || FINAL_STATUSES.includes(seen.status)) return seen;
        record = seen;
      } catch (err) {
        // Passing trouble (a restart, Redis or the database away for a moment) is waited out
        // like a status that is not final; any other refusal is the caller's to see.
        if (!isPassing(err)) throw err;
        lastError = err;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        if (record !== null) return record;
        throw lastError;
      }
      await sleep(Math.min(pause, left));
      pause = Math.min(BACKOFF_MS[1], Math.round(pause * 1.5));
    }
  }

  async #getAsset(id: string, waitS: number, timeoutMs: number | undefined): Promise<AssetRecord | null> {
    const query = waitS > 0 ? `?wait_s=${waitS}` : "";
    try {
      return await this.#request<AssetRecord>("GET", `/api/assets/${encodeURIComponent(id)}${query}`, undefined, timeoutMs);
    } catch (err) {
      if (err instanceof MediaCacheApiError && err.status === 404 && err.code === "not_found") return null;
      throw err;
    }
  }

  // ---- statistics and maintenance -----------------------------------------------------------

  /** Queue counts (BullMQ) and asset counts by status and by error kind. */
  async getStats(): Promise<Stats> {
    return this.#request<Stats>("GET", "/api/stats");
  }

  /** Puts every FAILED asset back to PENDING with a fresh job; resolves to how many. */
  async retryFailed(): Promise<number> {
    const result = await this.#request<RetriedResult>("POST", "/api/assets/retry-failed");
    return result.retried;
  }

  /** Deletes CACHED and FAILED assets older than `days` days with their stored objects; resolves to how many. */
  async cleanup(days = 30, options: CleanupOptions = {}): Promise<number> {
    const body: CleanupRequest = { days };
    if (options.includeReferenced !== undefined) body.include_referenced = options.includeReferenced;
    const result = await this.#request<CleanupResult>("POST", "/api/assets/cleanup", body);
    return result.removed;
  }

  // ---- transport ----------------------------------------------------------------------------

  async #request<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.#token) headers["authorization"] = `Bearer ${this.#token}`;
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (timeoutMs !== undefined) init.signal = AbortSignal.timeout(Math.max(1, timeoutMs));
    const url = `${this.baseUrl}${path}`;
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, init);
      text = await response.text();
    } catch (err) {
      throw new MediaCacheConnectionError(`${method} ${url} failed: ${describe(err)}`, { cause: err });
    }
    if (!response.ok) throw apiErrorFrom(response.status, text);
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new MediaCacheError(
        `${method} ${url} answered ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`,
        { cause: err },
      );
    }
  }
}

function isPassing(err: unknown): boolean {
  return err instanceof MediaCacheConnectionError
    || (err instanceof MediaCacheApiError && [502, 503, 504].includes(err.status));
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let start = 0; start < items.length; start += size) yield items.slice(start, start + size);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : "";
    return `${err.message}${cause}`;
  }
  return String(err);
}
