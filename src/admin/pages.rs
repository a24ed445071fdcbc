//! The admin web UI: users with bulk CL Auth changes, active alarms, the
//! user report and the audit log.
//!
//! The pages need a browser signed in through the normal login flow as a
//! user with the admin role (`unified-login admin role grant USER`). Others
//! are sent to sign in, or get 403 when signed in without the role.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;

use super::cl_auth_context;
use super::service::{AuditQuery, BulkError, Outcome, Selection};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::CurrentUser;
use crate::web::pages::{
    AdminAuditPage, AdminPage, AdminResultsPage, AdminUserRow, ErrorPage, render,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/cl-auth", post(bulk_cl_auth))
        .route("/admin/reports/users.csv", get(user_report))
        .route("/admin/audit", get(audit))
}

/// A signed-in user with the admin role.
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        let is_admin: Option<i64> = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
            .bind(&current.user.id)
            .fetch_optional(&state.pool)
            .await
            .map_err(|error| AppError::Internal(error.into()).into_response())?;
        if is_admin != Some(1) {
            tracing::warn!(user.id = %current.user.id, "a user without the admin role opened an admin page");
            let page = ErrorPage {
                title: "Administrators only",
                message: "This page is for administrators. Ask an administrator to give your account the admin role.",
            };
            return Err(
                render(StatusCode::FORBIDDEN, &page).unwrap_or_else(IntoResponse::into_response)
            );
        }
        Ok(Self(current))
    }
}

async fn overview(
    State(state): State<AppState>,
    _admin: AdminUser,
    csrf: Csrf,
) -> Result<Response, AppError> {
    let users = state
        .users
        .list()
        .await?
        .into_iter()
        .map(|user| AdminUserRow {
            name: user.display_name(),
            login_id: user.login_id,
            email: user.email,
            cl_auth_enabled: user.cl_auth_enabled,
        })
        .collect();
    let alarms = state
        .alarms
        .active()
        .into_iter()
        .map(|alarm| (alarm.alarm.name().to_owned(), alarm.detail))
        .collect();
    let page = AdminPage {
        csrf_token: &csrf.token().await?,
        users,
        alarms,
    };
    render(StatusCode::OK, &page)
}

/// Handles the bulk form. Its checkboxes repeat the `users` field, which the
/// typed form extractor cannot read, so the body is parsed here. The CSRF
/// layer has already checked the token.
async fn bulk_cl_auth(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    body: Bytes,
) -> Result<Response, AppError> {
    let mut users = Vec::new();
    let mut action = None;
    let mut password = None;
    let mut confirmation = None;
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "users" => users.push(value.into_owned()),
            "action" => action = Some(value.into_owned()),
            "default_password" => password = Some(SecretString::from(value.into_owned())),
            "default_password_confirmation" => {
                confirmation = Some(SecretString::from(value.into_owned()))
            }
            _ => {}
        }
    }
    if users.is_empty() {
        return results_page(
            StatusCode::BAD_REQUEST,
            "Nothing changed",
            Some("Select at least one user."),
            Vec::new(),
        );
    }
    let selection = Selection::Users(users);
    let actor = format!("admin {}", admin.user.login_id);
    let outcome = match action.as_deref() {
        Some("enable") => {
            let context = cl_auth_context(&state)
                .await
                .map_err(|_| anyhow::anyhow!("reading the IdP settings failed"))?;
            state
                .admin
                .enable_cl_auth(&selection, context, &actor)
                .await
        }
        Some("disable") => {
            let empty = SecretString::from(String::new());
            state
                .admin
                .disable_cl_auth(
                    &selection,
                    password.as_ref().unwrap_or(&empty),
                    confirmation.as_ref().unwrap_or(&empty),
                    &actor,
                )
                .await
        }
        _ => return Err(AppError::MalformedRequest),
    };
    let heading = if action.as_deref() == Some("enable") {
        "Enabling CloudLink Authentication"
    } else {
        "Disabling CloudLink Authentication"
    };
    match outcome {
        Ok(outcomes) => {
            let rows = outcomes
                .into_iter()
                .map(|outcome| {
                    let shown = match outcome.outcome {
                        Outcome::Changed => "Done".to_owned(),
                        Outcome::Unchanged => "Already set".to_owned(),
                        Outcome::Failed => outcome.error.unwrap_or_default(),
                    };
                    (outcome.user, shown)
                })
                .collect();
            results_page(StatusCode::OK, heading, None, rows)
        }
        Err(BulkError::Internal(error)) => Err(AppError::Internal(error)),
        Err(error) => {
            let message = format!("Nothing changed: {error}.");
            results_page(StatusCode::BAD_REQUEST, heading, Some(&message), Vec::new())
        }
    }
}

fn results_page(
    status: StatusCode,
    heading: &str,
    error: Option<&str>,
    results: Vec<(String, String)>,
) -> Result<Response, AppError> {
    render(
        status,
        &AdminResultsPage {
            heading,
            error,
            results,
        },
    )
}

async fn user_report(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Response, AppError> {
    Ok(super::csv_download(state.admin.user_report_csv().await?))
}

async fn audit(State(state): State<AppState>, _admin: AdminUser) -> Result<Response, AppError> {
    let records = state.admin.audit(&AuditQuery::default()).await?;
    let events = records
        .into_iter()
        .map(|record| {
            let time = chrono::DateTime::from_timestamp(record.at, 0)
                .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            (
                time,
                record.kind,
                record.outcome,
                record.identifier.unwrap_or_default(),
                record.detail.unwrap_or_default(),
            )
        })
        .collect();
    render(StatusCode::OK, &AdminAuditPage { events })
}
