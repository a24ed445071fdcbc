//! SCIM error responses (RFC 7644 §3.12): a JSON body with the Error
//! message schema, the HTTP status as a string, an optional `scimType` and a
//! `detail` sentence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ERROR_SCHEMA, SCIM_CONTENT_TYPE};
use crate::directory::DirectoryError;

/// The `scimType` values of RFC 7644 §3.12 that this service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFilter => "invalidFilter",
            Self::TooMany => "tooMany",
            Self::Uniqueness => "uniqueness",
            Self::Mutability => "mutability",
            Self::InvalidSyntax => "invalidSyntax",
            Self::InvalidPath => "invalidPath",
            Self::NoTarget => "noTarget",
            Self::InvalidValue => "invalidValue",
        }
    }
}

/// A failed SCIM request. `detail` goes to the client, so it never contains
/// internal error text; `Internal` errors are logged and get a generic response.
#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        scim_type: Option<ScimType>,
        detail: String,
    },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ScimError {
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::Client {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::Client {
            status: StatusCode::NOT_FOUND,
            scim_type: None,
            detail: detail.into(),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Client {
            status: StatusCode::CONFLICT,
            scim_type: Some(ScimType::Uniqueness),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<DirectoryError> for ScimError {
    fn from(error: DirectoryError) -> Self {
        Self::Internal(error.into())
    }
}

impl From<sqlx::Error> for ScimError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

/// Builds the SCIM error body for `status`.
pub fn error_body(
    status: StatusCode,
    scim_type: Option<ScimType>,
    detail: &str,
) -> serde_json::Value {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(scim_type) = scim_type {
        body["scimType"] = json!(scim_type.as_str());
    }
    body
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (scim_type, detail) = match &self {
            Self::Client {
                scim_type, detail, ..
            } => (*scim_type, detail.clone()),
            Self::Unauthorized => (
                None,
                "Missing or invalid bearer token. Send the Secret Token that \
                 `unified-login scim generate-keys` printed as `Authorization: Bearer TOKEN`."
                    .to_owned(),
            ),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "SCIM request failed");
                (
                    None,
                    "The service provider had an internal problem; the request was not applied. Retry later."
                        .to_owned(),
                )
            }
        };
        let body = error_body(status, scim_type, &detail);
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(SCIM_CONTENT_TYPE),
        );
        if matches!(self, Self::Unauthorized) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        response
    }
}
