//! The workload model: what `--viewers` players do, in planner units.
//!
//! Each viewer is a *slot* that one player session occupies at a time. At every due
//! time (the schedule decides when) the slot's player produces one [`Event`]: a plain
//! heartbeat, a duplicate (a retry), two heartbeats delivered out of order, a heartbeat
//! held back while offline, the backlog sent as one batch when it comes back online,
//! or a device switch (the new device reads the current `seq` and continues above it).
//! Sessions churn: a player leaves and the slot's next player is either the same
//! learner on another lesson or a new learner.
//!
//! Why per-viewer state and per-viewer random generators: a learner lives in exactly one
//! slot, so its `seq` stays strictly increasing (the API's hybrid clock
//! `seq = max(last_seq + 1, now_ms)`), every `seq` of a learner names exactly one payload,
//! and the verifier can tell a lost write from a reordered one. The decisions a viewer
//! makes depend only on `--seed` and its slot, not on how slots are spread over
//! connections. `seq` itself follows the wall clock, as the API asks.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How the synthetic players behave; validated by the CLI layer.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Concurrent players (slots).
    pub viewers: u64,
    /// Mean time between two heartbeats of one player.
    pub interval: Duration,
    /// Each gap is `interval * (1 ± jitter)`, uniformly.
    pub jitter: f64,
    /// Distinct lessons one learner ever plays.
    pub lessons_per_learner: u32,
    /// Size of the lesson catalog the Zipf popularity is drawn over.
    pub catalog: u32,
    /// Zipf exponent of lesson popularity (0 = uniform).
    pub zipf: f64,
    /// Probability, per heartbeat, that the session ends and the slot changes hands.
    pub churn_rate: f64,
    /// Probability that a heartbeat is sent twice (a client retry).
    pub dup_rate: f64,
    /// Probability that two consecutive heartbeats arrive swapped.
    pub reorder_rate: f64,
    /// Probability that a player goes offline and later syncs its backlog as a batch.
    pub offline_rate: f64,
    /// Heartbeats held back per offline episode.
    pub offline_beats: u32,
    /// Probability that a player switches device (GET current seq, continue above it).
    pub switch_rate: f64,
    /// Seed for every random decision.
    pub seed: u64,
    /// Prefix of the learner ids, so several runs or processes never share keys.
    pub id_prefix: String,
}

/// One (learner, lesson) key in compact form; ids are rendered by [`Ids`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub learner: u64,
    pub lesson: u32,
}

/// One heartbeat as the model produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub key: Key,
    pub position_ms: u64,
    pub seq: u64,
    pub device: u32,
}

/// What a viewer does at one due time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send `hb`; when `duplicate`, send it a second time right after (a retry).
    Beat { hb: Heartbeat, duplicate: bool },
    /// Send `newer` first and then `older`, which arrives late.
    Swapped { newer: Heartbeat, older: Heartbeat },
    /// Offline: the heartbeat is kept for the backlog, nothing is sent.
    Held,
    /// Back online: the backlog (oldest first), sent as one batch.
    Backlog(Vec<Heartbeat>),
    /// A new device takes over `key`: read its state, then call [`Viewer::resume`].
    Switch(Key),
}

/// Renders compact keys as the ids the server sees, and parses them back.
#[derive(Clone, Debug)]
pub struct Ids {
    learner_prefix: Vec<u8>,
}

const LESSON_PREFIX: &[u8] = b"lesson-";
const DEVICE_PREFIX: &[u8] = b"dev-";
const LEARNER_DIGITS: usize = 10;
const LESSON_DIGITS: usize = 5;

impl Ids {
    pub fn new(prefix: &str) -> Ids {
        let mut learner_prefix = prefix.as_bytes().to_vec();
        learner_prefix.push(b'-');
        Ids { learner_prefix }
    }

    pub fn push_learner(&self, buf: &mut Vec<u8>, learner: u64) {
        buf.extend_from_slice(&self.learner_prefix);
        push_padded(buf, learner, LEARNER_DIGITS);
    }

    pub fn push_lesson(buf: &mut Vec<u8>, lesson: u32) {
        buf.extend_from_slice(LESSON_PREFIX);
        push_padded(buf, u64::from(lesson), LESSON_DIGITS);
    }

    pub fn learner(&self, learner: u64) -> String {
        let mut buf = Vec::with_capacity(self.learner_prefix.len() + LEARNER_DIGITS);
        self.push_learner(&mut buf, learner);
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub fn lesson(lesson: u32) -> String {
        let mut buf = Vec::with_capacity(LESSON_PREFIX.len() + LESSON_DIGITS);
        Ids::push_lesson(&mut buf, lesson);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The lesson index of an id this model rendered, or `None` for any other id.
    pub fn parse_lesson(id: &str) -> Option<u32> {
        let digits = id.strip_prefix("lesson-")?;
        if digits.len() < LESSON_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Appends one heartbeat as a JSON object, without allocating.
    pub fn push_json(&self, buf: &mut Vec<u8>, hb: &Heartbeat) {
        buf.extend_from_slice(b"{\"learner_id\":\"");
        self.push_learner(buf, hb.key.learner);
        buf.extend_from_slice(b"\",\"lesson_id\":\"");
        Ids::push_lesson(buf, hb.key.lesson);
        buf.extend_from_slice(b"\",\"position_ms\":");
        push_u64(buf, hb.position_ms);
        buf.extend_from_slice(b",\"seq\":");
        push_u64(buf, hb.seq);
        buf.extend_from_slice(b",\"device_id\":\"");
        buf.extend_from_slice(DEVICE_PREFIX);
        push_u64(buf, u64::from(hb.device));
        buf.extend_from_slice(b"\"}");
    }

    /// Appends a JSON array of heartbeats.
    pub fn push_json_array(&self, buf: &mut Vec<u8>, hbs: &[Heartbeat]) {
        buf.push(b'[');
        for (i, hb) in hbs.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            self.push_json(buf, hb);
        }
        buf.push(b']');
    }
}

/// Appends the decimal digits of `n`.
pub fn push_u64(buf: &mut Vec<u8>, n: u64) {
    push_padded(buf, n, 1);
}

fn push_padded(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut len = 0;
    while n > 0 || len < width {
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    buf.extend(digits[..len].iter().rev());
}

/// Zipf popularity over a catalog, sampled by inverting a precomputed CDF.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u32, exponent: f64) -> Zipf {
        let weights: Vec<f64> = (1..=n.max(1))
            .map(|rank| 1.0 / f64::from(rank).powf(exponent))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    /// The 0-based rank for a uniform `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> u32 {
        let idx = self.cdf.partition_point(|&c| c <= u);
        u32::try_from(idx.min(self.cdf.len() - 1)).unwrap_or(u32::MAX)
    }
}

/// A 64-bit mix (splitmix64's finaliser): deterministic hashing of small integers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    // The top 53 bits as a fraction in [0, 1).
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What is shared by every viewer: the configuration and the popularity table.
#[derive(Debug)]
pub struct Model {
    pub config: WorkloadConfig,
    pub ids: Ids,
    zipf: Zipf,
}

impl Model {
    pub fn new(config: WorkloadConfig) -> Arc<Model> {
        Arc::new(Model {
            ids: Ids::new(&config.id_prefix),
            zipf: Zipf::new(config.catalog, config.zipf),
            config,
        })
    }

    /// Lesson number `i` (of `lessons_per_learner`) of a learner: Zipf-popular, fixed
    /// per learner so a returning learner meets its own lessons again.
    pub fn lesson_of(&self, learner: u64, i: u32) -> u32 {
        let h = mix(self.config.seed ^ mix(learner ^ (u64::from(i) << 40)));
        self.zipf.sample(unit(h))
    }

    /// The gap until a viewer's next heartbeat, with jitter.
    pub fn gap(&self, rng: &mut SmallRng) -> Duration {
        let j = self.config.jitter;
        let factor = if j > 0.0 {
            1.0 + rng.random_range(-j..=j)
        } else {
            1.0
        };
        self.config.interval.mul_f64(factor.max(0.0))
    }
}

/// The player currently in one slot.
#[derive(Debug)]
pub struct Viewer {
    slot: u64,
    generation: u64,
    learner: u64,
    lesson: u32,
    device: u32,
    position_ms: u64,
    last_seq: u64,
    offline_left: u32,
    held: Vec<Heartbeat>,
    rng: SmallRng,
}

impl Viewer {
    pub fn new(model: &Model, slot: u64) -> Viewer {
        let mut rng = SmallRng::seed_from_u64(mix(model.config.seed ^ mix(slot)));
        let lesson = model.lesson_of(slot, rng.random_range(0..model.config.lessons_per_learner));
        Viewer {
            slot,
            generation: 0,
            learner: slot,
            lesson,
            device: 0,
            position_ms: rng.random_range(0..600_000),
            last_seq: 0,
            offline_left: 0,
            held: Vec::new(),
            rng,
        }
    }

    pub fn key(&self) -> Key {
        Key {
            learner: self.learner,
            lesson: self.lesson,
        }
    }

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    fn next_heartbeat(&mut self, model: &Model, now_ms: u64) -> Heartbeat {
        self.last_seq = (self.last_seq + 1).max(now_ms);
        let interval_ms = u64::try_from(model.config.interval.as_millis()).unwrap_or(u64::MAX);
        self.position_ms = self.position_ms.saturating_add(interval_ms);
        Heartbeat {
            key: self.key(),
            position_ms: self.position_ms,
            seq: self.last_seq,
            device: self.device,
        }
    }

    /// The slot changes hands: half the time the same learner starts another of its
    /// lessons, otherwise a new learner arrives.
    fn churn(&mut self, model: &Model) {
        if self.rng.random_bool(0.5) {
            self.generation += 1;
            self.learner = self.slot + self.generation * model.config.viewers.max(1);
            self.last_seq = 0;
            self.device = 0;
        }
        let i = self.rng.random_range(0..model.config.lessons_per_learner);
        self.lesson = model.lesson_of(self.learner, i);
        self.position_ms = 0;
    }

    /// What this viewer does at a due time.
    pub fn step(&mut self, model: &Model, now_ms: u64) -> Event {
        let c = &model.config;
        if self.offline_left > 0 {
            let hb = self.next_heartbeat(model, now_ms);
            self.held.push(hb);
            self.offline_left -= 1;
            if self.offline_left == 0 {
                return Event::Backlog(std::mem::take(&mut self.held));
            }
            return Event::Held;
        }
        if self.rng.random_bool(c.churn_rate) {
            self.churn(model);
        }
        if self.last_seq > 0 && self.rng.random_bool(c.switch_rate) {
            self.device += 1;
            return Event::Switch(self.key());
        }
        if c.offline_beats > 0 && self.rng.random_bool(c.offline_rate) {
            let hb = self.next_heartbeat(model, now_ms);
            self.held.push(hb);
            self.offline_left = c.offline_beats;
            return Event::Held;
        }
        if self.rng.random_bool(c.reorder_rate) {
            let older = self.next_heartbeat(model, now_ms);
            let newer = self.next_heartbeat(model, now_ms);
            return Event::Swapped { newer, older };
        }
        let hb = self.next_heartbeat(model, now_ms);
        let duplicate = self.rng.random_bool(c.dup_rate);
        Event::Beat { hb, duplicate }
    }

    /// After a device switch: continue above the `seq` the server holds (if any), as a
    /// new device that never saw this learner's earlier heartbeats must.
    pub fn resume(&mut self, model: &Model, server_seq: Option<u64>, now_ms: u64) -> Heartbeat {
        if let Some(seq) = server_seq {
            self.last_seq = self.last_seq.max(seq);
        }
        self.next_heartbeat(model, now_ms)
    }
}

/// Wall-clock milliseconds since the Unix epoch, the unit of the hybrid clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkloadConfig {
        WorkloadConfig {
            viewers: 2000,
            interval: Duration::from_secs(10),
            jitter: 0.1,
            lessons_per_learner: 5,
            catalog: 1000,
            zipf: 1.0,
            churn_rate: 0.02,
            dup_rate: 0.05,
            reorder_rate: 0.03,
            offline_rate: 0.01,
            offline_beats: 4,
            switch_rate: 0.01,
            seed: 42,
            id_prefix: "t".into(),
        }
    }

    #[derive(Default, Debug, PartialEq)]
    struct Tally {
        steps: u64,
        beats: u64,
        dups: u64,
        swapped: u64,
        held: u64,
        backlogs: u64,
        switches: u64,
    }

    fn tally(seed: u64) -> Tally {
        let model = Model::new(WorkloadConfig { seed, ..config() });
        let mut t = Tally::default();
        let mut now = 1_700_000_000_000;
        for slot in 0..model.config.viewers {
            let mut v = Viewer::new(&model, slot);
            for _ in 0..50 {
                now += 5;
                t.steps += 1;
                match v.step(&model, now) {
                    Event::Beat { duplicate, .. } => {
                        t.beats += 1;
                        t.dups += u64::from(duplicate);
                    }
                    Event::Swapped { newer, older } => {
                        assert!(newer.seq > older.seq);
                        t.swapped += 1;
                    }
                    Event::Held => t.held += 1,
                    Event::Backlog(b) => {
                        assert!(b.windows(2).all(|w| w[0].seq < w[1].seq));
                        t.backlogs += 1;
                    }
                    Event::Switch(_) => {
                        v.resume(&model, Some(now + 1_000), now);
                        t.switches += 1;
                    }
                }
            }
        }
        t
    }

    fn near(observed: u64, out_of: u64, rate: f64) {
        let got = observed as f64 / out_of as f64;
        assert!(
            (got - rate).abs() <= rate * 0.15,
            "rate {got:.4} is not within 15% of {rate}"
        );
    }

    #[test]
    fn adversarial_rates_match_the_configuration_for_a_seed() {
        let t = tally(42);
        let c = config();
        // Offline episodes take 1 + offline_beats steps and end in one backlog.
        let online = t.steps - t.held - t.backlogs;
        near(t.dups, t.beats, c.dup_rate);
        near(t.switches, online, c.switch_rate);
        near(t.backlogs, online, c.offline_rate);
        near(t.swapped, online, c.reorder_rate);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        assert_eq!(tally(7), tally(7));
        assert_ne!(tally(7), tally(8));
    }

    #[test]
    fn seq_follows_the_hybrid_clock_and_never_goes_back() {
        let model = Model::new(WorkloadConfig {
            churn_rate: 0.05,
            ..config()
        });
        let mut v = Viewer::new(&model, 3);
        // Per learner: a churned slot's new learner starts its own clock.
        let mut last: std::collections::HashMap<u64, u64> = Default::default();
        // The clock stands still: seq must still grow by one per heartbeat.
        for _ in 0..500 {
            let seqs: Vec<u64> = match v.step(&model, 1_000) {
                Event::Beat { hb, .. } => vec![hb.seq],
                Event::Swapped { newer, older } => vec![older.seq, newer.seq],
                Event::Held => vec![],
                Event::Backlog(b) => b.iter().map(|h| h.seq).collect(),
                Event::Switch(_) => {
                    let above = last.get(&v.learner).copied().unwrap_or(0) + 100;
                    let hb = v.resume(&model, Some(above), 1_000);
                    assert!(hb.seq > above, "a new device continues above the server");
                    vec![hb.seq]
                }
            };
            let prev = last.entry(v.learner).or_default();
            for s in seqs {
                assert!(s > *prev, "{s} after {prev} for learner {}", v.learner);
                *prev = s;
            }
        }
        assert!(v.generation > 0, "the slot churned to other learners");
        let mut w = Viewer::new(&model, 4);
        match w.step(&model, 1_700_000_000_000) {
            Event::Beat { hb, .. } => assert_eq!(hb.seq, 1_700_000_000_000),
            other => panic!("first step of slot 4 should be a beat, got {other:?}"),
        }
    }

    #[test]
    fn zipf_prefers_low_ranks_and_uniform_does_not() {
        let z = Zipf::new(100, 1.0);
        let mut counts = [0u32; 100];
        for i in 0..100_000u64 {
            counts[z.sample(unit(mix(i))) as usize] += 1;
        }
        assert!(counts[0] > 10 * counts[50]);
        let u = Zipf::new(10, 0.0);
        assert_eq!(u.sample(0.05), 0);
        assert_eq!(u.sample(0.95), 9);
    }

    #[test]
    fn json_rendering_is_valid_and_round_trips_ids() {
        let ids = Ids::new("run7");
        let hb = Heartbeat {
            key: Key {
                learner: 12,
                lesson: 345,
            },
            position_ms: 0,
            seq: 1_700_000_000_123,
            device: 2,
        };
        let mut buf = Vec::new();
        ids.push_json_array(&mut buf, &[hb, hb]);
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v[1]["learner_id"], "run7-0000000012");
        assert_eq!(v[0]["lesson_id"], "lesson-00345");
        assert_eq!(v[0]["position_ms"], 0);
        assert_eq!(v[0]["seq"], 1_700_000_000_123u64);
        assert_eq!(v[0]["device_id"], "dev-2");
        assert_eq!(Ids::parse_lesson("lesson-00345"), Some(345));
        assert_eq!(Ids::parse_lesson("lesson-12"), None);
        assert_eq!(Ids::parse_lesson("other"), None);
    }
}
