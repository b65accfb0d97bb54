use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `X-CodeQ-Timestamp` may be from this machine's clock.
const TOLERANCE_SECONDS: u64 = 300;

/// True if the request is codeQ's and recent. `timestamp` and `signature`
/// are the `X-CodeQ-Timestamp` and `X-CodeQ-Signature` headers; `body` is
/// the raw request body, exactly as received (before any JSON parsing).
pub fn verify_webhook(secret: &[u8], timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Ok(sent) = timestamp.parse::<u64>() else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    if now.abs_diff(sent) > TOLERANCE_SECONDS {
        return false;
    }
    let Some(signature) = from_hex(signature) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Compares in constant time.
    mac.verify_slice(&signature).is_ok()
}

/// The bytes of a hex string; `None` if it is not one.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}
