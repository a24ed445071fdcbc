//! Request errors and how they are shown.
//!
//! Users see a plain sentence telling them what to do next, and internal details
//! (database errors, file paths) go only to the log.

use std::time::Duration;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::directory::DirectoryError;
use crate::web::pages::ErrorPage;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the form was not sent from this site or its token expired")]
    CsrfRejected,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("too many sign-in attempts from this address")]
    RateLimited { retry_after: Duration },
    #[error("page not found")]
    NotFound,
    #[error("the request's form or query is incomplete or malformed")]
    MalformedRequest,
    #[error("the database cannot be reached")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DirectoryError> for AppError {
    fn from(error: DirectoryError) -> Self {
        Self::Internal(error.into())
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(error: tower_sessions::session::Error) -> Self {
        Self::Internal(anyhow::anyhow!("session store: {error}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::CsrfRejected => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form has expired or was sent from another site. Go back, reload the page and try again.",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                "The form sent more data than a sign-in needs. Go back and try again.",
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many sign-in attempts came from your network. Wait a moment, then try again.",
            ),
            Self::MalformedRequest => (
                StatusCode::BAD_REQUEST,
                "Incomplete request",
                "The page sent an incomplete or malformed form. Go back, reload the page and try again.",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "The sign-in service cannot reach its database at the moment. Try again in a minute.",
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no page at this address. Start again from the sign-in page.",
            ),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The sign-in service had a problem on its side. Try again in a moment; if it keeps happening, tell your administrator.",
                )
            }
        };

        let page = ErrorPage { title, message };
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, "rendering the error page failed");
                (status, message).into_response()
            }
        };
        if let Self::RateLimited { retry_after } = self {
            // Rounded up: a client that waits the whole seconds given must
            // find its allowance back.
            let seconds = retry_after
                .as_nanos()
                .div_ceil(1_000_000_000)
                .max(1)
                .to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(wait: Duration) -> String {
        let response = AppError::RateLimited { retry_after: wait }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        response.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(8_001)), "9");
        assert_eq!(retry_after(Duration::from_secs(9)), "9");
        assert_eq!(retry_after(Duration::from_millis(200)), "1");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }
}
