//! Identifier rules from the API contract: what a learner, lesson or device id may be.

/// Longest learner or lesson id, in characters (all allowed characters are ASCII).
pub const MAX_ID_LEN: usize = 128;
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Why an id was refused; the message names the rule so a client can fix its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("may only contain A-Z a-z 0-9 . _ : @ -")]
    BadCharacter,
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
}

fn check(id: &str, max: usize) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > max {
        return Err(IdError::TooLong(max));
    }
    if !id.bytes().all(allowed) {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// A learner or lesson id: 1–128 characters from `A–Z a–z 0–9 . _ : @ -`.
pub fn valid_id(id: &str) -> Result<(), IdError> {
    check(id, MAX_ID_LEN)
}

/// A device id: 1–64 characters from the same alphabet.
pub fn valid_device_id(id: &str) -> Result<(), IdError> {
    check(id, MAX_DEVICE_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i5_ids_follow_the_contract() {
        assert_eq!(valid_id("learner-1@x.org:a_b"), Ok(()));
        assert_eq!(valid_id(""), Err(IdError::Empty));
        assert_eq!(valid_id(&"a".repeat(128)), Ok(()));
        assert_eq!(valid_id(&"a".repeat(129)), Err(IdError::TooLong(128)));
        assert_eq!(valid_id("a b"), Err(IdError::BadCharacter));
        assert_eq!(valid_id("é"), Err(IdError::BadCharacter));
        assert_eq!(valid_id("a/b"), Err(IdError::BadCharacter));
        assert_eq!(valid_device_id(&"d".repeat(65)), Err(IdError::TooLong(64)));
    }
}
