//! The Secret Token: its generation, its stored digest, and the extractor
//! that admits only requests that carry it as a bearer token.
//!
//! The token is 32 random bytes from the operating system's generator, so a
//! single unsalted SHA-256 digest is enough to store it: no dictionary or
//! brute-force search can reach a 256-bit random value.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use data_encoding::BASE64URL_NOPAD;
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ScimError;
use super::store::Settings;
use crate::state::AppState;

/// Prefix of every Secret Token, so that secret scanners and people can
/// tell what a leaked value is.
pub const TOKEN_PREFIX: &str = "ulscim_";

/// Creates a new Secret Token.
pub fn generate_token() -> SecretString {
    let mut bytes = [0_u8; 32];
    OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("{TOKEN_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes)))
}

/// Returns the SHA-256 digest under which a token is stored.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares a presented token with the stored digest in constant time.
pub fn token_matches(presented: &str, stored_digest: &[u8]) -> bool {
    let digest = token_digest(presented);
    digest.len() == stored_digest.len() && bool::from(digest.ct_eq(stored_digest))
}

/// A request from the provisioning service, admitted by its bearer token.
/// Carries the synchronisation settings in force for the request.
pub struct ScimClient {
    pub settings: Settings,
}

impl FromRequestParts<AppState> for ScimClient {
    type Rejection = ScimError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .map(|token| SecretString::from(token.to_owned()));
        let Some(presented) = presented else {
            return Err(ScimError::Unauthorized);
        };
        // No stored token means synchronisation is off, and nothing gets in.
        let Some(stored) = state.scim.token_hash().await? else {
            tracing::warn!(
                "SCIM request rejected: no Secret Token exists; run `unified-login scim generate-keys`"
            );
            return Err(ScimError::Unauthorized);
        };
        if !token_matches(presented.expose_secret(), &stored) {
            tracing::warn!("SCIM request rejected: wrong bearer token");
            return Err(ScimError::Unauthorized);
        }
        let settings = super::service::note_request(state.scim.as_ref(), state.clock.now()).await?;
        Ok(Self { settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_long() {
        let first = generate_token();
        let second = generate_token();
        assert_ne!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().starts_with(TOKEN_PREFIX));
        assert_eq!(first.expose_secret().len(), TOKEN_PREFIX.len() + 43);
    }

    #[test]
    fn token_matches_only_its_digest() {
        let token = generate_token();
        let digest = token_digest(token.expose_secret());
        assert!(token_matches(token.expose_secret(), &digest));
        assert!(!token_matches("ulscim_wrong", &digest));
        assert!(!token_matches(token.expose_secret(), &digest[..16]));
    }
}
