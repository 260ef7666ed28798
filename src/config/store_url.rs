//! The `--store` URL: which backend, and where.

use std::path::PathBuf;
use std::str::FromStr;

use crate::store::scylla::ScyllaUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (relative or absolute: `sqlite:///var/lib/p.db`).
    Sqlite(PathBuf),
    /// `scylla://HOST:PORT[,HOST:PORT…]/KEYSPACE`.
    Scylla(ScyllaUrl),
    /// `memory://`: nothing durable.
    Memory,
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://./progressd-data/progress.db"
                        .into(),
                );
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if s == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if s.starts_with("scylla://") {
            return ScyllaUrl::parse(s)
                .map(StoreUrl::Scylla)
                .map_err(|e| e.to_string());
        }
        Err(format!(
            "unknown store URL {s:?}: expected sqlite://PATH, scylla://HOST:PORT/KEYSPACE or memory://"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme_and_names_the_choices_on_error() {
        assert_eq!(
            "sqlite://./d/p.db".parse(),
            Ok(StoreUrl::Sqlite(PathBuf::from("./d/p.db")))
        );
        assert_eq!(
            "sqlite:///abs/p.db".parse(),
            Ok(StoreUrl::Sqlite(PathBuf::from("/abs/p.db")))
        );
        assert_eq!("memory://".parse(), Ok(StoreUrl::Memory));
        assert!(matches!(
            "scylla://h:9042/ks".parse(),
            Ok(StoreUrl::Scylla(_))
        ));
        assert!("scylla://h:9042".parse::<StoreUrl>().is_err());
        assert!("sqlite://".parse::<StoreUrl>().is_err());
        let err = "postgres://x"
            .parse::<StoreUrl>()
            .expect_err("unknown scheme");
        assert!(err.contains("sqlite://PATH"));
    }
}
