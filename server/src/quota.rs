//! Rate limits: a token bucket ([`Budget`]), and budgets kept per key ([`Quota`]) — per client
//! address or per user — for what one person or one machine may do across connections:
//! sessions created, campaigns created, reads over HTTP. Time is an argument; nothing here
//! sleeps.
//!
//! A quota keeps at most [`QUOTA_KEYS`] keys: when full, keys whose bucket has refilled (they
//! would allow a whole burst anyway) are dropped first, then the oldest. Memory stays bounded
//! however many addresses or users show up.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use rally_app::model::UserId;

/// Keys one quota remembers at most.
pub const QUOTA_KEYS: usize = 100_000;

/// A token bucket: `rate` tokens a second, at most `burst` saved up. One per connection for
/// writes, one for reads.
#[derive(Debug)]
pub struct Budget {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Budget {
            tokens: burst,
            rate,
            burst,
            at: now,
        }
    }

    /// Spend a token at `now`, if one has accrued.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether a whole burst has accrued by `now` (the bucket is as good as new).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Budgets per key, all with the same rate and burst.
pub struct Quota<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Budget>>,
}

impl<K: Eq + Hash + Clone> Quota<K> {
    /// `per_minute` sustained, bursts of `burst`.
    pub fn per_minute(per_minute: f64, burst: f64) -> Self {
        Quota {
            rate: per_minute / 60.0,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spend one of `key`'s tokens at `now`, if it has one.
    pub fn take(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("quota lock");
        if !buckets.contains_key(key) && buckets.len() >= QUOTA_KEYS {
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= QUOTA_KEYS {
                let oldest = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    buckets.remove(&oldest);
                }
            }
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Budget::new(self.rate, self.burst, now))
            .take(now)
    }

    /// Sustained tokens a minute.
    pub fn per_minute_rate(&self) -> f64 {
        self.rate * 60.0
    }
}

/// What one machine or one person may do, across all their connections.
pub struct Quotas {
    /// New sessions (sign-ins) per client address.
    pub sessions: Quota<IpAddr>,
    /// Campaigns created per user.
    pub campaigns: Quota<UserId>,
    /// HTTP API requests per client address.
    pub api: Quota<IpAddr>,
}

/// The settings behind [`Quotas`], per minute (bursts of twice as many).
#[derive(Debug, Clone, Copy)]
pub struct QuotaConfig {
    pub sessions_per_minute: u32,
    pub campaigns_per_minute: u32,
    pub api_per_minute: u32,
}

impl Quotas {
    /// Why a create was refused (the same words over HTTP and the WebSocket).
    pub fn campaigns_refused(&self) -> String {
        format!(
            "more than {} new campaigns a minute; try again shortly",
            self.campaigns.per_minute_rate()
        )
    }

    pub fn new(config: QuotaConfig) -> Self {
        fn quota<K: Eq + Hash + Clone>(per_minute: u32) -> Quota<K> {
            let per_minute = f64::from(per_minute);
            Quota::per_minute(per_minute, 2.0 * per_minute)
        }
        Quotas {
            sessions: quota(config.sessions_per_minute),
            campaigns: quota(config.campaigns_per_minute),
            api: quota(config.api_per_minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_table() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (at, taken?) in order, for 10 writes/s with bursts of 2.
        let steps = [
            (0, true),
            (0, true),
            (0, false), // burst spent
            (50, false),
            (150, true), // 1.5 tokens accrued since 0
            (150, false),
            (10_000, true), // a long pause refills only up to the burst
            (10_000, true),
            (10_000, false),
            (9_000, false), // time going backwards adds nothing
        ];
        let mut budget = Budget::new(10.0, 2.0, t0);
        for (i, (at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(budget.take(ms(at)), expected, "step {i} at {at} ms");
        }
    }

    #[test]
    fn quotas_are_per_key_and_bounded() {
        let t0 = Instant::now();
        let quota: Quota<u32> = Quota::per_minute(60.0, 2.0);
        assert!(quota.take(&1, t0) && quota.take(&1, t0));
        assert!(!quota.take(&1, t0), "key 1 spent its burst");
        assert!(quota.take(&2, t0), "key 2 has its own");
        assert!(
            quota.take(&1, t0 + Duration::from_secs(1)),
            "one a second comes back"
        );
        for key in 10..(10 + QUOTA_KEYS as u32) {
            quota.take(&key, t0 + Duration::from_secs(2));
        }
        assert!(quota.buckets.lock().unwrap().len() <= QUOTA_KEYS);
    }
}
