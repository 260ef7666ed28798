//! The last-write-wins order (I1).
//!
//! States compare by `seq` first. Two different payloads with the same `seq` (two
//! devices that picked the same hybrid-clock value, or a buggy client) must resolve the
//! same way everywhere, including in ScyllaDB, which only compares write timestamps.
//! So the first tie-break is a payload fingerprint in `0..1000` that fits beside `seq`
//! in a microsecond timestamp (`seq * 1000 + tiebreak`); after it come the payload
//! fields themselves, so the order is total in memory and in SQLite.
//!
//! The fingerprint is FNV-1a over a fixed byte layout, written out here rather than
//! taken from a hashing crate on purpose: it is part of the stored contract (rows
//! written by one version must compare the same in the next), so it must never change
//! with a dependency upgrade.

use std::cmp::Ordering;

/// Tie-break values lie in `0..TIEBREAK_RANGE`.
pub const TIEBREAK_RANGE: u16 = 1000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The payload fingerprint used as the first tie-break for equal `seq`.
pub fn tiebreak(position_ms: u64, device_id: Option<&str>) -> u16 {
    let mut h = FNV_OFFSET;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    };
    position_ms.to_le_bytes().into_iter().for_each(&mut eat);
    device_id
        .unwrap_or("")
        .bytes()
        .chain(std::iter::once(0xff))
        .for_each(&mut eat);
    (h % u64::from(TIEBREAK_RANGE)) as u16
}

/// Sort key of a state: greater wins. Ordered by `(seq, tiebreak, position_ms,
/// device_id)`; the fingerprint is only computed when two `seq` are equal, which keeps
/// the common comparison on the hot path to one integer compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LwwKey<'a> {
    pub seq: u64,
    pub position_ms: u64,
    /// `None` sorts before every device id, as `''` does in SQLite (ids are never empty).
    pub device_id: Option<&'a str>,
}

impl<'a> LwwKey<'a> {
    pub fn new(seq: u64, position_ms: u64, device_id: Option<&'a str>) -> Self {
        LwwKey {
            seq,
            position_ms,
            device_id,
        }
    }

    /// The payload fingerprint: the first tie-break for equal `seq`.
    pub fn tiebreak(&self) -> u16 {
        tiebreak(self.position_ms, self.device_id)
    }
}

impl Ord for LwwKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.seq
            .cmp(&other.seq)
            .then_with(|| self.tiebreak().cmp(&other.tiebreak()))
            .then_with(|| self.position_ms.cmp(&other.position_ms))
            .then_with(|| self.device_id.cmp(&other.device_id))
    }
}

impl PartialOrd for LwwKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiebreak_is_in_range_and_stable() {
        for pos in [0, 1, 999, 1_000_000, u64::MAX] {
            for dev in [None, Some("a"), Some("phone-1")] {
                let t = tiebreak(pos, dev);
                assert!(t < TIEBREAK_RANGE);
                assert_eq!(t, tiebreak(pos, dev));
            }
        }
        // Pinned values (computed independently, in Python): changing the function
        // would reorder rows already stored.
        assert_eq!(tiebreak(0, None), 270);
        assert_eq!(tiebreak(42_000, Some("tv")), 196);
    }

    #[test]
    fn i1_seq_dominates_tiebreak() {
        let low = LwwKey::new(5, 9_999, Some("zzz"));
        let high = LwwKey::new(6, 0, None);
        assert!(high > low);
    }

    #[test]
    fn i1_order_is_seq_then_tiebreak_then_payload() {
        let keys = [
            LwwKey::new(7, 100, Some("phone")),
            LwwKey::new(7, 200, Some("laptop")),
            LwwKey::new(7, 200, None),
            LwwKey::new(7, 5, Some("tv")),
        ];
        for a in &keys {
            for b in &keys {
                let expect = (a.seq, a.tiebreak(), a.position_ms, a.device_id).cmp(&(
                    b.seq,
                    b.tiebreak(),
                    b.position_ms,
                    b.device_id,
                ));
                assert_eq!(a.cmp(b), expect, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn i1_equal_seq_different_payload_orders_the_same_both_ways() {
        let a = LwwKey::new(7, 100, Some("phone"));
        let b = LwwKey::new(7, 200, Some("laptop"));
        assert_ne!(a, b);
        assert_eq!(a > b, b < a);
    }
}
