//! A bounded cache of tokens already verified, keyed by the token's
//! SHA-256 and valid until the token's `exp`, so a busy worker does not pay
//! a signature check on every request. (The JWT verifier also drops an
//! entry whose signing key left the JWKS.)
//!
//! Only digests are kept, never tokens. When full, expired entries are
//! dropped first, then an arbitrary one: a miss only costs a signature
//! check, so no effort goes into a smarter eviction.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use codeq_core::Timestamp;

/// The default number of entries.
pub const DEFAULT_CAPACITY: usize = 10_000;

struct Entry<T> {
    value: T,
    expires_at: Timestamp,
}

/// Verified tokens and what they resolved to.
pub struct VerifiedTokens<T> {
    /// A `std` mutex: held for a hash-map lookup or insert, never across
    /// an await.
    entries: Mutex<HashMap<[u8; 32], Entry<T>>>,
    capacity: usize,
}

impl<T: Clone> VerifiedTokens<T> {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// What the token with this digest resolved to, while `now` is before
    /// its expiry.
    pub fn get(&self, digest: &[u8; 32], now: Timestamp) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(digest).filter(|entry| now < entry.expires_at).map(|entry| entry.value.clone())
    }

    /// Remembers `value` for the token with this digest until
    /// `expires_at`; a token already expired at `now` is not kept.
    pub fn insert(&self, digest: [u8; 32], value: T, expires_at: Timestamp, now: Timestamp) {
        if expires_at <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, entry| now < entry.expires_at);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(digest, Entry { value, expires_at });
    }

    /// Forgets the token with this digest.
    pub fn remove(&self, digest: &[u8; 32]) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(digest);
    }

    /// How many entries are held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn an_entry_is_served_until_its_expiry() {
        let cache = VerifiedTokens::new(4);
        cache.insert(digest(1), "a", Timestamp(2_000), Timestamp(1_000));
        assert_eq!(cache.get(&digest(1), Timestamp(1_999)), Some("a"));
        assert_eq!(cache.get(&digest(1), Timestamp(2_000)), None);
        assert_eq!(cache.get(&digest(2), Timestamp(1_000)), None);
    }

    #[test]
    fn an_expired_token_is_not_kept() {
        let cache = VerifiedTokens::new(4);
        cache.insert(digest(1), "a", Timestamp(1_000), Timestamp(1_000));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_and_never_grows_past_its_capacity() {
        let cache = VerifiedTokens::new(2);
        cache.insert(digest(1), 1, Timestamp(1_500), Timestamp(1_000));
        cache.insert(digest(2), 2, Timestamp(9_000), Timestamp(1_000));
        cache.insert(digest(3), 3, Timestamp(9_000), Timestamp(2_000));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&digest(2), Timestamp(2_000)), Some(2), "the live entry stays");
        assert_eq!(cache.get(&digest(3), Timestamp(2_000)), Some(3));

        cache.insert(digest(4), 4, Timestamp(9_000), Timestamp(2_000));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&digest(4), Timestamp(2_000)), Some(4));
    }
}
