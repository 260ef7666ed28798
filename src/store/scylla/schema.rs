//! The table progress lives in, and the one place that may create it (`migrate`).
//!
//! One learner per partition (`PRIMARY KEY ((learner_id), lesson_id)`): a learner's
//! resume-on-any-device listing is one single-partition read. Columns are plain
//! cells, so the cluster's cell-level last-write-wins on the write timestamp decides
//! every conflict (I1). A state without a device id stores `''`, never `null`: a null
//! would write a tombstone on every heartbeat of a device-less player.

use super::config::{Replication, ScyllaUrl};

/// Name of the progress table inside the keyspace.
pub const TABLE: &str = "progress";

/// `CREATE KEYSPACE IF NOT EXISTS`, with replication the operator spelled out.
pub fn create_keyspace(url: &ScyllaUrl, replication: &Replication) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {map}",
        ks = url.keyspace,
        map = replication.cql_map()
    )
}

/// `CREATE TABLE IF NOT EXISTS` for the progress table.
pub fn create_table(url: &ScyllaUrl) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {ks}.{TABLE} (\
         learner_id text, lesson_id text, position_ms bigint, seq bigint, \
         device_id text, updated_at_ms bigint, \
         PRIMARY KEY ((learner_id), lesson_id))",
        ks = url.keyspace
    )
}

/// The write: a plain upsert. Its timestamp is set per statement at the protocol
/// level (not `USING TIMESTAMP ?`), which is what ScyllaDB honours for cell LWW.
pub fn insert(url: &ScyllaUrl) -> String {
    format!(
        "INSERT INTO {ks}.{TABLE} \
         (learner_id, lesson_id, position_ms, seq, device_id, updated_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
        ks = url.keyspace
    )
}

/// Read of one (learner, lesson). It selects `lesson_id` too so the reader can check
/// the row is the one asked for (an in-memory test node answers a miss with the
/// next row of the partition; a real cluster never does, and the check is free).
pub fn select_one(url: &ScyllaUrl) -> String {
    format!(
        "SELECT lesson_id, position_ms, seq, device_id, updated_at_ms FROM {ks}.{TABLE} \
         WHERE learner_id = ? AND lesson_id = ?",
        ks = url.keyspace
    )
}

/// Every lesson of one learner: one partition.
pub fn select_learner(url: &ScyllaUrl) -> String {
    format!(
        "SELECT lesson_id, position_ms, seq, device_id, updated_at_ms FROM {ks}.{TABLE} \
         WHERE learner_id = ?",
        ks = url.keyspace
    )
}

/// The readiness probe: reaches the table at the configured consistency.
pub fn probe(url: &ScyllaUrl) -> String {
    format!(
        "SELECT learner_id FROM {ks}.{TABLE} LIMIT 1",
        ks = url.keyspace
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_keys_one_partition_per_learner() {
        let url = ScyllaUrl::parse("scylla://h/progress_test").expect("valid");
        let ddl = create_table(&url);
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS progress_test.progress ("));
        assert!(ddl.contains("PRIMARY KEY ((learner_id), lesson_id)"));
        assert_eq!(
            create_keyspace(&url, &Replication::Simple { factor: 1 }),
            "CREATE KEYSPACE IF NOT EXISTS progress_test WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert!(!insert(&url).contains("USING TIMESTAMP"));
    }
}
