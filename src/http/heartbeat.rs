//! Parsing and validating heartbeats (I5): a request is checked whole before anything
//! is applied, and one bad item rejects its whole batch, naming the item.
//!
//! Ids are borrowed from the request body where JSON allows (no escapes), so a valid
//! heartbeat for a resident key costs no allocation on its way into the map.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::engine::Incoming;
use crate::model::{valid_device_id, valid_id};

/// Largest `position_ms`: 2^53 − 1, the largest integer every JSON client keeps exact.
pub const MAX_POSITION_MS: u64 = (1 << 53) - 1;
/// How far ahead of the server clock `seq` may be (24 h in ms).
pub const MAX_SEQ_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;
/// Most heartbeats in one batch.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    learner_id: Cow<'a, str>,
    #[serde(borrow)]
    lesson_id: Cow<'a, str>,
    position_ms: u64,
    seq: u64,
    #[serde(borrow, default)]
    device_id: Option<Cow<'a, str>>,
}

/// A heartbeat that passed every check.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub learner_id: Cow<'a, str>,
    pub lesson_id: Cow<'a, str>,
    pub position_ms: u64,
    pub seq: u64,
    pub device_id: Option<Cow<'a, str>>,
}

impl<'a> Heartbeat<'a> {
    pub fn incoming(&self, now_ms: u64) -> Incoming<'_> {
        Incoming {
            position_ms: self.position_ms,
            seq: self.seq,
            device_id: self.device_id.as_deref(),
            now_ms,
        }
    }
}

/// A request body: one heartbeat or a batch.
#[derive(Debug)]
pub enum Parsed<'a> {
    Single(Heartbeat<'a>),
    Batch(Vec<Heartbeat<'a>>),
}

/// Parses and validates a body against the server clock `now_ms`.
pub fn parse(body: &[u8], now_ms: u64) -> Result<Parsed<'_>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(invalid_json)?;
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(
                    "invalid_batch",
                    format!(
                        "a batch holds 1 to {MAX_BATCH} heartbeats, this one {}",
                        items.len()
                    ),
                ));
            }
            let heartbeats = items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    decode(raw.get().as_bytes(), now_ms).map_err(|mut e| {
                        e.message = format!("item {i}: {}", e.message);
                        e
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Parsed::Batch(heartbeats))
        }
        Some(b'{') => decode(body, now_ms).map(Parsed::Single),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "body must be a JSON heartbeat object or an array of them",
        )),
    }
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
}

fn decode(json: &[u8], now_ms: u64) -> Result<Heartbeat<'_>, ApiError> {
    let wire: Wire<'_> = serde_json::from_slice(json).map_err(|e| {
        let code = if e.is_data() {
            "invalid_heartbeat"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, format!("{e}"))
    })?;
    validate(wire, now_ms)
}

fn validate(w: Wire<'_>, now_ms: u64) -> Result<Heartbeat<'_>, ApiError> {
    let field = |name: &str, e: crate::model::IdError| {
        ApiError::bad_request("invalid_heartbeat", format!("{name} {e}"))
    };
    valid_id(&w.learner_id).map_err(|e| field("learner_id", e))?;
    valid_id(&w.lesson_id).map_err(|e| field("lesson_id", e))?;
    if let Some(d) = &w.device_id {
        valid_device_id(d).map_err(|e| field("device_id", e))?;
    }
    if w.position_ms > MAX_POSITION_MS {
        return Err(ApiError::bad_request(
            "invalid_heartbeat",
            format!("position_ms must be at most {MAX_POSITION_MS}"),
        ));
    }
    if w.seq == 0 {
        return Err(ApiError::bad_request(
            "invalid_heartbeat",
            "seq must be at least 1",
        ));
    }
    let limit = now_ms + MAX_SEQ_AHEAD_MS;
    if w.seq > limit {
        return Err(ApiError::bad_request(
            "seq_in_future",
            format!("seq {} is more than 24 h ahead of the server clock (limit {limit}); use seq = max(last_seq + 1, now_ms)", w.seq),
        ));
    }
    Ok(Heartbeat {
        learner_id: w.learner_id,
        lesson_id: w.lesson_id,
        position_ms: w.position_ms,
        seq: w.seq,
        device_id: w.device_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn code(body: &str) -> &'static str {
        match parse(body.as_bytes(), NOW) {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn i5_bad_input_table() {
        let ok = r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":1}"#;
        let ahead = format!(
            r#"{{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":{}}}"#,
            NOW + MAX_SEQ_AHEAD_MS + 1
        );
        let too_many = format!("[{}]", vec![ok; MAX_BATCH + 1].join(","));
        let deep = "[".repeat(10_000);
        let cases: Vec<(&str, &str)> = vec![
            (ok, "ok"),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":1,"extra":[1]}"#,
                "ok",
            ),
            ("", "invalid_json"),
            ("nul", "invalid_json"),
            (r#"{"learner_id":"l1""#, "invalid_json"),
            (deep.as_str(), "invalid_json"),
            (
                r#"{"learner_id":"l 1","lesson_id":"x","position_ms":5,"seq":1}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"","position_ms":5,"seq":1}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":-5,"seq":1}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":1.5,"seq":1}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":9007199254740992,"seq":1}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":0}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":"1"}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":99999999999999999999}"#,
                "invalid_heartbeat",
            ),
            (
                r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":1,"device_id":""}"#,
                "invalid_heartbeat",
            ),
            (ahead.as_str(), "seq_in_future"),
            ("[]", "invalid_batch"),
            (too_many.as_str(), "invalid_batch"),
            ("42", "invalid_json"),
        ];
        for (body, want) in cases {
            assert_eq!(code(body), want, "{body:.80}");
        }
    }

    #[test]
    fn i5_one_bad_item_rejects_the_batch_and_names_it() {
        let ok = r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":1}"#;
        let bad = r#"{"learner_id":"l1","lesson_id":"x","position_ms":5,"seq":0}"#;
        let err = parse(format!("[{ok},{ok},{bad}]").as_bytes(), NOW).expect_err("bad item");
        assert_eq!(err.code, "invalid_heartbeat");
        assert!(err.message.starts_with("item 2:"), "{}", err.message);
    }

    #[test]
    fn escaped_ids_are_decoded_then_checked() {
        let body = r#"{"learner_id":"l\u0031","lesson_id":"x","position_ms":5,"seq":1}"#;
        match parse(body.as_bytes(), NOW) {
            Ok(Parsed::Single(hb)) => assert_eq!(hb.learner_id, "l1"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
