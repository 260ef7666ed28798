//! Exponential backoff with jitter, the one retry *mechanism* of the project (the
//! flusher's retries of a failed flush, the Scylla writer's retries of one row). What
//! is worth retrying is decided by each caller; how long to wait is decided here.

use std::time::Duration;

/// Delay before attempt `retry + 1` (`retry` counts from 0): exponential from `base`,
/// capped at `max`, with "equal jitter": half the delay is fixed so retries stay
/// spaced, half is spread by `jitter` in `[0, 1)` so that many writers failing together
/// do not come back together.
pub fn delay(base: Duration, max: Duration, retry: u32, jitter: f64) -> Duration {
    let exp = base
        .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// [`delay`] with a random jitter.
pub fn jittered(base: Duration, max: Duration, retry: u32) -> Duration {
    delay(base, max, retry, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i4_backoff_doubles_is_jittered_and_capped() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(2);
        assert_eq!(delay(base, max, 0, 0.0), Duration::from_millis(25));
        assert_eq!(delay(base, max, 0, 1.0), Duration::from_millis(50));
        assert_eq!(delay(base, max, 1, 0.0), Duration::from_millis(50));
        assert_eq!(delay(base, max, 3, 0.5), Duration::from_millis(300));
        for retry in [6, 10, 31, 32, 1000] {
            let d = delay(base, max, retry, 1.0);
            assert!(d <= max, "{retry}: {d:?}");
            assert!(d >= max / 2, "{retry}: {d:?}");
        }
    }
}
