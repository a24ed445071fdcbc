//! Error responses of the OAuth 2.0 endpoints (RFC 6749, section 5.2; RFC
//! 6750, section 3), with the status, `error` code and a description of what
//! to fix.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// A `WWW-Authenticate` challenge for 401 responses.
    pub challenge: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            challenge: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// Client authentication failed. The challenge names Basic, the scheme
    /// RFC 6749, section 2.3.1 requires every server to support.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        error.challenge = Some(r#"Basic realm="unified-login", charset="UTF-8""#.to_owned());
        error
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    /// A bearer token was missing (no `error` attribute in the challenge, as
    /// RFC 6750, section 3.1 requires) or invalid.
    pub fn invalid_token(description: impl Into<String>, token_sent: bool) -> Self {
        let description = description.into();
        let mut error = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            description.clone(),
        );
        error.challenge = Some(if token_sent {
            format!(
                r#"Bearer realm="unified-login", error="invalid_token", error_description="{}""#,
                description.replace(['"', '\\'], "'")
            )
        } else {
            r#"Bearer realm="unified-login""#.to_owned()
        });
        error
    }

    pub fn insufficient_scope(description: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::FORBIDDEN, "insufficient_scope", description);
        error.challenge = Some(
            r#"Bearer realm="unified-login", error="insufficient_scope", scope="openid""#
                .to_owned(),
        );
        error
    }

    pub fn server_error(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "token request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the authorization server had a problem on its side; try again in a moment",
        )
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(error: anyhow::Error) -> Self {
        Self::server_error(format!("{error:#}"))
    }
}

impl From<crate::directory::DirectoryError> for OAuthError {
    fn from(error: crate::directory::DirectoryError) -> Self {
        Self::server_error(error)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(challenge) = self
            .challenge
            .and_then(|value| HeaderValue::from_str(&value).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
