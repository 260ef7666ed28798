//! Connection settings and the versioned schema (`PRAGMA user_version`).
//!
//! Migrations are an ordered list; a database is brought from its version to the
//! newest in one transaction. A database newer than this binary is refused rather than
//! written with rules it does not know.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::classify;
use crate::store::StoreError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE progress (
        learner_id    TEXT    NOT NULL,
        lesson_id     TEXT    NOT NULL,
        position_ms   INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        tiebreak      INTEGER NOT NULL,
        device_id     TEXT,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (learner_id, lesson_id)
    ) WITHOUT ROWID;"];

/// Opens one connection with the settings every connection of this store shares.
pub(super) fn open_connection(path: &Path, cache_mib: u32) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Fatal(format!(
            "{} cannot use WAL mode (got {mode})",
            path.display()
        )));
    }
    // FULL: each commit (one per flush) is fsynced, so "committed" means "on disk".
    // wal_autocheckpoint=0: the checkpointer thread does that work, off the commit path.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL;
         PRAGMA wal_autocheckpoint=0;
         PRAGMA busy_timeout=5000;
         PRAGMA cache_size=-{};",
        u64::from(cache_mib) * 1024
    ))
    .map_err(classify)?;
    Ok(conn)
}

/// Brings the schema to the newest version.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let newest = MIGRATIONS.len() as i64;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(classify)?;
    if version > newest {
        return Err(StoreError::Fatal(format!(
            "database schema version {version} is newer than this progressd understands ({newest})"
        )));
    }
    let Ok(from) = usize::try_from(version) else {
        return Err(StoreError::Fatal(format!(
            "database schema version {version} is not one progressd ever wrote"
        )));
    };
    if version == newest {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(classify)?;
    for step in &MIGRATIONS[from..] {
        tx.execute_batch(step).map_err(classify)?;
    }
    tx.pragma_update(None, "user_version", newest)
        .map_err(classify)?;
    tx.commit().map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_is_idempotent_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.db");
        let conn = open_connection(&path, 2).expect("open");
        migrate(&conn).expect("first migrate");
        migrate(&conn).expect("second migrate is a no-op");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, MIGRATIONS.len() as i64);

        conn.pragma_update(None, "user_version", 99).expect("bump");
        let err = migrate(&conn).expect_err("newer schema must be refused");
        assert!(matches!(err, StoreError::Fatal(m) if m.contains("newer")));

        conn.pragma_update(None, "user_version", -1)
            .expect("tamper");
        let err = migrate(&conn).expect_err("a negative version must be refused");
        assert!(
            matches!(&err, StoreError::Fatal(m) if m.contains("ever wrote")),
            "{err:?}"
        );
    }
}
