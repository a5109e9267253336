//! When a failed delivery is tried again: exponential backoff with jitter, for a bounded time.
//! Pure: the attempt count, the times and the jitter come in; the decision comes out.

use std::time::Duration;

use rally_app::model::Timestamp;

/// The first retry waits about this long.
const FIRST: Duration = Duration::from_secs(1);
/// No wait is longer than this.
const CAP: Duration = Duration::from_secs(300);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    At(Timestamp),
    /// It has failed for longer than deliveries are retried: give up on it.
    GiveUp,
}

/// After `attempts` failed attempts of a delivery whose first attempt failed at `first_failed`:
/// wait `FIRST · 2^(attempts-1)`, at most `CAP`, scaled by `0.5 + jitter/2` (`jitter` in
/// `[0, 1)`, so concurrent retries spread out); give up once the next attempt would come more
/// than `retry_for` after the first failure.
pub fn after_failure(
    attempts: u32,
    first_failed: Timestamp,
    now: Timestamp,
    retry_for: Duration,
    jitter: f64,
) -> Next {
    let doubled = FIRST.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let wait = doubled.min(CAP).mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
    let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
    let at = Timestamp::from_unix_nanos(now.unix_nanos().saturating_add(nanos));
    if Duration::from_nanos(at.nanos_since(first_failed)) > retry_for {
        Next::GiveUp
    } else {
        Next::At(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_unix_nanos((secs * 1e9) as u64)
    }

    #[test]
    fn waits_double_up_to_the_cap_and_stop_after_the_bound() {
        let day = Duration::from_secs(86_400);
        // (attempts, now since the first failure, jitter, bound) → next attempt's time
        let cases = [
            (1, 0.0, 1.0, day, Next::At(at(1.0))),
            (1, 0.0, 0.0, day, Next::At(at(0.5))),
            (2, 1.0, 1.0, day, Next::At(at(3.0))),
            (3, 3.0, 1.0, day, Next::At(at(7.0))),
            (10, 100.0, 1.0, day, Next::At(at(400.0))),
            (30, 1000.0, 1.0, day, Next::At(at(1300.0))),
            (3, 3.0, 1.0, Duration::from_secs(6), Next::GiveUp),
            (3, 3.0, 1.0, Duration::from_secs(7), Next::At(at(7.0))),
            (u32::MAX, 0.0, 1.0, day, Next::At(at(300.0))),
        ];
        for (attempts, now, jitter, bound, expected) in cases {
            assert_eq!(
                after_failure(attempts, at(0.0), at(now), bound, jitter),
                expected,
                "attempt {attempts} at {now}s, jitter {jitter}"
            );
        }
    }
}
