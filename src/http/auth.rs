//! Bearer-token auth (HS256 JWT): who a request speaks for.
//!
//! `sub` names the learner the token speaks for; `"scope":"service"` lets the
//! platform's own backends act for any learner. `exp` is required. Missing, malformed,
//! badly signed or expired tokens are 401; a learner acting for another is 403.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::ApiError;

pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Learner(String),
    Service,
}

impl Principal {
    /// 403 unless this principal may act for `learner_id`.
    pub fn may_act_for(&self, learner_id: &str) -> Result<(), ApiError> {
        match self {
            Principal::Service => Ok(()),
            Principal::Learner(sub) if sub == learner_id => Ok(()),
            Principal::Learner(_) => Err(ApiError::forbidden(format!(
                "this token may not act for learner {learner_id:?}"
            ))),
        }
    }
}

impl Auth {
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        let key =
            DecodingKey::from_secret(secret).map_err(|e| format!("unusable auth secret: {e}"))?;
        Ok(Auth { key, validation })
    }

    /// Verifies the request's bearer token.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let header = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?
            .claims;
        Ok(match claims.scope.as_deref() {
            Some("service") => Principal::Service,
            _ => Principal::Learner(claims.sub),
        })
    }
}
