//! Administration: the JSON API under `/admin/api/v1` and the operations
//! behind it, which the command line shares.
//!
//! Every API request needs an admin bearer token (`unified-login admin token
//! create`); without a valid one the response is 401 and nothing runs.

mod detained;
pub mod pages;
pub mod service;
pub mod tokens;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::service::{AuditQuery, BulkError, ClAuthContext, Selection};
use crate::flow::cl_auth::active_idp;
use crate::state::AppState;

/// The authenticated caller of the admin API: the name of its token.
pub struct AdminPrincipal {
    pub name: String,
}

impl FromRequestParts<AppState> for AdminPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        let Some(token) = token else {
            return Err(ApiError::unauthorized(
                "send an admin token in an Authorization: Bearer header; create one with `unified-login admin token create`",
            ));
        };
        match tokens::authenticate(&state.pool, &token, state.clock.now()).await {
            Ok(Some(name)) => Ok(Self { name }),
            Ok(None) => {
                tracing::warn!("admin API request with an unknown or revoked token");
                Err(ApiError::unauthorized(
                    "the admin token is not valid or was revoked",
                ))
            }
            Err(error) => Err(ApiError::internal(error)),
        }
    }
}

pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/v1/users", get(list_users))
        .route("/admin/api/v1/cl-auth/enable", post(enable_cl_auth))
        .route("/admin/api/v1/cl-auth/disable", post(disable_cl_auth))
        .route(
            "/admin/api/v1/users/{user}/setup-email",
            post(resend_setup_email),
        )
        .route("/admin/api/v1/reports/users.csv", get(user_report))
        .route("/admin/api/v1/audit", get(audit_log))
        .route("/admin/api/v1/emails", get(emails))
        .route("/admin/api/v1/alarms", get(alarms))
        .route("/admin/api/v1/scim/detained", get(detained::list))
        .route(
            "/admin/api/v1/scim/detained/{id}",
            get(detained::show)
                .put(detained::modify)
                .delete(detained::cancel),
        )
        .route(
            "/admin/api/v1/scim/detained/{id}/apply",
            post(detained::apply),
        )
}

/// An error of the admin API: JSON with a message that explains what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "admin API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request failed on the server; see its log",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(format!("{error:#}"))
    }
}

impl From<crate::directory::DirectoryError> for ApiError {
    fn from(error: crate::directory::DirectoryError) -> Self {
        Self::internal(error)
    }
}

impl From<BulkError> for ApiError {
    fn from(error: BulkError) -> Self {
        match error {
            BulkError::Internal(error) => Self::from(error),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="unified-login admin""#),
            );
        }
        response
    }
}

#[derive(Serialize)]
struct UserSummary {
    id: String,
    login_id: String,
    email: String,
    first_name: String,
    last_name: String,
    active: bool,
    cl_auth_enabled: bool,
    totp_enrolled: bool,
    must_change_password: bool,
    last_login_at: Option<i64>,
}

async fn list_users(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> Result<Response, ApiError> {
    let users: Vec<UserSummary> = state
        .users
        .list()
        .await?
        .into_iter()
        .map(|user| UserSummary {
            totp_enrolled: user.has_second_factor(),
            id: user.id,
            login_id: user.login_id,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            active: user.active,
            cl_auth_enabled: user.cl_auth_enabled,
            must_change_password: user.must_change_password,
            last_login_at: user.last_login_at,
        })
        .collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// The body of a bulk CL Auth request: exactly one of `users`, `matching`
/// and `all`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    users: Option<Vec<String>>,
    matching: Option<String>,
    #[serde(default)]
    all: bool,
    default_password: Option<SecretString>,
    default_password_confirmation: Option<SecretString>,
}

impl BulkRequest {
    fn selection(&self) -> Result<Selection, ApiError> {
        match (&self.users, &self.matching, self.all) {
            (Some(users), None, false) if !users.is_empty() => Ok(Selection::Users(users.clone())),
            (None, Some(text), false) if !text.trim().is_empty() => {
                Ok(Selection::Matching(text.clone()))
            }
            (None, None, true) => Ok(Selection::All),
            _ => Err(ApiError::bad_request(
                "select users with exactly one of: \"users\" (a non-empty list of login IDs or emails), \"matching\" (text), or \"all\": true",
            )),
        }
    }
}

fn parse_bulk(
    body: Result<Json<BulkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<BulkRequest, ApiError> {
    body.map(|Json(request)| request).map_err(|rejection| {
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    })
}

pub(crate) async fn cl_auth_context(state: &AppState) -> Result<ClAuthContext, ApiError> {
    let idp = active_idp(state)
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(ClAuthContext {
        idp_configured: idp.is_some(),
        mitel_credentials: idp.as_ref().is_none_or(|idp| idp.mitel_credentials()),
        ldap_active: state.config.ldap.is_some(),
    })
}

async fn enable_cl_auth(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    body: Result<Json<BulkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let request = parse_bulk(body)?;
    if request.default_password.is_some() || request.default_password_confirmation.is_some() {
        return Err(ApiError::bad_request(
            "enabling CL Auth takes no default password; remove it from the request",
        ));
    }
    let selection = request.selection()?;
    let context = cl_auth_context(&state).await?;
    let outcomes = state
        .admin
        .enable_cl_auth(&selection, context, &format!("admin token {}", admin.name))
        .await?;
    Ok(bulk_response(outcomes))
}

async fn disable_cl_auth(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    body: Result<Json<BulkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let request = parse_bulk(body)?;
    let selection = request.selection()?;
    let (Some(password), Some(confirmation)) = (
        &request.default_password,
        &request.default_password_confirmation,
    ) else {
        return Err(ApiError::bad_request(
            "disabling CL Auth needs the default password twice: \"default_password\" and \"default_password_confirmation\"",
        ));
    };
    let outcomes = state
        .admin
        .disable_cl_auth(
            &selection,
            password,
            confirmation,
            &format!("admin token {}", admin.name),
        )
        .await?;
    Ok(bulk_response(outcomes))
}

/// 200 when every user succeeded or was unchanged, 207 when some failed;
/// each user's outcome is in the body either way.
fn bulk_response(outcomes: Vec<service::UserOutcome>) -> Response {
    let failures = outcomes
        .iter()
        .filter(|outcome| outcome.outcome == service::Outcome::Failed)
        .count();
    let status = if failures == 0 {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (
        status,
        Json(json!({ "failed": failures, "results": outcomes })),
    )
        .into_response()
}

async fn resend_setup_email(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let context = cl_auth_context(&state).await?;
    let outcome = state
        .admin
        .resend_setup_email(&user, context, &format!("admin token {}", admin.name))
        .await?;
    let status = if outcome.outcome == service::Outcome::Failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

async fn user_report(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> Result<Response, ApiError> {
    Ok(csv_download(state.admin.user_report_csv().await?))
}

/// Returns the user summary report as a file download.
pub(crate) fn csv_download(csv: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"user-summary.csv\"",
            ),
        ],
        csv,
    )
        .into_response()
}

async fn audit_log(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let records = state
        .admin
        .audit(&query)
        .await
        .map_err(|error| ApiError::bad_request(format!("{error:#}")))?;
    Ok(Json(json!({ "events": records })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailsQuery {
    limit: Option<i64>,
}

async fn emails(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(query): Query<EmailsQuery>,
) -> Result<Response, ApiError> {
    let emails = state
        .admin
        .mailer()
        .recent(query.limit.unwrap_or(50).clamp(1, 500))
        .await?;
    Ok(Json(json!({ "emails": emails })).into_response())
}

async fn alarms(State(state): State<AppState>, _admin: AdminPrincipal) -> Response {
    Json(json!({ "alarms": state.alarms.active() })).into_response()
}
