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
export {
  WEBHOOK_ASSET_DATA_KEYS,
  WEBHOOK_DERIVATIVE_KEYS,
  WEBHOOK_DERIVED_DATA_KEYS,
  WebhookVerificationError,
  verifyWebhook,
} from "./webhook.js";
export type {
  MediaCacheWebhookEvent,
  VerifyWebhookOptions,
  WebhookAssetData,
  WebhookDerivative,
  WebhookDerivedData,
  WebhookEvent,
  WebhookEventType,
  WebhookHeaders,
} from "./webhook.js";
