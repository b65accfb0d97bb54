const crypto = require("node:crypto");

// How far X-CodeQ-Timestamp may be from this machine's clock.
const TOLERANCE_SECONDS = 300;

// True if the request is codeQ's and recent. `timestamp` and `signature` are
// the X-CodeQ-Timestamp and X-CodeQ-Signature headers; `body` is the raw
// request body as a Buffer, exactly as received (before any JSON parsing).
function verifyWebhook(secret, timestamp, signature, body) {
  const sent = Number(timestamp);
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - sent) > TOLERANCE_SECONDS) {
    return false;
  }
  const expected = crypto
    .createHmac("sha256", secret)
    .update(`${timestamp}.`)
    .update(body)
    .digest("hex");
  const given = Buffer.from(String(signature));
  return given.length === expected.length && crypto.timingSafeEqual(given, Buffer.from(expected));
}

module.exports = { verifyWebhook };
