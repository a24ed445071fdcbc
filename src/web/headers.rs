//! Security headers on every response.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

// No script runs on any page: the pages work without JavaScript, and this
// policy keeps an injected script from running either.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'";

pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();

    // Browsers check every redirect after a form post against form-action, so
    // the IdP's origin must be allowed for the step that sends users there,
    // and the clients' redirect URIs for the step that returns them.
    let mut form_action = String::from("form-action 'self'");
    let idp_origins = state.saml.cached_sso_origin().into_iter();
    let oidc_origins = state
        .oidc
        .iter()
        .flat_map(|oidc| oidc.form_action_origins());
    for origin in idp_origins.chain(oidc_origins) {
        form_action.push(' ');
        form_action.push_str(&origin);
    }
    form_action.push_str(state.provider.clients.form_action_sources());
    if let Ok(policy) = HeaderValue::from_str(&format!("{CONTENT_SECURITY_POLICY}; {form_action}"))
    {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin` rather than `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` on same-site form posts, which the CSRF check rejects.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_static && !headers.contains_key(header::CACHE_CONTROL) {
        // Sign-in pages carry per-session tokens and personal data.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.config.uses_https() {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}
