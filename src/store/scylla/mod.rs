//! The ScyllaDB store: the scale-out path, where the cluster itself enforces
//! last-write-wins.
//!
//! Several ingest nodes write into one keyspace; every write carries a timestamp
//! derived from the state's `seq` and tie-break ([`timestamp`]), so the cluster's
//! cell-level LWW resolves retries, reordering, several writers and late offline
//! syncs the same way memory and SQLite do (I1). The write path retries what a retry
//! can fix and sets poison rows aside ([`writer`], [`retry`]), so a struggling cluster
//! never loses an accepted heartbeat (I4).
//!
//! Files: [`config`] (URL and flags), [`timestamp`] (the write-timestamp rule),
//! [`schema`] (CQL, and `migrate`, the only place a keyspace is created), [`writer`],
//! [`reader`], [`retry`], [`metrics`].
//!
//! `serve` opens the store with [`open`], which prepares its statements and fails
//! with a pointer to `migrate` when the keyspace or table is missing: it never
//! creates a keyspace itself.

pub mod config;
pub mod metrics;
pub mod reader;
pub mod retry;
pub mod schema;
pub mod timestamp;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use scylla::{
    client::{
        execution_profile::ExecutionProfile, session::Session, session_builder::SessionBuilder,
    },
    errors::{DbError, ExecutionError, PrepareError, RequestAttemptError},
    policies::{load_balancing::DefaultPolicy, retry::FallthroughRetryPolicy},
    statement::prepared::PreparedStatement,
};

pub use config::{ConfigError, Replication, ScyllaArgs, ScyllaConfig, ScyllaUrl};
pub use metrics::ScyllaMetrics;

use self::{
    reader::Reader,
    writer::{RetrySettings, Writer},
};
use crate::{
    model::{LessonProgress, Progress, ProgressRow},
    store::{Store, StoreError, WriteReport},
};

/// A `Store` backed by a ScyllaDB (or Cassandra) cluster.
#[derive(Debug)]
pub struct ScyllaStore {
    writer: Arc<Writer>,
    reader: Reader,
    description: String,
}

/// Connects a session with the configured consistency, timeout and routing: the
/// driver's default policy, token- and shard-aware, pinned to the local datacenter
/// when one is named.
async fn connect(url: &ScyllaUrl, cfg: &ScyllaConfig) -> Result<Arc<Session>, StoreError> {
    let mut routing = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &cfg.local_dc {
        routing = routing
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(cfg.consistency)
        .request_timeout(Some(cfg.request_timeout))
        .load_balancing_policy(routing.build())
        .build();
    SessionBuilder::new()
        .known_nodes(&url.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .auto_await_schema_agreement(cfg.await_schema_agreement)
        .build()
        .await
        .map(Arc::new)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to {url}: {e}")))
}

async fn prepare(
    session: &Session,
    url: &ScyllaUrl,
    cql: String,
) -> Result<PreparedStatement, StoreError> {
    session.prepare(cql).await.map_err(|e| match &e {
        PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(DbError::Invalid, _),
        } => StoreError::Fatal(format!(
            "keyspace {ks} or its table {table} is missing on {url}: create them with \
                 `progressd migrate --store {url} --scylla-replication …` ({e})",
            ks = url.keyspace,
            table = schema::TABLE
        )),
        _ => StoreError::Unavailable(format!("cannot prepare statements on {url}: {e}")),
    })
}

/// Opens the store: connects, prepares every statement, registers the metrics.
/// Fails (pointing at `migrate`) when the keyspace or table does not exist.
pub async fn open(
    url: &ScyllaUrl,
    cfg: &ScyllaConfig,
    registry: &mut Registry,
) -> Result<ScyllaStore, StoreError> {
    let session = connect(url, cfg).await?;
    let mut insert = prepare(&session, url, schema::insert(url)).await?;
    insert.set_is_idempotent(true);
    // This store owns write retries (classified, counted, backed off); the driver
    // must not retry on its own behind it.
    insert.set_retry_policy(Some(Arc::new(FallthroughRetryPolicy::new())));
    let probe = prepare(&session, url, schema::probe(url)).await?;
    let metrics = ScyllaMetrics::default();
    metrics.register(registry);
    let writer = Writer::new(
        Arc::clone(&session),
        insert,
        probe.clone(),
        cfg.max_in_flight,
        RetrySettings {
            attempts: cfg.write_attempts,
            base_backoff: cfg.retry_backoff,
        },
        metrics.clone(),
    );
    let reader = Reader::new(
        Arc::clone(&session),
        prepare(&session, url, schema::select_one(url)).await?,
        prepare(&session, url, schema::select_learner(url)).await?,
        probe,
        metrics,
    );
    Ok(ScyllaStore {
        writer: Arc::new(writer),
        reader,
        description: format!("scylla {url} ({:?})", cfg.consistency),
    })
}

/// Creates the keyspace (with the replication the operator gave) and the progress
/// table, both `IF NOT EXISTS`: running it again changes nothing. An existing
/// keyspace keeps the replication it has.
pub async fn migrate(url: &ScyllaUrl, cfg: &ScyllaConfig) -> Result<(), StoreError> {
    let replication = cfg.replication.as_ref().ok_or_else(|| {
        StoreError::Fatal(
            "migrate needs --scylla-replication (e.g. NetworkTopologyStrategy:dc1=3, \
             or SimpleStrategy:1 for a single laptop node)"
                .into(),
        )
    })?;
    let session = connect(url, cfg).await?;
    let ddl = |e: ExecutionError| StoreError::Fatal(format!("migrate on {url} failed: {e}"));
    session
        .query_unpaged(schema::create_keyspace(url, replication), ())
        .await
        .map_err(ddl)?;
    session
        .query_unpaged(schema::create_table(url), ())
        .await
        .map_err(ddl)?;
    Ok(())
}

#[async_trait]
impl Store for ScyllaStore {
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
        self.writer.write_batch(rows).await
    }

    async fn get(&self, learner_id: &str, lesson_id: &str) -> Result<Option<Progress>, StoreError> {
        self.reader.get(learner_id, lesson_id).await
    }

    async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError> {
        self.reader.list(learner_id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reader.ping().await
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
