export { MediaCacheClient, MAX_BATCH, MAX_WAIT_S } from "./client.js";
export type { CleanupOptions, FetchLike, MediaCacheClientOptions } from "./client.js";
export {
  ForbiddenError,
  InvalidRequestError,
  MediaCacheApiError,
  MediaCacheConnectionError,
  MediaCacheError,
  NotFoundError,
  ServiceUnavailableError,
  UnauthorizedError,
} from "./errors.js";
export * from "./types.js";
export { WebhookVerificationError, verifyWebhook } from "./webhook.js";
export type { VerifyWebhookOptions, WebhookEvent, WebhookEventType, WebhookHeaders } from "./webhook.js";
