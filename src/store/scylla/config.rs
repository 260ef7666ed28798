//! What an operator can say about the ScyllaDB store: the `scylla://` URL and the
//! `--scylla-*` flags, validated once at startup into typed values.
//!
//! Nothing here talks to a cluster. Its job is that a typo fails before anything
//! listens, with one line naming the flag, and that `serve` can never create a
//! keyspace: replication is only ever read by `migrate`, and only when the operator
//! spelled it out (no silent RF=1 that would lose data with one node).

use std::{fmt, str::FromStr, time::Duration};

use scylla::statement::Consistency;

/// Port used when a `scylla://` host names none (the CQL native port).
pub const DEFAULT_PORT: u16 = 9042;
/// Longest keyspace name ScyllaDB accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// A configuration mistake, worded as the one line printed before exiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("store URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("--{flag}: {why}")]
    Flag { flag: &'static str, why: String },
}

fn url_err(url: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Url {
        url: url.to_owned(),
        why: why.into(),
    }
}

fn flag_err(flag: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Flag {
        flag,
        why: why.into(),
    }
}

/// A parsed `scylla://HOST:PORT[,HOST:PORT…]/KEYSPACE`. Hosts are contact points
/// only: the driver discovers the rest of the cluster from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaUrl {
    /// `host:port` strings as the driver takes them (IPv6 hosts keep their brackets).
    pub contact_points: Vec<String>,
    pub keyspace: String,
}

impl ScyllaUrl {
    /// Parses a store URL; the error names the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| url_err(url, "must start with scylla://"))?;
        let (hosts, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| url_err(url, "names no keyspace (scylla://HOST:PORT/KEYSPACE)"))?;
        if hosts.contains('@') {
            return Err(url_err(url, "credentials in the URL are not supported"));
        }
        if keyspace.contains(['?', '#', '/']) {
            return Err(url_err(
                url,
                "takes no path, query or fragment after the keyspace",
            ));
        }
        valid_keyspace(keyspace).map_err(|why| url_err(url, why))?;
        let contact_points = hosts
            .split(',')
            .map(|h| contact_point(h).map_err(|why| url_err(url, why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScyllaUrl {
            contact_points,
            keyspace: keyspace.to_owned(),
        })
    }
}

impl FromStr for ScyllaUrl {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ScyllaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scylla://{}/{}",
            self.contact_points.join(","),
            self.keyspace
        )
    }
}

fn contact_point(host_port: &str) -> Result<String, String> {
    if host_port.is_empty() {
        return Err("has an empty host".into());
    }
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("host {host_port:?} opens '[' without closing it"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("host {host_port:?}: expected ':PORT' after ']'"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (host_port.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if !host_ok {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port {p:?} is not a number in 1-65535")),
            Ok(n) => n,
        },
    };
    Ok(format!("{host}:{port}"))
}

/// A keyspace name the CQL statements can use unquoted: lowercase so that what the
/// operator typed is what the cluster stores (CQL folds unquoted names to lowercase).
fn valid_keyspace(ks: &str) -> Result<(), String> {
    let mut bytes = ks.bytes();
    match bytes.next() {
        None => return Err("names no keyspace".into()),
        Some(b) if !b.is_ascii_lowercase() => {
            return Err(format!(
                "keyspace {ks:?} must start with a lowercase letter"
            ))
        }
        Some(_) => {}
    }
    if ks.len() > MAX_KEYSPACE_LEN {
        return Err(format!(
            "keyspace {ks:?} is longer than {MAX_KEYSPACE_LEN} characters"
        ));
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("keyspace {ks:?} may only contain a-z 0-9 _"));
    }
    Ok(())
}

/// Keyspace replication, given only to `migrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy:RF` — one datacenter; RF=1 only for a laptop.
    Simple { factor: u32 },
    /// `NetworkTopologyStrategy:dc1=3[,dc2=3]` — what production uses.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    /// The CQL map literal for `CREATE KEYSPACE … WITH replication = …`.
    pub fn cql_map(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let dcs: String = dcs
                    .iter()
                    .map(|(dc, rf)| format!(", '{dc}': {rf}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy'{dcs}}}")
            }
        }
    }
}

fn replication_factor(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=15) => Ok(n),
        _ => Err(format!("replication factor {s:?} is not a number in 1-15")),
    }
}

impl FromStr for Replication {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const FORMS: &str = "SimpleStrategy:RF or NetworkTopologyStrategy:DC=RF[,DC=RF…]";
        let (class, spec) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not of the form {FORMS}"))?;
        match class {
            "SimpleStrategy" => Ok(Replication::Simple {
                factor: replication_factor(spec)?,
            }),
            "NetworkTopologyStrategy" => {
                let dcs = spec
                    .split(',')
                    .map(|pair| {
                        let (dc, rf) = pair
                            .split_once('=')
                            .ok_or_else(|| format!("{pair:?} is not DC=RF"))?;
                        let dc_ok = !dc.is_empty()
                            && dc.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
                            });
                        if !dc_ok {
                            return Err(format!("{dc:?} is not a datacenter name"));
                        }
                        Ok((dc.to_owned(), replication_factor(rf)?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Replication::NetworkTopology(dcs))
            }
            other => Err(format!("unknown strategy {other:?}: use {FORMS}")),
        }
    }
}

/// Parses a consistency level name, case-insensitively.
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    const LEVELS: [(&str, Consistency); 8] = [
        ("ONE", Consistency::One),
        ("TWO", Consistency::Two),
        ("THREE", Consistency::Three),
        ("QUORUM", Consistency::Quorum),
        ("ALL", Consistency::All),
        ("LOCAL_QUORUM", Consistency::LocalQuorum),
        ("EACH_QUORUM", Consistency::EachQuorum),
        ("LOCAL_ONE", Consistency::LocalOne),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, c)| c)
        .ok_or_else(|| {
            let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
            format!("unknown consistency {s:?} (one of {})", names.join(", "))
        })
}

/// The `--scylla-*` flags, to flatten into `serve` and `migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScyllaArgs {
    /// Consistency of every read and write (ONE, LOCAL_ONE, QUORUM, LOCAL_QUORUM, EACH_QUORUM, ALL …).
    #[arg(
        long = "scylla-consistency",
        value_name = "LEVEL",
        env = "PROGRESSD_SCYLLA_CONSISTENCY",
        default_value = "LOCAL_QUORUM"
    )]
    pub scylla_consistency: String,

    /// Datacenter whose nodes coordinate requests (no failover to other DCs); unset: any node.
    #[arg(
        long = "scylla-local-dc",
        value_name = "DC",
        env = "PROGRESSD_SCYLLA_LOCAL_DC"
    )]
    pub scylla_local_dc: Option<String>,

    /// Client-side timeout of one request to the cluster (`500ms`, `2s` …).
    #[arg(
        long = "scylla-request-timeout",
        value_name = "DURATION",
        env = "PROGRESSD_SCYLLA_REQUEST_TIMEOUT",
        default_value = "2s"
    )]
    pub scylla_request_timeout: String,

    /// Most row writes in flight to the cluster at once, across all flushes.
    #[arg(
        long = "scylla-max-in-flight",
        value_name = "N",
        env = "PROGRESSD_SCYLLA_MAX_IN_FLIGHT",
        default_value = "256"
    )]
    pub scylla_max_in_flight: String,

    /// Attempts per row write within one flush before the flush fails and stays dirty.
    #[arg(
        long = "scylla-write-attempts",
        value_name = "N",
        env = "PROGRESSD_SCYLLA_WRITE_ATTEMPTS",
        default_value = "4"
    )]
    pub scylla_write_attempts: String,

    /// First retry delay of a row write; doubles per attempt, jittered, capped at 2s.
    #[arg(
        long = "scylla-retry-backoff",
        value_name = "DURATION",
        env = "PROGRESSD_SCYLLA_RETRY_BACKOFF",
        default_value = "50ms"
    )]
    pub scylla_retry_backoff: String,

    /// Keyspace replication for `migrate` only: `SimpleStrategy:1` (a laptop) or
    /// `NetworkTopologyStrategy:dc1=3[,dc2=3]`. `serve` never creates a keyspace.
    #[arg(
        long = "scylla-replication",
        value_name = "STRATEGY:SPEC",
        env = "PROGRESSD_SCYLLA_REPLICATION"
    )]
    pub scylla_replication: Option<String>,
}

/// Validated ScyllaDB settings.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    pub consistency: Consistency,
    pub local_dc: Option<String>,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub write_attempts: u32,
    pub retry_backoff: Duration,
    pub replication: Option<Replication>,
    /// Wait for schema agreement after DDL. Always on against a real cluster; only
    /// tests against a single in-memory CQL node (which has no schema versions) turn
    /// it off.
    pub await_schema_agreement: bool,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            consistency: Consistency::LocalQuorum,
            local_dc: None,
            request_timeout: Duration::from_secs(2),
            max_in_flight: 256,
            write_attempts: 4,
            retry_backoff: Duration::from_millis(50),
            replication: None,
            await_schema_agreement: true,
        }
    }
}

fn duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| flag_err(flag, format!("{s:?} is not a duration ({e})")))?;
    if d.is_zero() {
        return Err(flag_err(flag, "must be more than zero"));
    }
    Ok(d)
}

fn bounded(flag: &'static str, s: &str, max: u64) -> Result<u64, ConfigError> {
    match s.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(flag_err(flag, format!("{s:?} is not a number in 1-{max}"))),
    }
}

impl ScyllaArgs {
    /// Validates the flags; the error is the one line to print before exiting.
    pub fn config(&self) -> Result<ScyllaConfig, ConfigError> {
        let local_dc = match self.scylla_local_dc.as_deref() {
            Some("") => return Err(flag_err("scylla-local-dc", "must not be empty")),
            dc => dc.map(str::to_owned),
        };
        Ok(ScyllaConfig {
            consistency: parse_consistency(&self.scylla_consistency)
                .map_err(|why| flag_err("scylla-consistency", why))?,
            local_dc,
            request_timeout: duration("scylla-request-timeout", &self.scylla_request_timeout)?,
            max_in_flight: bounded("scylla-max-in-flight", &self.scylla_max_in_flight, 65_536)?
                as usize,
            write_attempts: bounded("scylla-write-attempts", &self.scylla_write_attempts, 100)?
                as u32,
            retry_backoff: duration("scylla-retry-backoff", &self.scylla_retry_backoff)?,
            replication: self
                .scylla_replication
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|why| flag_err("scylla-replication", why))?,
            await_schema_agreement: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scylla: ScyllaArgs,
    }

    fn config(args: &[&str]) -> Result<ScyllaConfig, ConfigError> {
        let argv = std::iter::once("progressd").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("clap accepts")
            .scylla
            .config()
    }

    #[test]
    fn flags_have_ids_of_their_own_so_they_flatten_anywhere() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let ids: Vec<String> = Cli::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(ids.iter().all(|id| id.starts_with("scylla_")), "{ids:?}");
    }

    #[test]
    fn url_with_several_hosts_and_a_keyspace() {
        let u = ScyllaUrl::parse("scylla://10.0.0.1:9042,db-2.local:19042,[::1]:9043/progress")
            .expect("valid");
        assert_eq!(
            u.contact_points,
            ["10.0.0.1:9042", "db-2.local:19042", "[::1]:9043"]
        );
        assert_eq!(u.keyspace, "progress");
        assert_eq!(
            u.to_string(),
            "scylla://10.0.0.1:9042,db-2.local:19042,[::1]:9043/progress"
        );
    }

    #[test]
    fn url_without_port_uses_the_cql_port() {
        let u = ScyllaUrl::parse("scylla://localhost/ks_1").expect("valid");
        assert_eq!(u.contact_points, ["localhost:9042"]);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("sqlite://x.db", "must start with scylla://"),
            ("scylla://h:9042", "names no keyspace"),
            ("scylla://h:9042/", "names no keyspace"),
            ("scylla:///ks", "empty host"),
            ("scylla://a:1,,b:2/ks", "empty host"),
            ("scylla://h:0/ks", "port \"0\""),
            ("scylla://h:99999/ks", "port \"99999\""),
            ("scylla://h:x/ks", "port \"x\""),
            ("scylla://u:p@h:9042/ks", "credentials"),
            ("scylla://h:9042/Progress", "lowercase"),
            ("scylla://h:9042/1ks", "lowercase"),
            ("scylla://h:9042/ks-1", "a-z 0-9 _"),
            ("scylla://h:9042/ks?x=1", "no path, query"),
            ("scylla://h:9042/ks/t", "no path, query"),
            ("scylla://[::1:9042/ks", "without closing"),
            ("scylla://h h:9042/ks", "not a host"),
        ];
        for (url, why) in cases {
            let err = ScyllaUrl::parse(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
            assert!(!err.contains('\n'));
        }
        let long = format!("scylla://h/{}", "k".repeat(49));
        assert!(ScyllaUrl::parse(&long).is_err());
    }

    #[test]
    fn flags_default_to_local_quorum_and_256_in_flight_and_no_replication() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.replication, None);
        assert!(c.await_schema_agreement);
    }

    #[test]
    fn flags_parse_into_typed_values() {
        let c = config(&[
            "--scylla-consistency",
            "quorum",
            "--scylla-local-dc",
            "eu-west",
            "--scylla-request-timeout",
            "750ms",
            "--scylla-max-in-flight",
            "64",
            "--scylla-write-attempts",
            "7",
            "--scylla-retry-backoff",
            "10ms",
            "--scylla-replication",
            "NetworkTopologyStrategy:eu-west=3,us_east=2",
        ])
        .expect("valid");
        assert_eq!(c.consistency, Consistency::Quorum);
        assert_eq!(c.local_dc.as_deref(), Some("eu-west"));
        assert_eq!(c.request_timeout, Duration::from_millis(750));
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.write_attempts, 7);
        assert_eq!(c.retry_backoff, Duration::from_millis(10));
        assert_eq!(
            c.replication.expect("given").cql_map(),
            "{'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us_east': 2}"
        );
    }

    #[test]
    fn simple_strategy_only_when_spelled_out() {
        let c = config(&["--scylla-replication", "SimpleStrategy:1"]).expect("valid");
        assert_eq!(c.replication, Some(Replication::Simple { factor: 1 }));
        assert_eq!(
            Replication::Simple { factor: 1 }.cql_map(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
    }

    #[test]
    fn bad_flags_name_the_flag_on_one_line() {
        let cases: [(&[&str], &str); 10] = [
            (
                &["--scylla-consistency", "QUARUM"],
                "--scylla-consistency: unknown",
            ),
            (
                &["--scylla-request-timeout", "soon"],
                "--scylla-request-timeout",
            ),
            (&["--scylla-request-timeout", "0s"], "more than zero"),
            (&["--scylla-max-in-flight", "0"], "--scylla-max-in-flight"),
            (&["--scylla-max-in-flight=-3"], "--scylla-max-in-flight"),
            (&["--scylla-write-attempts", "0"], "--scylla-write-attempts"),
            (&["--scylla-local-dc", ""], "--scylla-local-dc"),
            (
                &["--scylla-replication", "SimpleStrategy"],
                "--scylla-replication",
            ),
            (&["--scylla-replication", "SimpleStrategy:0"], "1-15"),
            (
                &["--scylla-replication", "Everywhere:3"],
                "unknown strategy",
            ),
        ];
        for (args, why) in cases {
            let err = config(args).expect_err(why).to_string();
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(!err.contains('\n'));
        }
        let err = config(&["--scylla-replication", "NetworkTopologyStrategy:dc1"])
            .expect_err("no RF")
            .to_string();
        assert!(err.contains("is not DC=RF"), "{err}");
    }
}
