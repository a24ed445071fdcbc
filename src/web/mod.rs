//! HTTP surface: router composition, middleware order, static files and
//! health endpoints.

pub mod client_address;
pub mod csrf;
pub mod extract;
pub mod headers;
pub mod pages;
pub mod rate_limit;
pub mod return_to;

use crate::session::DbSessionStore;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tower_sessions::SessionManagerLayer;

use crate::error::AppError;
use crate::state::AppState;
use crate::{account, admin, flow, provider};

const STYLESHEET: &str = include_str!("../../static/style.css");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Maximum time one request may take. Database waits are bounded more
/// tightly (see `[database]`); this catches anything else that stalls, so
/// no client waits for ever.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds the whole application router.
pub fn app(state: AppState, sessions: SessionManagerLayer<DbSessionStore>) -> Router {
    // Layers run outside-in in the reverse order of the `.layer` calls below:
    // request id → client address → trace → security headers → session →
    // rate limit → sign-in time limit → CSRF → handler.
    let browser = Router::new()
        .merge(flow::routes())
        .merge(account::routes())
        .merge(provider::browser_routes())
        .merge(admin::pages::routes())
        .layer(middleware::from_fn_with_state(state.clone(), csrf::verify))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::session::limit_unfinished_sign_ins,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit_posts,
        ))
        .layer(sessions)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            database_outage,
        ));

    Router::new()
        .merge(browser)
        .merge(flow::idp_routes().layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit_posts,
        )))
        .merge(provider::api_routes())
        .merge(admin::api_routes())
        // SCIM is a bearer-token API: no session, CSRF token or form rate limit.
        .nest("/scim/v2", crate::scim::routes())
        .route("/static/style.css", get(stylesheet))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            headers::security_headers,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-");
                // The path only: query strings can carry a login hint (an email address).
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request.id = %request_id,
                )
            }),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client_address::record,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database responds, so a load balancer stops sending sign-ins
/// to an instance whose database is gone. The probe gives up after two
/// seconds, well within a load balancer's own probe timeout.
async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READINESS_TIMEOUT, crate::db::ping(&state.pool)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = READINESS_TIMEOUT.as_millis() as u64,
                "readiness check timed out"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Returns 503 for a browser request that failed while the database is
/// unreachable. Without the database the session cannot load or save, which
/// would otherwise show as an internal error or as an expired form.
async fn database_outage(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if !matches!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::FORBIDDEN
    ) {
        return response;
    }
    let reachable = matches!(
        tokio::time::timeout(READINESS_TIMEOUT, crate::db::ping(&state.pool)).await,
        Ok(Ok(()))
    );
    if reachable {
        return response;
    }
    tracing::warn!(status = %response.status(), "a request failed while the database is unreachable");
    AppError::Unavailable.into_response()
}

/// Prometheus metrics: alarm states, sign-ins and issued tokens.
async fn metrics() -> Response {
    match crate::telemetry::render_metrics() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => AppError::NotFound.into_response(),
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}
