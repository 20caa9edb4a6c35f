// verifyWebhook against signatures made by the Python `standardwebhooks` package, the signer the
// server uses, run in a subprocess of the project's Python.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";

import { WebhookVerificationError, verifyWebhook, type WebhookEvent } from "mediacache-client";

import { pythonPath } from "./helpers/server.js";

const SIGNER = `
import json, sys
from datetime import datetime, timezone
from standardwebhooks.webhooks import Webhook
job = json.load(sys.stdin)
when = datetime.fromtimestamp(job["timestamp"], tz=timezone.utc)
print(Webhook(job["secret"]).sign(job["id"], when, job["payload"]))
`;

function importProblem(): string | null {
  const probe = spawnSync(pythonPath(), ["-c", "import standardwebhooks"], { encoding: "utf8" });
  // A Python that cannot run at all is a broken set-up, not a reason to skip: the tests then fail.
  if (probe.error) return null;
  if (probe.status !== 0) {
    return `the Python package standardwebhooks is not importable by ${pythonPath()}: ${probe.stderr.trim().split("\n").at(-1)}`;
  }
  return null;
}

/** The `webhook-signature` header that Python's standardwebhooks makes for this message. */
function pythonSign(secret: string, id: string, timestamp: number, payload: string): string {
  const run = spawnSync(pythonPath(), ["-c", SIGNER], {
    input: JSON.stringify({ secret, id, timestamp, payload }),
    encoding: "utf8",
  });
  assert.equal(run.status, 0, `the Python signer (${pythonPath()}) failed: ${run.error?.message ?? run.stderr}`);
  return run.stdout.trim();
}

const problem = importProblem();

describe("verifyWebhook with messages signed by Python standardwebhooks", { skip: problem ?? false }, () => {
  const secret = `whsec_${randomBytes(24).toString("base64")}`;
  const event: WebhookEvent<Record<string, unknown>> = {
    type: "asset.cached",
    id: `evt_${randomBytes(8).toString("hex")}`,
    timestamp: new Date().toISOString(),
    data: { id: "0b8f5f1e-0000-4000-8000-000000000000", status: "CACHED", original_url: "https://cdn.example/café-🎵.jpg" },
  };
  const payload = JSON.stringify(event);
  const id = `msg_${randomBytes(8).toString("hex")}`;
  const now = Math.floor(Date.now() / 1000);
  const signature = pythonSign(secret, id, now, payload);
  const headers = { "webhook-id": id, "webhook-timestamp": String(now), "webhook-signature": signature };

  test("accepts the signed payload and returns its JSON, whatever shape the headers come in", () => {
    assert.match(signature, /^v1,[A-Za-z0-9+/]+=*$/);
    assert.deepEqual(verifyWebhook(payload, headers, secret), event);
    // fetch's Headers (Next.js route handlers), Node's lower-case record, and other spellings.
    assert.deepEqual(verifyWebhook(payload, new Headers(headers), secret), event);
    const upper = { "Webhook-Id": id, "WEBHOOK-TIMESTAMP": String(now), "Webhook-Signature": [signature] };
    assert.deepEqual(verifyWebhook(payload, upper, secret), event);
    // The raw bytes of the body verify as its text does.
    assert.deepEqual(verifyWebhook(Buffer.from(payload, "utf8"), headers, secret), event);
  });

  test("accepts a header with several signatures when one of them matches (secret rotation)", () => {
    const other = `v1,${randomBytes(32).toString("base64")}`;
    const both = { ...headers, "webhook-signature": `${other} ${signature}` };
    assert.deepEqual(verifyWebhook(payload, both, secret), event);
    // A signature of another version is not checked as v1.
    const v2 = { ...headers, "webhook-signature": signature.replace(/^v1,/, "v2,") };
    assert.throws(() => verifyWebhook(payload, v2, secret), WebhookVerificationError);
  });

  test("rejects a tampered body, a changed id, and another secret", () => {
    const tampered = payload.replace("asset.cached", "asset.failed");
    assert.throws(() => verifyWebhook(tampered, headers, secret), (err: unknown) => {
      assert.ok(err instanceof WebhookVerificationError);
      assert.match(err.message, /no matching signature/);
      return true;
    });
    assert.throws(() => verifyWebhook(payload, { ...headers, "webhook-id": `${id}x` }, secret), WebhookVerificationError);
    const another = `whsec_${randomBytes(24).toString("base64")}`;
    assert.throws(() => verifyWebhook(payload, headers, another), WebhookVerificationError);
  });

  test("rejects an old and a future timestamp even when correctly signed", () => {
    const old = now - 10 * 60;
    const oldHeaders = { ...headers, "webhook-timestamp": String(old), "webhook-signature": pythonSign(secret, id, old, payload) };
    assert.throws(() => verifyWebhook(payload, oldHeaders, secret), /too old/);
    // Still inside the 5 minutes when "now" is moved to the message's time: the signature itself is good.
    assert.deepEqual(verifyWebhook(payload, oldHeaders, secret, { now: old * 1000 }), event);

    const future = now + 10 * 60;
    const futureHeaders = { ...headers, "webhook-timestamp": String(future), "webhook-signature": pythonSign(secret, id, future, payload) };
    assert.throws(() => verifyWebhook(payload, futureHeaders, secret), /too new/);
  });

  test("rejects missing headers and a timestamp that is not a number", () => {
    const { "webhook-signature": _drop, ...unsigned } = headers;
    assert.throws(() => verifyWebhook(payload, unsigned, secret), /missing header webhook-signature/);
    assert.throws(() => verifyWebhook(payload, {}, secret), /missing header webhook-id, webhook-timestamp, webhook-signature/);
    assert.throws(
      () => verifyWebhook(payload, { ...headers, "webhook-timestamp": `${now}.5` }, secret),
      WebhookVerificationError,
    );
  });

  test("refuses an empty secret as a programming error, not as a bad message", () => {
    assert.throws(() => verifyWebhook(payload, headers, "whsec_"), TypeError);
  });
});
