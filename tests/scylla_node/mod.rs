//! Test support for the ScyllaDB store: a `kassandra` in-memory CQL v4 node served
//! in-process on a loopback port, and helpers to build stores and rows against it.
//!
//! The node runs the real driver's protocol end to end (startup, prepare, execute,
//! paging, schema statements) but ignores write timestamps and has no replicas, so
//! tests here prove plumbing, retries and poison handling (I4), never LWW (I1) —
//! that needs a real node (`PROGRESSD_TEST_SCYLLA`).

#![allow(dead_code)] // each test crate (and the bench) uses a different part of it

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use kassandra::{
    frame::{request::Request, request_stream, response::Response, response_sink},
    KassandraSession,
};
use progressd::{
    model::{Progress, ProgressRow},
    store::{
        scylla::{self, Replication, ScyllaConfig, ScyllaStore, ScyllaUrl},
        Store,
    },
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// A kassandra node listening on 127.0.0.1; dropping it closes the listener and
/// every client connection at once, as a crash would.
pub struct KassandraNode {
    pub addr: SocketAddr,
    server: JoinHandle<()>,
}

impl KassandraNode {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let db = Arc::new(Mutex::new(KassandraSession::new()));
        let server = tokio::spawn(async move {
            let mut clients = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                // As a real node does: no Nagle delay on small answer frames.
                if stream.set_nodelay(true).is_err() {
                    continue;
                }
                clients.spawn(serve_client(Arc::clone(&db), stream));
            }
        });
        KassandraNode { addr, server }
    }
}

impl Drop for KassandraNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_client(db: Arc<Mutex<KassandraSession>>, mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut responses = response_sink(&mut write);
    while let Some(Ok((frame, opcode, body))) = requests.next().await {
        let response = match Request::deserialize(opcode, &body, frame.flags) {
            Ok(request) => answer(&db, request),
            Err(e) => Response::Error(e),
        };
        if responses.send((response, frame.stream)).await.is_err() {
            return;
        }
    }
}

fn answer(db: &Mutex<KassandraSession>, request: Request<'_>) -> Response {
    let mut db = db.lock().expect("kassandra session lock");
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } | Request::AuthResponse => {
            return Response::Ready
        }
        Request::Options => return Response::options(),
        Request::Query(q) => db.process(q),
        Request::Prepare(q) => db.prepare(q),
        Request::Execute(e) => db.execute(e),
        Request::Batch(b) => db.process_batch(b),
    };
    result.map_or_else(Response::Error, Response::Result)
}

/// Store settings for tests: no schema agreement (the node has no schema
/// versions), RF=1 for `migrate`, short backoff so retries do not slow the suite.
pub fn test_config() -> ScyllaConfig {
    ScyllaConfig {
        await_schema_agreement: false,
        replication: Some(Replication::Simple { factor: 1 }),
        retry_backoff: Duration::from_millis(5),
        ..ScyllaConfig::default()
    }
}

pub fn url(addr: SocketAddr, keyspace: &str) -> ScyllaUrl {
    ScyllaUrl::parse(&format!("scylla://{addr}/{keyspace}")).expect("valid test URL")
}

/// Migrates `url` and opens a store on it; returns the registry holding its metrics.
pub async fn migrated_store(url: &ScyllaUrl, cfg: &ScyllaConfig) -> (ScyllaStore, Registry) {
    scylla::migrate(url, cfg).await.expect("migrate");
    let mut registry = Registry::with_prefix("progressd");
    let store = scylla::open(url, cfg, &mut registry).await.expect("open");
    (store, registry)
}

/// Asserts every row of `batch` reads back from `store` exactly as written.
pub async fn assert_all_stored(store: &ScyllaStore, batch: &[ProgressRow]) {
    for r in batch {
        let got = store.get(&r.learner_id, &r.lesson_id).await.expect("get");
        assert_eq!(
            got.as_ref(),
            Some(&r.progress),
            "{}/{}",
            r.learner_id,
            r.lesson_id
        );
    }
}

/// The value of one metric line (`name{labels} value`) in the registry's text.
pub fn metric(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).expect("encode metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn row(
    learner: &str,
    lesson: &str,
    seq: u64,
    position_ms: u64,
    device: Option<&str>,
) -> ProgressRow {
    ProgressRow {
        learner_id: Arc::from(learner),
        lesson_id: Arc::from(lesson),
        progress: Progress {
            position_ms,
            seq,
            device_id: device.map(Arc::from),
            updated_at_ms: 1_780_000_000_000 + seq,
        },
    }
}

/// `learners × lessons` rows with distinct states.
pub fn rows(learners: usize, lessons: usize) -> Arc<[ProgressRow]> {
    (0..learners)
        .flat_map(|l| {
            (0..lessons).map(move |s| {
                let seq = 1_000 + (l * lessons + s) as u64;
                row(
                    &format!("learner-{l}"),
                    &format!("lesson-{s}"),
                    seq,
                    seq * 10,
                    Some("phone"),
                )
            })
        })
        .collect()
}
