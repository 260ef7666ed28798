//! When each request is *meant* to be sent, and how latency is measured against it.
//!
//! Open loop (`--rate`, the default): every viewer has a due time on a fixed timetable
//! that does not move when the server is slow. Latency is measured from the due
//! (intended) time, so a stall that delays the requests queued behind it shows up in
//! their latency — the coordinated-omission correction of wrk2. The uncorrected figure
//! (from the moment the request actually left) is kept beside it, because the gap
//! between the two is itself the signal that the client or server fell behind.
//!
//! Closed loop (`--max`): each connection sends its next request as soon as the last
//! one is answered; intended and actual send time are the same.
//!
//! A connection owns a [`Schedule`] of its own viewers only, so the timetable needs no
//! lock; times are offsets from the run's start so tests can drive a virtual clock.

use std::time::Duration;

/// Open loop on the timetable, or closed loop as fast as answers come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    Open,
    Closed,
}

/// The due times of one connection's viewers, earliest first.
///
/// A calendar queue rather than a binary heap: popping the earliest entry is on the hot
/// path of every request, and a heap of thousands of entries per connection costs a
/// dozen cache misses per pop. Here time is cut into buckets of `width` so that a bucket
/// holds about one entry; a ring of buckets spans the longest gap a viewer can take, so
/// a push lands in one bucket and a pop scans the (hot) current one. Entries are packed
/// into one `u64`: due time in microseconds above, viewer index in the low
/// [`INDEX_BITS`].
#[derive(Debug)]
pub struct Schedule {
    width_us: u64,
    ring: Vec<Vec<u64>>,
    /// Absolute number of the bucket no entry is earlier than.
    cursor: u64,
    len: usize,
}

/// Bits of a packed entry that hold the viewer index: one connection can own up to
/// 2^24 (16.7 M) viewers, and due times reach 2^40 µs (12 days) into a run.
pub const INDEX_BITS: u32 = 24;
/// Most viewers one connection can own.
pub const MAX_VIEWERS_PER_CONNECTION: u64 = 1 << INDEX_BITS;
const MAX_BUCKETS: u64 = 1 << 16;

fn pack(due: Duration, viewer: usize) -> u64 {
    let us = u64::try_from(due.as_micros()).unwrap_or(u64::MAX >> INDEX_BITS);
    (us.min(u64::MAX >> INDEX_BITS) << INDEX_BITS)
        | (viewer as u64 & (MAX_VIEWERS_PER_CONNECTION - 1))
}

fn unpack(x: u64) -> (Duration, usize) {
    let viewer = (x & (MAX_VIEWERS_PER_CONNECTION - 1)) as usize;
    (Duration::from_micros(x >> INDEX_BITS), viewer)
}

impl Schedule {
    /// An empty schedule for about `entries` viewers whose gaps never exceed `max_gap`.
    pub fn new(entries: usize, max_gap: Duration) -> Schedule {
        let span_us = u64::try_from(max_gap.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let buckets = (entries as u64).clamp(1, MAX_BUCKETS);
        let width_us = span_us.div_ceil(buckets).max(1);
        // One bucket more than the span needs, so a pushed entry never lands in the
        // bucket being drained from a later lap (and such entries are skipped anyway).
        let ring = (0..span_us.div_ceil(width_us) + 2)
            .map(|_| Vec::new())
            .collect();
        Schedule {
            width_us,
            ring,
            cursor: 0,
            len: 0,
        }
    }

    /// Local viewer `i` (below [`MAX_VIEWERS_PER_CONNECTION`]) stands for global slot
    /// `slots[i]`; slot `s` of `viewers` first becomes due at `s * interval / viewers`,
    /// so the whole population is spread evenly over one interval and the aggregate rate
    /// is `viewers / interval` from the start. `max_gap` bounds every later gap.
    pub fn spread(slots: &[u64], viewers: u64, interval: Duration, max_gap: Duration) -> Schedule {
        let mut s = Schedule::new(slots.len(), max_gap.max(interval));
        for (i, &slot) in slots.iter().enumerate() {
            let frac = slot as f64 / viewers.max(1) as f64;
            s.push(interval.mul_f64(frac), i);
        }
        s
    }

    fn bucket(&self, entry: u64) -> u64 {
        (entry >> INDEX_BITS) / self.width_us
    }

    fn slot(&self, bucket: u64) -> usize {
        // The remainder is below the ring's length, a usize.
        (bucket % self.ring.len() as u64) as usize
    }

    /// Where the earliest entry is: (ring slot, index in it).
    fn earliest(&mut self) -> Option<(usize, usize)> {
        if self.len == 0 {
            return None;
        }
        loop {
            let slot = self.slot(self.cursor);
            let cursor = self.cursor;
            let width = self.width_us;
            let found = self.ring[slot]
                .iter()
                .enumerate()
                .filter(|(_, &e)| (e >> INDEX_BITS) / width <= cursor)
                .min_by_key(|(_, &e)| e)
                .map(|(i, _)| i);
            match found {
                Some(i) => return Some((slot, i)),
                None => self.cursor += 1,
            }
        }
    }

    pub fn pop(&mut self) -> Option<(Duration, usize)> {
        let (slot, i) = self.earliest()?;
        self.len -= 1;
        Some(unpack(self.ring[slot].swap_remove(i)))
    }

    pub fn push(&mut self, due: Duration, viewer: usize) {
        let entry = pack(due, viewer);
        // An entry earlier than the cursor (never made by the load loop) is kept in the
        // current bucket, where it is the next to go.
        let bucket = self.bucket(entry).max(self.cursor);
        let slot = self.slot(bucket);
        self.ring[slot].push(entry);
        self.len += 1;
    }
}

/// The two latencies of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// From the intended send time (coordinated omission corrected).
    pub corrected: Duration,
    /// From the actual send time.
    pub uncorrected: Duration,
}

impl Pacing {
    /// When a request due at `due` leaves, given that the connection is free at `now`
    /// (both offsets from the run's start).
    pub fn send_at(self, due: Duration, now: Duration) -> Duration {
        match self {
            Pacing::Open => due.max(now),
            Pacing::Closed => now,
        }
    }

    /// The latencies of a request due at `due`, sent at `sent`, answered at `done`.
    pub fn latency(self, due: Duration, sent: Duration, done: Duration) -> Latency {
        let uncorrected = done.saturating_sub(sent);
        let corrected = match self {
            Pacing::Open => done.saturating_sub(due.min(sent)),
            Pacing::Closed => uncorrected,
        };
        Latency {
            corrected,
            uncorrected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn due_times_spread_the_population_over_one_interval() {
        let slots: Vec<u64> = (0..4).collect();
        let mut s = Schedule::spread(&slots, 4, Duration::from_secs(10), Duration::from_secs(11));
        let due: Vec<Duration> = std::iter::from_fn(|| s.pop().map(|(d, _)| d)).collect();
        let expect: Vec<Duration> = [0, 2500, 5000, 7500].iter().map(|&m| m * MS).collect();
        assert_eq!(due, expect);
    }

    #[test]
    fn one_connection_holds_every_other_slot_at_its_global_phase() {
        let mut s = Schedule::spread(&[1, 3], 4, Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(s.pop(), Some((2500 * MS, 0)));
        s.push(12_500 * MS, 0);
        assert_eq!(s.pop(), Some((7500 * MS, 1)));
        assert_eq!(s.pop(), Some((12_500 * MS, 0)));
    }

    #[test]
    fn pops_in_the_same_order_as_a_sorted_list() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let max_gap = Duration::from_millis(1300);
        let mut s = Schedule::new(300, max_gap);
        let mut reference = std::collections::BTreeSet::new();
        for v in 0..300 {
            let due = Duration::from_micros(rng.random_range(0..1_000_000));
            s.push(due, v);
            reference.insert((due, v));
        }
        for _ in 0..20_000 {
            let got = s.pop().expect("never empty");
            let want = reference.pop_first().expect("never empty");
            assert_eq!(got, want);
            let gap = Duration::from_micros(rng.random_range(700_000..=1_300_000));
            s.push(got.0 + gap, got.1);
            reference.insert((got.0 + gap, got.1));
        }
        // An entry pushed into the past still comes out first.
        s.push(Duration::ZERO, 999);
        assert_eq!(s.pop(), Some((Duration::ZERO, 999)));
    }

    /// Drives `pacing` on a virtual clock against a server that answers in 1 ms except
    /// for one 1 s stall, at 100 requests/s on one connection.
    fn simulate(pacing: Pacing) -> (Vec<Duration>, Vec<Duration>) {
        let interval = Duration::from_secs(1);
        let slots: Vec<u64> = (0..100).collect();
        let mut s = Schedule::spread(&slots, 100, interval, interval);
        let (mut now, mut corrected, mut uncorrected) = (Duration::ZERO, vec![], vec![]);
        for n in 0..300 {
            let (due, v) = s.pop().expect("viewers never run out");
            let sent = pacing.send_at(due, now);
            let service = if n == 100 { 1000 * MS } else { MS };
            let done = sent + service;
            let l = pacing.latency(due, sent, done);
            corrected.push(l.corrected);
            uncorrected.push(l.uncorrected);
            now = done;
            s.push(due + interval, v);
        }
        (corrected, uncorrected)
    }

    #[test]
    fn open_loop_charges_a_stall_to_every_request_queued_behind_it() {
        let (corrected, uncorrected) = simulate(Pacing::Open);
        // Requests meant for the stalled second waited for it; corrected latency says
        // so, uncorrected latency hides it (only the stalled request is slow).
        let slow_corrected = corrected.iter().filter(|&&l| l > 50 * MS).count();
        let slow_uncorrected = uncorrected.iter().filter(|&&l| l > 50 * MS).count();
        assert_eq!(slow_uncorrected, 1);
        assert!(slow_corrected >= 90, "{slow_corrected} slow requests");
        assert_eq!(corrected[100], 1000 * MS);
        assert!(corrected[101] > 980 * MS && corrected[101] < 1000 * MS);
        // Once the backlog is drained the timetable is met again.
        assert_eq!(corrected[299], MS);
        assert_eq!(uncorrected[299], MS);
    }

    #[test]
    fn open_loop_keeps_the_timetable_when_the_server_keeps_up() {
        let (corrected, uncorrected) = simulate(Pacing::Open);
        assert_eq!(corrected[..100], uncorrected[..100]);
        assert!(corrected[..100].iter().all(|&l| l == MS));
    }

    #[test]
    fn closed_loop_has_no_timetable_so_both_figures_agree() {
        let (corrected, uncorrected) = simulate(Pacing::Closed);
        assert_eq!(corrected, uncorrected);
        assert_eq!(Pacing::Closed.send_at(5000 * MS, 3 * MS), 3 * MS);
    }
}
