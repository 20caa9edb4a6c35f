"""Standard Webhooks signatures (the `standardwebhooks` package), with its errors turned into ours."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks import Webhook

from mediacache.errors import ConfigError

SECRET_PREFIX = "whsec_"


def check_secret(secret: str) -> Webhook:
    """The signer for `secret`; ConfigError unless it is `whsec_` followed by base64."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError("MEDIACACHE_WEBHOOK_SECRET does not start with whsec_; give a Standard Webhooks "
                          "secret, whsec_ followed by base64 (24 to 64 random bytes)")
    try:
        return Webhook(secret)
    except Exception as exc:  # binascii.Error, or the package's own empty-secret error
        raise ConfigError("MEDIACACHE_WEBHOOK_SECRET is not whsec_ followed by valid base64; generate a new "
                          "one (24 to 64 random bytes, base64-encoded)") from exc


def signed_headers(signer: Webhook, event_id: str, sent_at: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    The timestamp is the attempt's, not the event's: receivers refuse signatures older than five
    minutes, and a retry may come hours after the event.
    """
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signer.sign(event_id, sent_at, body),
        "content-type": "application/json",
    }
