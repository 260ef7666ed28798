//! The write-timestamp rule: how a progress state becomes a ScyllaDB cell timestamp.
//!
//! ScyllaDB resolves concurrent writes cell by cell: the higher write timestamp wins,
//! whatever order the writes arrive in. Deriving that timestamp from the state's own
//! last-write-wins key (`seq`, then the payload tie-break) makes the cluster apply the
//! same order as memory and SQLite (I1), and makes every retry of a write harmless: a
//! replayed write carries the same timestamp and so changes nothing, and a stale one
//! loses to the newer cells already stored (I4 relies on that to retry whole batches).
//!
//! The rule is `seq * 1000 + tiebreak` microseconds. The API refuses a `seq` more than
//! 24 h ahead of the server clock (in milliseconds), so honest timestamps stay within
//! ScyllaDB's future-timestamp guard (3 days); anything further out is refused here
//! as a poison row rather than frozen into the cluster.

use crate::model::{tiebreak, Progress, TIEBREAK_RANGE};

/// How far ahead of the local clock a `seq` may be before the store refuses it. The
/// API allows 24 h; the remaining margin absorbs clock skew between ingest nodes.
pub const MAX_FUTURE_MS: u64 = 3 * 24 * 60 * 60 * 1000 - 60 * 60 * 1000;

/// Why a state has no valid write timestamp. Such a row is a poison row: no retry
/// can ever store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("seq {seq} does not fit in a microsecond write timestamp")]
    Overflow { seq: u64 },
    #[error("seq {seq} is more than {max_future_ms} ms ahead of the clock ({now_ms})")]
    TooFarAhead {
        seq: u64,
        now_ms: u64,
        max_future_ms: u64,
    },
}

/// The write timestamp (µs) for a state with this `seq` and tie-break, checked
/// against the local clock `now_ms` (ms since the Unix epoch).
pub fn write_timestamp(seq: u64, tiebreak: u16, now_ms: u64) -> Result<i64, TimestampError> {
    debug_assert!(tiebreak < TIEBREAK_RANGE);
    if seq > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(TimestampError::TooFarAhead {
            seq,
            now_ms,
            max_future_ms: MAX_FUTURE_MS,
        });
    }
    seq.checked_mul(u64::from(TIEBREAK_RANGE))
        .and_then(|us| us.checked_add(u64::from(tiebreak)))
        .and_then(|us| i64::try_from(us).ok())
        .ok_or(TimestampError::Overflow { seq })
}

/// The write timestamp of one progress state (see [`write_timestamp`]).
pub fn progress_timestamp(progress: &Progress, now_ms: u64) -> Result<i64, TimestampError> {
    let tb = tiebreak(progress.position_ms, progress.device_id.as_deref());
    write_timestamp(progress.seq, tb, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LwwKey;

    const NOW_MS: u64 = 1_780_000_000_000;
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    fn ts(seq: u64, position_ms: u64, device: Option<&str>) -> i64 {
        write_timestamp(seq, tiebreak(position_ms, device), NOW_MS).expect("valid timestamp")
    }

    #[test]
    fn i1_timestamp_is_seq_times_1000_plus_tiebreak() {
        assert_eq!(write_timestamp(7, 0, NOW_MS), Ok(7_000));
        assert_eq!(write_timestamp(7, 999, NOW_MS), Ok(7_999));
        assert_eq!(write_timestamp(1, 412, NOW_MS), Ok(1_412));
    }

    #[test]
    fn i1_timestamp_is_strictly_monotonic_in_seq_whatever_the_tiebreak() {
        for seq in [1, 2, 1_000, NOW_MS - 1, NOW_MS, NOW_MS + DAY_MS - 1] {
            let highest_of_seq = write_timestamp(seq, TIEBREAK_RANGE - 1, NOW_MS);
            let lowest_of_next = write_timestamp(seq + 1, 0, NOW_MS);
            assert!(highest_of_seq.expect("in range") < lowest_of_next.expect("in range"));
        }
    }

    #[test]
    fn i1_timestamp_orders_like_the_lww_key_across_seq_and_tiebreak() {
        let states = [
            (5, 0, None),
            (5, 42_000, Some("tv")),
            (5, 7, Some("phone")),
            (6, 0, None),
            (6, 1, Some("a")),
        ];
        for a in states {
            for b in states {
                let (ka, kb) = (LwwKey::new(a.0, a.1, a.2), LwwKey::new(b.0, b.1, b.2));
                if (ka.seq, ka.tiebreak()) != (kb.seq, kb.tiebreak()) {
                    assert_eq!(ka < kb, ts(a.0, a.1, a.2) < ts(b.0, b.1, b.2));
                }
            }
        }
    }

    #[test]
    fn tiebreak_stays_inside_one_millisecond_of_seq() {
        for pos in [0, 1, 12_345, u64::MAX] {
            for dev in [None, Some("d"), Some("laptop-7")] {
                let t = ts(100, pos, dev);
                assert!((100_000..101_000).contains(&t), "{t}");
            }
        }
    }

    #[test]
    fn seq_allowed_by_the_api_stays_within_scyllas_future_limit() {
        let api_max_seq = NOW_MS + DAY_MS;
        let t = write_timestamp(api_max_seq, TIEBREAK_RANGE - 1, NOW_MS).expect("allowed");
        let now_us = i64::try_from(NOW_MS * 1000).expect("fits");
        let three_days_us = 3 * DAY_MS as i64 * 1000;
        assert!(t - now_us < three_days_us);
    }

    #[test]
    fn seq_too_far_ahead_is_refused() {
        let seq = NOW_MS + MAX_FUTURE_MS + 1;
        assert_eq!(
            write_timestamp(seq, 0, NOW_MS),
            Err(TimestampError::TooFarAhead {
                seq,
                now_ms: NOW_MS,
                max_future_ms: MAX_FUTURE_MS
            })
        );
        assert!(write_timestamp(NOW_MS + MAX_FUTURE_MS, 999, NOW_MS).is_ok());
    }

    #[test]
    fn seq_that_overflows_microseconds_is_refused() {
        let huge = u64::MAX / 1000;
        assert_eq!(
            write_timestamp(huge, 0, u64::MAX),
            Err(TimestampError::Overflow { seq: huge })
        );
        let top_seq = i64::MAX as u64 / 1000;
        assert_eq!(write_timestamp(top_seq, 807, u64::MAX), Ok(i64::MAX));
        assert!(write_timestamp(top_seq, 808, u64::MAX).is_err());
        assert!(write_timestamp(top_seq + 1, 0, u64::MAX).is_err());
    }
}
