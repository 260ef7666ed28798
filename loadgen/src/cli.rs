//! The command line: flags (each with a `LOADGEN_*` env twin) and their validation into
//! the typed configurations the rest of the crate runs on. Nothing after this module
//! re-parses or re-checks a flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::estimate::EstimateInput;
use crate::schedule::Pacing;
use crate::workload::WorkloadConfig;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and capacity planner for progressd"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a progressd server with synthetic players and report what it did.
    Run(Box<RunArgs>),
    /// Back-of-the-envelope capacity figures from the planner's numbers.
    Estimate(EstimateArgs),
    /// Two JSON reports side by side, with the ratio per figure.
    Compare(CompareArgs),
}

/// When the server answers a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// Once in memory (the server's default).
    Buffered,
    /// Once committed to the store (`?ack=durable`).
    Durable,
}

/// Longest duration any flag takes: far beyond any run, and far from the overflow of
/// clock arithmetic on it.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most viewers one process models (about 100 bytes of state each).
const MAX_VIEWERS: u64 = 100_000_000;
/// Largest lesson catalog (the Zipf table holds 8 bytes per lesson).
const MAX_CATALOG: u32 = 10_000_000;

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the server (http only).
    #[arg(long, env = "LOADGEN_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Concurrent players.
    #[arg(long, env = "LOADGEN_VIEWERS", default_value_t = 1000)]
    pub viewers: u64,
    /// Mean time between two heartbeats of one player.
    #[arg(long, env = "LOADGEN_INTERVAL", default_value = "10s", value_parser = duration)]
    pub interval: Duration,
    /// Spread of each gap as a fraction of the interval (0.1 = ±10%).
    #[arg(long, env = "LOADGEN_JITTER", default_value_t = 0.1)]
    pub jitter: f64,
    /// Distinct lessons one learner plays over time.
    #[arg(long, env = "LOADGEN_LESSONS_PER_LEARNER", default_value_t = 5)]
    pub lessons_per_learner: u32,
    /// Lessons in the catalog.
    #[arg(long, env = "LOADGEN_CATALOG", default_value_t = 2000)]
    pub catalog: u32,
    /// Zipf exponent of lesson popularity (0 = uniform).
    #[arg(long, env = "LOADGEN_ZIPF", default_value_t = 1.0)]
    pub zipf: f64,
    /// Probability per heartbeat that a session ends and another starts in its place.
    #[arg(long, env = "LOADGEN_CHURN_RATE", default_value_t = 0.01)]
    pub churn_rate: f64,
    /// Probability that a heartbeat is sent twice (a retry).
    #[arg(long, env = "LOADGEN_DUP_RATE", default_value_t = 0.01)]
    pub dup_rate: f64,
    /// Probability that two consecutive heartbeats arrive swapped.
    #[arg(long, env = "LOADGEN_REORDER_RATE", default_value_t = 0.005)]
    pub reorder_rate: f64,
    /// Probability that a player goes offline and later syncs its backlog as a batch.
    #[arg(long, env = "LOADGEN_OFFLINE_RATE", default_value_t = 0.002)]
    pub offline_rate: f64,
    /// Heartbeats held back per offline episode.
    #[arg(long, env = "LOADGEN_OFFLINE_BEATS", default_value_t = 6)]
    pub offline_beats: u32,
    /// Probability that a player switches device (GET current seq, continue above it).
    #[arg(long, env = "LOADGEN_DEVICE_SWITCH_RATE", default_value_t = 0.002)]
    pub device_switch_rate: f64,
    /// Seed of every random decision.
    #[arg(long, env = "LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Learner id prefix (default: derived from the seed and the start time, so runs
    /// and processes never share keys).
    #[arg(long, env = "LOADGEN_ID_PREFIX")]
    pub id_prefix: Option<String>,
    /// Heartbeats per second, open loop (default: viewers / interval).
    #[arg(long, env = "LOADGEN_RATE", conflicts_with = "max")]
    pub rate: Option<f64>,
    /// Closed loop: every connection sends as fast as answers come back.
    #[arg(long, env = "LOADGEN_MAX")]
    pub max: bool,
    /// How long to measure, after the warm-up (default 30s unless --requests).
    #[arg(long, env = "LOADGEN_DURATION", value_parser = duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests.
    #[arg(long, env = "LOADGEN_REQUESTS")]
    pub requests: Option<u64>,
    /// Load sent before measuring starts (still verified).
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "0s", value_parser = duration)]
    pub warmup: Duration,
    /// Keep-alive connections. Open loop needs about rate × latency of them; when all
    /// are busy the send lag grows (see the report).
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 64)]
    pub connections: usize,
    /// Runtime worker threads of this process.
    #[arg(long, env = "LOADGEN_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Heartbeats per request (1 = single objects, more = JSON arrays, at most 1000).
    #[arg(long, env = "LOADGEN_BATCH", default_value_t = 1)]
    pub batch: usize,
    /// With --batch: a partial batch is sent once its oldest heartbeat has waited this
    /// long (size or age, whichever comes first).
    #[arg(long, env = "LOADGEN_BATCH_WAIT", default_value = "1s", value_parser = duration)]
    pub batch_wait: Duration,
    /// When the server should answer.
    #[arg(long, env = "LOADGEN_ACK", value_enum, default_value_t = Ack::Buffered)]
    pub ack: Ack,
    /// Read every key back after the run; exit 1 on lost, stale or phantom keys.
    #[arg(long, env = "LOADGEN_VERIFY")]
    pub verify: bool,
    /// Longest wait for the server to report zero dirty keys after the run.
    #[arg(long, env = "LOADGEN_SETTLE", default_value = "30s", value_parser = duration)]
    pub settle: Duration,
    /// Bearer token (JWT) for a server with auth on; a `"scope":"service"` token acts
    /// for every synthetic learner.
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Per-request timeout.
    #[arg(long, env = "LOADGEN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
    /// Period of the report rows (the live line is refreshed every second).
    #[arg(long, env = "LOADGEN_REPORT_EVERY", default_value = "10s", value_parser = duration)]
    pub report_every: Duration,
    /// Also write the report as JSON here.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
    /// No live line and no interval rows, only the final report.
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// Distinct learners per day.
    #[arg(long, env = "LOADGEN_DAILY_LEARNERS", default_value_t = 3_000_000)]
    pub daily_learners: u64,
    /// Concurrent viewers at peak.
    #[arg(long, env = "LOADGEN_VIEWERS", default_value_t = 250_000)]
    pub viewers: u64,
    /// Heartbeat interval of one player.
    #[arg(long, env = "LOADGEN_INTERVAL", default_value = "10s", value_parser = duration)]
    pub interval: Duration,
    /// The server's flush interval.
    #[arg(long, env = "LOADGEN_FLUSH_INTERVAL", default_value = "1s", value_parser = duration)]
    pub flush_interval: Duration,
    /// Distinct lessons one learner plays.
    #[arg(long, env = "LOADGEN_LESSONS_PER_LEARNER", default_value_t = 5)]
    pub lessons_per_learner: u64,
    /// Characters of a learner id.
    #[arg(long, default_value_t = 36)]
    pub learner_id_bytes: u64,
    /// Characters of a lesson id.
    #[arg(long, default_value_t = 16)]
    pub lesson_id_bytes: u64,
    /// Characters of a device id (0 = not sent).
    #[arg(long, default_value_t = 0)]
    pub device_id_bytes: u64,
    /// Sustained writes/s one ScyllaDB node takes (replica writes).
    #[arg(long, default_value_t = 50_000.0)]
    pub scylla_node_writes: f64,
    /// ScyllaDB replication factor.
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u64,
    /// Heartbeats per request (batching clients).
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// A `loadgen run --json` report to set beside the prediction (the prediction is
    /// then made for that run's viewers and interval).
    #[arg(long)]
    pub measured: Option<PathBuf>,
    /// Print the figures as JSON instead of text (not with --measured, whose table is
    /// text; `loadgen compare` sets two JSON reports side by side).
    #[arg(long, conflicts_with = "measured")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline report.
    pub a: PathBuf,
    /// The report compared against it.
    pub b: PathBuf,
}

/// Where the load goes and how it is shaped, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: String,
    /// `host:port` of the target.
    pub authority: String,
    pub workload: WorkloadConfig,
    pub pacing: Pacing,
    /// Heartbeats per second in open loop.
    pub rate: f64,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub connections: usize,
    pub threads: usize,
    pub batch: usize,
    pub batch_wait: Duration,
    pub ack: Ack,
    pub verify: bool,
    pub settle: Duration,
    pub timeout: Duration,
    /// `Authorization` header value, from `--token`.
    pub auth: Option<http::HeaderValue>,
    pub report_every: Duration,
    pub json: Option<PathBuf>,
    pub quiet: bool,
}

fn rate_flag(name: &str, v: f64) -> Result<f64, Error> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(Error::Config(format!(
            "--{name} must be between 0 and 1, got {v}"
        )))
    }
}

/// `http://host:port[/]` → `host:port`.
fn authority(target: &str) -> Result<String, Error> {
    let uri: http::Uri = target
        .parse()
        .map_err(|e| Error::Config(format!("--target {target}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Config(format!(
            "--target {target}: only http:// targets are supported"
        )));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(Error::Config(format!(
            "--target {target}: give the server's base URL without a path"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| Error::Config(format!("--target {target}: no host")))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

impl RunArgs {
    /// Checks every flag once; the error names the flag.
    pub fn into_config(self) -> Result<RunConfig, Error> {
        let authority = authority(&self.target)?;
        if !(1..=MAX_VIEWERS).contains(&self.viewers) {
            return Err(Error::Config(format!(
                "--viewers must be 1..={MAX_VIEWERS} (run several loadgen processes for more)"
            )));
        }
        if self.interval.is_zero() {
            return Err(Error::Config("--interval must be above zero".into()));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "--jitter must be in [0, 1), got {}",
                self.jitter
            )));
        }
        if self.lessons_per_learner == 0 || !(1..=MAX_CATALOG).contains(&self.catalog) {
            return Err(Error::Config(format!(
                "--lessons-per-learner must be at least 1 and --catalog 1..={MAX_CATALOG}"
            )));
        }
        if !(self.zipf >= 0.0 && self.zipf.is_finite()) {
            return Err(Error::Config(format!(
                "--zipf must be ≥ 0, got {}",
                self.zipf
            )));
        }
        if !(1..=1000).contains(&self.batch) {
            return Err(Error::Config(format!(
                "--batch must be 1..=1000, got {}",
                self.batch
            )));
        }
        if self.offline_beats > 999 {
            return Err(Error::Config(
                "--offline-beats must be below 1000 (one batch)".into(),
            ));
        }
        if self.viewers.div_ceil(self.connections.max(1) as u64)
            > crate::schedule::MAX_VIEWERS_PER_CONNECTION
        {
            return Err(Error::Config(format!(
                "--viewers: at most {} per connection; add --connections",
                crate::schedule::MAX_VIEWERS_PER_CONNECTION
            )));
        }
        if self.connections == 0 || self.threads == 0 {
            return Err(Error::Config(
                "--connections and --threads must be at least 1".into(),
            ));
        }
        if self.report_every.is_zero() || self.timeout.is_zero() || self.batch_wait.is_zero() {
            return Err(Error::Config(
                "--report-every, --timeout and --batch-wait must be above zero".into(),
            ));
        }
        let natural = self.viewers as f64 / self.interval.as_secs_f64();
        let rate = self.rate.unwrap_or(natural);
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(Error::Config(format!(
                "--rate must be above zero, got {rate}"
            )));
        }
        // A rate other than viewers/interval keeps the population and changes how often
        // each player beats.
        let interval = Duration::try_from_secs_f64(self.interval.as_secs_f64() * natural / rate)
            .ok()
            .filter(|i| !i.is_zero() && *i <= MAX_DURATION)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--rate {rate} for {} viewers puts a heartbeat interval outside 1µs..{}",
                    self.viewers,
                    humantime::format_duration(MAX_DURATION)
                ))
            })?;
        let id_prefix = match self.id_prefix {
            Some(p) => p,
            None => format!(
                "lg{}-{}",
                self.seed,
                crate::workload::now_ms() / 1000 % 100_000_000
            ),
        };
        if id_prefix.is_empty()
            || id_prefix.len() > 100
            || !id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
        {
            return Err(Error::Config(format!(
                "--id-prefix {id_prefix:?}: 1-100 characters from A-Z a-z 0-9 . _ : @ -"
            )));
        }
        let workload = WorkloadConfig {
            viewers: self.viewers,
            interval,
            jitter: self.jitter,
            lessons_per_learner: self.lessons_per_learner,
            catalog: self.catalog,
            zipf: self.zipf,
            churn_rate: rate_flag("churn-rate", self.churn_rate)?,
            dup_rate: rate_flag("dup-rate", self.dup_rate)?,
            reorder_rate: rate_flag("reorder-rate", self.reorder_rate)?,
            offline_rate: rate_flag("offline-rate", self.offline_rate)?,
            offline_beats: self.offline_beats,
            switch_rate: rate_flag("device-switch-rate", self.device_switch_rate)?,
            seed: self.seed,
            id_prefix,
        };
        let auth = match &self.token {
            None => None,
            Some(t) => {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Error::Config("--token: not a valid header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(30)),
            (d, _) => d,
        };
        Ok(RunConfig {
            target: self.target,
            authority,
            workload,
            pacing: if self.max {
                Pacing::Closed
            } else {
                Pacing::Open
            },
            rate,
            duration,
            requests: self.requests,
            warmup: self.warmup,
            connections: self.connections,
            threads: self.threads,
            batch: self.batch,
            batch_wait: self.batch_wait,
            ack: self.ack,
            verify: self.verify,
            settle: self.settle,
            timeout: self.timeout,
            auth,
            report_every: self.report_every,
            json: self.json,
            quiet: self.quiet,
        })
    }
}

impl EstimateArgs {
    pub fn input(&self) -> Result<EstimateInput, Error> {
        if self.interval.is_zero() || self.flush_interval.is_zero() {
            return Err(Error::Config(
                "--interval and --flush-interval must be above zero".into(),
            ));
        }
        if self.viewers == 0
            || self.replication_factor == 0
            || self.batch == 0
            || !(self.scylla_node_writes > 0.0 && self.scylla_node_writes.is_finite())
        {
            return Err(Error::Config(
                "--viewers, --replication-factor, --batch and --scylla-node-writes must be above zero".into(),
            ));
        }
        Ok(EstimateInput {
            daily_learners: self.daily_learners,
            viewers: self.viewers,
            interval: self.interval,
            flush_interval: self.flush_interval,
            lessons_per_learner: self.lessons_per_learner.max(1),
            learner_id_bytes: self.learner_id_bytes,
            lesson_id_bytes: self.lesson_id_bytes,
            device_id_bytes: self.device_id_bytes,
            scylla_node_writes: self.scylla_node_writes,
            replication_factor: self.replication_factor,
            batch: self.batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, Error> {
        let mut all = vec!["loadgen", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)
            .map_err(|e| Error::Config(e.to_string()))?
            .command
        {
            Command::Run(r) => r.into_config(),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_give_the_natural_rate_and_a_30s_run() {
        let c = parse(&["--viewers", "250000"]).expect("valid");
        assert_eq!(c.rate, 25_000.0);
        assert_eq!(c.authority, "127.0.0.1:8080");
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert_eq!(c.workload.interval, Duration::from_secs(10));
        assert_eq!(c.pacing, Pacing::Open);
    }

    #[test]
    fn a_rate_changes_the_interval_not_the_population() {
        let c = parse(&["--viewers", "1000", "--rate", "200", "--requests", "5"]).expect("valid");
        assert_eq!(c.workload.viewers, 1000);
        assert_eq!(c.workload.interval, Duration::from_secs(5));
        assert_eq!((c.duration, c.requests), (None, Some(5)));
    }

    #[test]
    fn bad_values_name_their_flag() {
        let msg = |a: &[&str]| parse(a).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(&["--dup-rate", "1.5"]).contains("--dup-rate"));
        assert!(msg(&["--batch", "1001"]).contains("--batch"));
        assert!(msg(&["--target", "https://x:1"]).contains("only http://"));
        assert!(msg(&["--target", "http://x:1/v1"]).contains("without a path"));
        assert!(msg(&["--max", "--rate", "5"]).contains("cannot be used with"));
        assert!(msg(&["--interval", "soon"]).contains("--interval"));
        // Values that once panicked or overflowed, refused with their flag named.
        assert!(msg(&["--rate", "1e-300"]).contains("--rate"));
        assert!(msg(&["--duration", "100000d"]).contains("at most"));
        assert!(msg(&["--warmup", "100000d"]).contains("--warmup"));
        assert!(msg(&["--catalog", "4000000000"]).contains("--catalog"));
        assert!(msg(&["--viewers", "0"]).contains("--viewers"));
        assert!(msg(&["--lessons-per-learner", "0"]).contains("--lessons-per-learner"));
    }

    #[test]
    fn estimate_refuses_values_that_make_no_figure() {
        let msg = |a: &[&str]| {
            let mut all = vec!["loadgen", "estimate"];
            all.extend_from_slice(a);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Estimate(e)) => e.input().err().map(|e| e.to_string()),
                Ok(other) => panic!("expected estimate, got {other:?}"),
                Err(e) => Some(e.to_string()),
            }
            .unwrap_or_default()
        };
        assert!(msg(&["--scylla-node-writes", "NaN"]).contains("--scylla-node-writes"));
        assert!(msg(&["--viewers", "0"]).contains("--viewers"));
        assert!(msg(&["--json", "--measured", "r.json"]).contains("cannot be used with"));
    }
}
