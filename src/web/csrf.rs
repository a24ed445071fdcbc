//! CSRF protection for every form the broker serves.
//!
//! Each session stores a random token. Every page with a form embeds it in a
//! hidden `csrf_token` field, and a middleware rejects any state-changing
//! request whose form does not carry the same token. The `Origin` header, when
//! present, must also be the broker's own.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use data_encoding::BASE64URL_NOPAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::error::AppError;
use crate::state::AppState;

const SESSION_KEY: &str = "csrf.token";
pub const FIELD: &str = "csrf_token";
/// Largest form body accepted; sign-in forms are a few hundred bytes.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Returns the session's CSRF token, creating it on first use.
pub async fn token(session: &Session) -> Result<String, AppError> {
    if let Some(existing) = session.get::<String>(SESSION_KEY).await? {
        return Ok(existing);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = BASE64URL_NOPAD.encode(&bytes);
    session.insert(SESSION_KEY, &token).await?;
    Ok(token)
}

/// Drops the session's token so that the next form gets a new one. Sign-in
/// calls it, so a token seen before sign-in is worthless after it.
pub async fn rotate(session: &Session) -> Result<(), AppError> {
    session.remove::<String>(SESSION_KEY).await?;
    Ok(())
}

/// Compares two tokens in constant time; an empty expected token never matches.
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// Returns the value of the `csrf_token` field in a URL-encoded form body.
pub fn submitted_token(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == FIELD)
        .map(|(_, value)| value.into_owned())
}

/// Middleware that checks the CSRF token of every non-safe request.
pub async fn verify(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let expected = state.public_url.origin().ascii_serialization();
        if origin.as_bytes() != expected.as_bytes() {
            tracing::warn!(origin = ?origin, "form posted from another origin");
            return AppError::CsrfRejected.into_response();
        }
    }

    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return AppError::PayloadTooLarge.into_response();
    };
    let Some(session) = parts.extensions.get::<Session>().cloned() else {
        tracing::error!("CSRF check runs outside the session layer");
        return AppError::CsrfRejected.into_response();
    };
    let expected = match session.get::<String>(SESSION_KEY).await {
        Ok(token) => token.unwrap_or_default(),
        Err(error) => return AppError::from(error).into_response(),
    };
    let submitted = submitted_token(&bytes).unwrap_or_default();
    if !tokens_match(&expected, &submitted) {
        tracing::warn!(path = %parts.uri.path(), "form without a valid CSRF token");
        return AppError::CsrfRejected.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("abc123", "abc123"));
        assert!(!tokens_match("abc123", "abc124"));
        assert!(!tokens_match("abc123", "abc12"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn submitted_token_is_read_from_form() {
        assert_eq!(
            submitted_token(b"a=1&csrf_token=x%2By&b=2").as_deref(),
            Some("x+y")
        );
        assert_eq!(submitted_token(b"a=1"), None);
        assert_eq!(submitted_token(b""), None);
    }

    #[tokio::test]
    async fn session_token_is_stable() {
        let store = std::sync::Arc::new(tower_sessions::MemoryStore::default());
        let session = Session::new(None, store, None);
        let first = token(&session).await.unwrap();
        let second = token(&session).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 43);
    }
}
