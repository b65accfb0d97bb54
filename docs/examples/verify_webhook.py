import hashlib
import hmac
import time

# How far X-CodeQ-Timestamp may be from this machine's clock.
TOLERANCE_SECONDS = 300


def verify_webhook(secret: str, timestamp: str, signature: str, body: bytes) -> bool:
    """True if the request is codeQ's and recent. `timestamp` and `signature`
    are the X-CodeQ-Timestamp and X-CodeQ-Signature headers; `body` is the
    raw request body, exactly as received (before any JSON parsing)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(time.time() - sent) > TOLERANCE_SECONDS:
        return False
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), (signature or "").encode())
