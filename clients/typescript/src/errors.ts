import type { ValidationProblem } from "./types.js";

/** The base of every error this package throws about the service (not about webhooks). */
export class MediaCacheError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The service could not be reached, or the connection broke before an answer came. */
export class MediaCacheConnectionError extends MediaCacheError {}

/**
 * The service answered with a 4xx or 5xx status. `code` and `detail` are the body's `error` and
 * `detail` (`{"error": "<code>", "detail": "<message>"}`); an answer without such a body (a proxy's
 * HTML page, say) gets the code `http_<status>` and the start of its text as the detail.
 */
export class MediaCacheApiError extends MediaCacheError {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  /** The parsed body as the server sent it (null when it was not JSON). */
  readonly body: unknown;
  /** 422 `invalid_request` only: each problem the request validation found. */
  readonly problems: ValidationProblem[] | undefined;

  constructor(status: number, code: string, detail: string, body: unknown = null) {
    super(`${status} ${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
    const problems = isRecord(body) ? body["problems"] : undefined;
    this.problems = Array.isArray(problems) ? (problems as ValidationProblem[]) : undefined;
  }
}

/** 401: the service needs `Authorization: Bearer <token>` and got none. */
export class UnauthorizedError extends MediaCacheApiError {}
/** 403: the token was wrong. */
export class ForbiddenError extends MediaCacheApiError {}
/** 404: no such asset (or path). */
export class NotFoundError extends MediaCacheApiError {}
/** 422: the request was refused as invalid, e.g. `invalid_url` for `ftp://...` or `user:pw@` URLs. */
export class InvalidRequestError extends MediaCacheApiError {}
/** 503: Redis, the database or storage does not answer (`queue_unavailable`, ...); worth a retry later. */
export class ServiceUnavailableError extends MediaCacheApiError {}

const BY_STATUS: Record<number, typeof MediaCacheApiError> = {
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  422: InvalidRequestError,
  503: ServiceUnavailableError,
};

/** The error for a non-2xx answer, from its status and body text. */
export function apiErrorFrom(status: number, text: string): MediaCacheApiError {
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: handled below
  }
  let code = `http_${status}`;
  let detail = text.trim().slice(0, 500) || `HTTP ${status}`;
  if (isRecord(body) && typeof body["error"] === "string") {
    code = body["error"];
    const d = body["detail"];
    detail = typeof d === "string" ? d : JSON.stringify(d ?? null);
  }
  const Cls = BY_STATUS[status] ?? MediaCacheApiError;
  return new Cls(status, code, detail, body);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
