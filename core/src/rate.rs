//! The publish rate limit: a token bucket per client address.

use std::collections::HashMap;
use std::time::Instant;

use core::net::IpAddr;

/// Most tracked addresses for the publish rate limit before full buckets are forgotten.
const MAX_RATE_ENTRIES: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets refilled at `rate` per second up to `burst`, one per address.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: u32,
    burst: u32,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimit {
    /// `rate` publishes per second with bursts of `burst`; a rate of 0 turns the limit off.
    pub fn new(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// Takes one publish token for `peer`. `Some(seconds)`: none left, retry after that long.
    pub fn take(&mut self, peer: IpAddr, now: Instant) -> Option<u64> {
        let rate = f64::from(self.rate);
        if rate <= 0.0 {
            return None;
        }
        let burst = f64::from(self.burst.max(1));
        if self.buckets.len() >= MAX_RATE_ENTRIES && !self.buckets.contains_key(&peer) {
            // Forget addresses whose bucket has refilled: they are indistinguishable from new.
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_RATE_ENTRIES {
                self.buckets.clear();
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}
