//! `loadgen run`: the load loop and its orchestration.
//!
//! The viewers are split over `--connections` tasks (slot `s` goes to task
//! `s % connections`); each task owns its viewers, their [`Schedule`], a keep-alive
//! [`Conn`], a [`Ledger`] and a [`Recorder`], so the hot loop shares nothing but a stop
//! flag and an optional request budget. A task takes the earliest due viewer, waits
//! for its due time (open loop), asks the workload model what the player does and sends
//! it; the request body is rendered into a reused buffer. A reporter wakes once a
//! second to print the live line and the interval rows, and ends the run.
//!
//! Around the load: `/metrics` is scraped before, and after a wait for the server to
//! flush (zero dirty keys); then `--verify` reads every key back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::cli::{Ack, RunConfig};
use crate::client::{Answer, ClientError, Conn, Endpoint};
use crate::error::Error;
use crate::metrics::ServerSnapshot;
use crate::report::{IntervalRow, Report};
use crate::schedule::{Pacing, Schedule};
use crate::stats::{cpu_seconds, Op, Outcome, Recorder, Summary};
use crate::verify::{read_back, Ledger, ReadBack};
use crate::workload::{now_ms, Event, Heartbeat, Ids, Key, Model, Viewer};

/// Waits longer than this also listen for the end of the run.
const LONG_WAIT: Duration = Duration::from_millis(50);

/// What every load task shares.
struct Shared {
    model: Arc<Model>,
    endpoint: Endpoint,
    pacing: Pacing,
    batch: usize,
    /// A partial batch goes out once its oldest heartbeat has waited this long.
    batch_wait: Duration,
    post_path: &'static str,
    start: Instant,
    /// Offset from `start` where measuring begins (the end of the warm-up).
    warmup: Duration,
    stop: AtomicBool,
    /// Wakes the reporter when a task ends the run early (budget spent).
    ended: tokio::sync::Notify,
    /// Flips to true when the run ends, waking tasks in a long wait for their next due
    /// time (few viewers per connection).
    stopped: tokio::sync::watch::Sender<bool>,
    /// Measured requests still allowed (`--requests`).
    budget: Option<AtomicU64>,
}

impl Shared {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// May one more request go out? Warm-up requests do not spend the budget.
    fn admit(&self, measured: bool) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match (&self.budget, measured) {
            (Some(b), true) => {
                let ok = b
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                if !ok {
                    self.stop.store(true, Ordering::Relaxed);
                    self.ended.notify_one();
                }
                ok
            }
            _ => true,
        }
    }
}

#[derive(Deserialize)]
struct SingleAnswer {
    applied: bool,
}

#[derive(Deserialize)]
struct BatchAnswer {
    applied: u64,
    stale: u64,
}

#[derive(Deserialize)]
struct ReadAnswer {
    seq: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Post,
    Get,
}

/// One finished request, as the recorder wants it.
struct Sample {
    op: Op,
    exchanged: Exchanged,
    due: Duration,
    heartbeats: u64,
    applied: u64,
    stale: u64,
    bytes_sent: usize,
}

/// How one request went, with the times it left and was answered.
struct Exchanged {
    outcome: Outcome,
    answer: Option<Answer>,
    sent: Duration,
    done: Duration,
    /// Decided once, when the request was admitted: past the warm-up, so it counts
    /// against `--requests` and goes into the report.
    measured: bool,
}

impl Exchanged {
    fn bytes_received(&self) -> usize {
        self.answer.as_ref().map_or(0, |a| a.len)
    }
}

/// One connection's share of the viewers.
struct Task {
    shared: Arc<Shared>,
    viewers: Vec<Viewer>,
    schedule: Schedule,
    /// Only kept with `--verify`: it costs a map update per heartbeat.
    ledger: Option<Ledger>,
    recorder: Arc<Mutex<Recorder>>,
    conn: Option<Conn>,
    buf: Vec<u8>,
    /// Heartbeats waiting for the next request (a batch filling up).
    pending: Vec<Heartbeat>,
    /// Due time of the oldest of them.
    pending_since: Option<Duration>,
}

impl Task {
    async fn drive(mut self) -> Option<Ledger> {
        let sh = self.shared.clone();
        let model = sh.model.clone();
        while !sh.stop.load(Ordering::Relaxed) {
            let Some((due, v)) = self.schedule.pop() else {
                break;
            };
            if self
                .pending_since
                .is_some_and(|since| due.saturating_sub(since) >= sh.batch_wait)
            {
                self.send_pending().await;
            }
            let send_at = sh.pacing.send_at(due, sh.elapsed());
            if send_at > sh.elapsed() && !self.wait_until(send_at).await {
                break;
            }
            let now = now_ms();
            match self.viewers[v].step(&model, now) {
                Event::Beat { hb, duplicate } => {
                    self.queue(hb, due);
                    if duplicate {
                        self.queue(hb, due);
                    }
                }
                Event::Swapped { newer, older } => {
                    self.queue(newer, due);
                    self.queue(older, due);
                }
                Event::Held => {}
                Event::Backlog(hbs) => {
                    for chunk in hbs.chunks(1000) {
                        self.post_batch(chunk, due).await;
                    }
                }
                Event::Switch(key) => {
                    let seq = self.read(key, due).await;
                    let hb = self.viewers[v].resume(&model, seq, now_ms());
                    self.queue(hb, due);
                }
            }
            let gap = model.gap(self.viewers[v].rng());
            self.schedule.push(due + gap, v);
            if self.pending.len() >= sh.batch {
                self.send_pending().await;
            }
        }
        // Heartbeats still pending (a partial batch) were never sent: the run is over,
        // and they are not in the ledger either.
        self.ledger
    }

    /// Waits until `at` (an offset from the start); false when the run ended first.
    async fn wait_until(&self, at: Duration) -> bool {
        let sh = &self.shared;
        let wake = sh.start + at;
        if at.saturating_sub(sh.elapsed()) < LONG_WAIT {
            tokio::time::sleep_until(wake).await;
            return true;
        }
        let mut stopped = sh.stopped.subscribe();
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => true,
            _ = stopped.wait_for(|s| *s) => false,
        }
    }

    /// Adds a heartbeat due at `due` to the next request.
    fn queue(&mut self, hb: Heartbeat, due: Duration) {
        self.pending.push(hb);
        self.pending_since.get_or_insert(due);
    }

    /// Sends what is queued: one request per heartbeat, or arrays of up to `--batch`.
    /// Latency counts from the due time of the oldest heartbeat queued, so the time a
    /// heartbeat waits for its batch to fill is part of what the report shows.
    async fn send_pending(&mut self) {
        let Some(due) = self.pending_since.take() else {
            return;
        };
        let mut pending = std::mem::take(&mut self.pending);
        if self.shared.batch == 1 {
            for hb in pending.drain(..) {
                self.post_one(hb, due).await;
            }
        } else {
            for chunk in pending.chunks(self.shared.batch) {
                self.post_batch(chunk, due).await;
            }
            pending.clear();
        }
        self.pending = pending;
    }

    fn measured(&self, due: Duration) -> bool {
        match self.shared.pacing {
            Pacing::Open => due >= self.shared.warmup,
            Pacing::Closed => self.shared.elapsed() >= self.shared.warmup,
        }
    }

    /// Sends one request, a POST of `self.buf` or a GET; `None` when the run is over or
    /// the budget is spent.
    async fn exchange(&mut self, due: Duration, method: Method, path: &str) -> Option<Exchanged> {
        let measured = self.measured(due);
        if !self.shared.admit(measured) {
            return None;
        }
        let sh = self.shared.clone();
        if self.conn.is_none() {
            match Conn::connect(&sh.endpoint).await {
                Ok(c) => self.conn = Some(c),
                Err(_) => {
                    // Do not spin on a refused connection; the request counts as failed.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let t = sh.elapsed();
                    return Some(Exchanged {
                        outcome: Outcome::Transport,
                        answer: None,
                        sent: t,
                        done: t,
                        measured,
                    });
                }
            }
        }
        let conn = self.conn.as_mut()?;
        let sent = sh.elapsed();
        let result = match method {
            Method::Post => conn.post(path, &self.buf).await,
            Method::Get => conn.get(path).await,
        };
        let done = sh.elapsed();
        let outcome = match &result {
            Ok(a) if a.status.is_success() => Outcome::Ok,
            // "Nothing known" is a valid answer to a read; verification judges it.
            Ok(a) if method == Method::Get && a.status.as_u16() == 404 => Outcome::Ok,
            Ok(a) if a.status.as_u16() == 503 => Outcome::Backpressure,
            Ok(a) => Outcome::Status(a.status.as_u16()),
            Err(ClientError::Timeout(_)) => Outcome::Timeout,
            Err(_) => Outcome::Transport,
        };
        if !conn.reusable() {
            self.conn = None;
        }
        if let (Outcome::Status(code), Ok(a), true) = (outcome, &result, measured) {
            if let Ok(mut r) = self.recorder.lock() {
                r.status(code, &a.body);
            }
        }
        Some(Exchanged {
            outcome,
            answer: result.ok(),
            sent,
            done,
            measured,
        })
    }

    fn record(&self, s: Sample) {
        let x = &s.exchanged;
        if !x.measured {
            return;
        }
        let latency = self.shared.pacing.latency(s.due, x.sent, x.done);
        if let Ok(mut r) = self.recorder.lock() {
            r.record(s.op, x.outcome, latency);
            let c = &mut r.counters;
            c.heartbeats_sent += s.heartbeats;
            if x.outcome == Outcome::Ok {
                c.heartbeats_acked += s.heartbeats;
            }
            c.applied += s.applied;
            c.stale += s.stale;
            c.bytes_sent += s.bytes_sent as u64;
            c.bytes_received += x.bytes_received() as u64;
        }
    }

    async fn post_one(&mut self, hb: Heartbeat, due: Duration) {
        self.buf.clear();
        self.shared.model.ids.push_json(&mut self.buf, &hb);
        let len = self.buf.len();
        let path = self.shared.post_path;
        let Some(x) = self.exchange(due, Method::Post, path).await else {
            return;
        };
        if let Some(l) = &mut self.ledger {
            l.sent(&hb, x.outcome == Outcome::Ok);
        }
        let mut applied = (0, 0);
        if let (Outcome::Ok, Some(a)) = (x.outcome, &x.answer) {
            if let Ok(s) = serde_json::from_slice::<SingleAnswer>(&a.body) {
                applied = if s.applied { (1, 0) } else { (0, 1) };
            }
        }
        self.record(Sample {
            op: Op::Post,
            exchanged: x,
            due,
            heartbeats: 1,
            applied: applied.0,
            stale: applied.1,
            bytes_sent: len,
        });
    }

    async fn post_batch(&mut self, hbs: &[Heartbeat], due: Duration) {
        self.buf.clear();
        self.shared.model.ids.push_json_array(&mut self.buf, hbs);
        let len = self.buf.len();
        let path = self.shared.post_path;
        let Some(x) = self.exchange(due, Method::Post, path).await else {
            return;
        };
        if let Some(l) = &mut self.ledger {
            for hb in hbs {
                l.sent(hb, x.outcome == Outcome::Ok);
            }
        }
        let mut counts = (0, 0);
        if let (Outcome::Ok, Some(a)) = (x.outcome, &x.answer) {
            if let Ok(b) = serde_json::from_slice::<BatchAnswer>(&a.body) {
                counts = (b.applied, b.stale);
            }
        }
        self.record(Sample {
            op: Op::Batch,
            exchanged: x,
            due,
            heartbeats: hbs.len() as u64,
            applied: counts.0,
            stale: counts.1,
            bytes_sent: len,
        });
    }

    /// A new device reads the key's current state; `None` when unknown or unreadable.
    async fn read(&mut self, key: Key, due: Duration) -> Option<u64> {
        let model = self.shared.model.clone();
        let ids = &model.ids;
        let path = format!(
            "/v1/progress/{}/{}",
            ids.learner(key.learner),
            Ids::lesson(key.lesson)
        );
        let x = self.exchange(due, Method::Get, &path).await?;
        // `None`: no usable answer; `Some(0)`: the server knows nothing of the key.
        let server_seq = x.answer.as_ref().and_then(|a| match a.status.as_u16() {
            200 => serde_json::from_slice::<ReadAnswer>(&a.body)
                .ok()
                .map(|r| r.seq),
            404 => Some(0),
            _ => None,
        });
        self.record(Sample {
            op: Op::Get,
            exchanged: x,
            due,
            heartbeats: 0,
            applied: 0,
            stale: 0,
            bytes_sent: 0,
        });
        let seq = server_seq?;
        let seq = (seq > 0).then_some(seq);
        if let Some(l) = &mut self.ledger {
            l.read(key, seq, ids);
        }
        seq
    }
}

/// Prints the live line and interval rows; knows when the run is over.
struct Reporter {
    quiet: bool,
    live: bool,
    every: Duration,
    total: Recorder,
    row: Recorder,
    row_started: Duration,
    row_cpu: Option<f64>,
    live_cpu: Option<(f64, std::time::Instant)>,
    rows: Vec<IntervalRow>,
}

impl Reporter {
    fn tick(&mut self, interval: Recorder, now: Duration, warmup: Duration) {
        self.total.add(&interval);
        self.row.add(&interval);
        let live = &interval.all_corrected();
        if self.live && !self.quiet {
            let s = Summary::of(live);
            let phase = if now < warmup { " warm-up" } else { "" };
            eprint!(
                "\r\x1b[2K[{:>5.0}s{phase}] {:>8} hb/s {:>8} req/s  p50 {:>8}  p99 {:>8}  errors {}  503 {}  cpu {:.0}%",
                now.as_secs_f64(),
                interval.counters.heartbeats_sent,
                interval.counters.requests,
                fmt_us(s.p50),
                fmt_us(s.p99),
                interval.counters.errors(),
                interval.counters.backpressure,
                cpu_percent_since(&mut self.live_cpu),
            );
        }
        if now.saturating_sub(self.row_started) >= self.every {
            self.emit_row(now);
        }
    }

    fn emit_row(&mut self, now: Duration) {
        let secs = now.saturating_sub(self.row_started).as_secs_f64();
        // A sliver left at the end of the run would show as a wild rate: the total
        // has it, the rows leave it out.
        if secs < 0.5 || self.row.counters.requests == 0 {
            self.row_started = now;
            return;
        }
        let cpu = cpu_seconds();
        let cpu_pct = match (self.row_cpu, cpu) {
            (Some(a), Some(b)) => Some((b - a) / secs * 100.0),
            _ => None,
        };
        let row = IntervalRow::new(now.as_secs_f64(), secs, &self.row, cpu_pct);
        if !self.quiet {
            if self.live {
                eprint!("\r\x1b[2K");
            }
            if self.rows.is_empty() {
                println!("{}", IntervalRow::header());
            }
            println!("{}", row.line());
        }
        self.rows.push(row);
        self.row = Recorder::default();
        self.row_started = now;
        self.row_cpu = cpu;
    }
}

/// CPU % of this process since the last call that passed the same `last` (0 on the
/// first call, which only starts the clock).
fn cpu_percent_since(last: &mut Option<(f64, std::time::Instant)>) -> f64 {
    let now = std::time::Instant::now();
    let cpu = cpu_seconds().unwrap_or(0.0);
    let pct = match last {
        Some((c, t)) => (cpu - *c) / now.duration_since(*t).as_secs_f64().max(1e-9) * 100.0,
        None => 0.0,
    };
    *last = Some((cpu, now));
    pct
}

/// Microseconds as a short human figure.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1000..=999_999 => format!("{:.2}ms", us as f64 / 1000.0),
        _ => format!("{:.2}s", us as f64 / 1_000_000.0),
    }
}

async fn resolve(authority: &str, target: &str) -> Result<SocketAddr, Error> {
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| Error::Target {
            target: target.into(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Target {
            target: target.into(),
            message: "no address".into(),
        })
}

/// Runs the load described by `cfg` and returns the report (without writing it).
/// Runs on whatever tokio runtime calls it; [`run_blocking`] makes one.
pub async fn run(cfg: RunConfig) -> Result<Report, Error> {
    let endpoint = Endpoint {
        addr: resolve(&cfg.authority, &cfg.target).await?,
        timeout: cfg.timeout,
        auth: cfg.auth.clone(),
    };
    // Fail early and clearly if nothing listens there.
    Conn::connect(&endpoint).await.map_err(|e| Error::Target {
        target: cfg.target.clone(),
        message: e.to_string(),
    })?;
    // Without a warm-up the server's counters are read before any load; with one, the
    // moment it ends (below), so the server figures cover the measured window only.
    let mut server_start = if cfg.warmup.is_zero() {
        ServerSnapshot::scrape(&endpoint).await
    } else {
        None
    };
    let model = Model::new(cfg.workload.clone());
    let tasks_n = cfg
        .connections
        .min(usize::try_from(cfg.workload.viewers).unwrap_or(usize::MAX));
    // Viewers, timetables and connections are ready before the clock starts: setup
    // must not show up as latency of the first requests.
    let mut parts = Vec::with_capacity(tasks_n);
    for t in 0..tasks_n {
        let slots: Vec<u64> = (t as u64..cfg.workload.viewers).step_by(tasks_n).collect();
        let viewers: Vec<Viewer> = slots.iter().map(|&s| Viewer::new(&model, s)).collect();
        let schedule = Schedule::spread(
            &slots,
            cfg.workload.viewers,
            cfg.workload.interval,
            cfg.workload.interval.mul_f64(1.0 + cfg.workload.jitter),
        );
        parts.push((viewers, schedule));
    }
    // Connections last, so none idles through the setup of a large population. One
    // that cannot be opened now is retried by its task.
    let mut conns = Vec::with_capacity(tasks_n);
    for _ in 0..tasks_n {
        conns.push(Conn::connect(&endpoint).await.ok());
    }
    let shared = Arc::new(Shared {
        model: model.clone(),
        endpoint: endpoint.clone(),
        pacing: cfg.pacing,
        batch: cfg.batch,
        batch_wait: cfg.batch_wait,
        post_path: match cfg.ack {
            Ack::Buffered => "/v1/heartbeats",
            Ack::Durable => "/v1/heartbeats?ack=durable",
        },
        start: Instant::now(),
        warmup: cfg.warmup,
        stop: AtomicBool::new(false),
        ended: tokio::sync::Notify::new(),
        stopped: tokio::sync::watch::Sender::new(false),
        budget: cfg.requests.map(AtomicU64::new),
    });
    let mut recorders = Vec::with_capacity(tasks_n);
    let mut handles = Vec::with_capacity(tasks_n);
    for ((viewers, schedule), conn) in parts.into_iter().zip(conns) {
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        recorders.push(recorder.clone());
        let task = Task {
            shared: shared.clone(),
            schedule,
            viewers,
            ledger: cfg.verify.then(Ledger::default),
            recorder,
            conn,
            buf: Vec::with_capacity(256 * cfg.batch),
            pending: Vec::with_capacity(cfg.batch + 2),
            pending_since: None,
        };
        handles.push(tokio::spawn(task.drive()));
    }

    let mut rep = Reporter {
        quiet: cfg.quiet,
        live: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        every: cfg.report_every,
        total: Recorder::default(),
        row: Recorder::default(),
        row_started: cfg.warmup,
        row_cpu: None,
        live_cpu: None,
        rows: Vec::new(),
    };
    cpu_percent_since(&mut rep.live_cpu);
    let drain = |recorders: &[Arc<Mutex<Recorder>>]| {
        let mut iv = Recorder::default();
        for r in recorders {
            if let Ok(mut r) = r.lock() {
                r.drain_into(&mut iv);
            }
        }
        iv
    };
    let end = cfg.duration.map(|d| cfg.warmup + d);
    let mut cpu_start = None;
    let mut ticker = tokio::time::interval_at(
        shared.start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        if cpu_start.is_none() && shared.elapsed() >= cfg.warmup {
            cpu_start = cpu_seconds();
            rep.row_cpu = cpu_start;
            if !cfg.warmup.is_zero() {
                server_start = ServerSnapshot::scrape(&endpoint).await;
            }
        }
        let done = shared.stop.load(Ordering::Relaxed)
            || end.is_some_and(|e| shared.elapsed() >= e)
            || handles.iter().all(|h| h.is_finished());
        if done {
            shared.stop.store(true, Ordering::Relaxed);
            shared.stopped.send_replace(true);
            break;
        }
        let next = match end {
            Some(e) => (shared.start + e).min(Instant::now() + Duration::from_secs(1)),
            None => Instant::now() + Duration::from_secs(1),
        };
        tokio::select! {
            _ = ticker.tick() => {
                let iv = drain(&recorders);
                rep.tick(iv, shared.elapsed(), cfg.warmup);
            }
            _ = tokio::time::sleep_until(next) => {}
            _ = shared.ended.notified() => {}
        }
    }
    let measured_end = shared.elapsed();
    let cpu_end = cpu_seconds();
    let mut ledger = Ledger::default();
    for h in handles {
        // A task that panicked took its part of the ledger with it: nothing it sent
        // could be verified, so the run fails instead of passing on the rest.
        match h.await {
            Ok(Some(l)) => ledger.merge(l),
            Ok(None) => {}
            Err(e) => return Err(Error::Internal(format!("a load task failed: {e}"))),
        }
    }
    let iv = drain(&recorders);
    rep.total.add(&iv);
    rep.row.add(&iv);
    rep.emit_row(measured_end);
    if rep.live && !cfg.quiet {
        eprintln!();
    }

    let window = measured_end.saturating_sub(cfg.warmup);
    let cpu_percent = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if !window.is_zero() => Some((b - a) / window.as_secs_f64() * 100.0),
        _ => None,
    };
    let flushed =
        ServerSnapshot::wait_for_flush(&endpoint, cfg.settle, Duration::from_secs(2)).await;
    let server_end = ServerSnapshot::scrape(&endpoint).await;
    let verify = if cfg.verify {
        let rb = ReadBack {
            endpoint: endpoint.clone(),
            connections: cfg.connections,
        };
        let mut v = read_back(rb, &model.ids, &ledger).await;
        v.flushed = flushed;
        Some(v)
    } else {
        None
    };
    Ok(Report::new(
        &cfg,
        window,
        rep.total,
        cpu_percent,
        (server_start, server_end, flushed),
        rep.rows,
        verify,
    ))
}

/// [`run`] on a runtime with `--threads` workers. One thread means tokio's
/// current-thread runtime: everything (load tasks, reporter, I/O driver) on the calling
/// thread, with no cross-thread wake-ups at all — the cheapest way to generate load.
pub fn run_blocking(cfg: RunConfig) -> Result<Report, Error> {
    let rt = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    }
    .map_err(Error::Runtime)?;
    rt.block_on(run(cfg))
}
