//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
//!
//! With a valid `id_token_hint` for the browser's session, the broker signs
//! the user out at once. Without one, a page requests the user's confirmation, so a
//! link on another site cannot sign users out. Signing out ends the broker
//! session and revokes every token issued under it. `post_logout_redirect_uri`
//! must be registered for the client, or the browser stays on the broker.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;
use url::Url;

use super::clients::Client;
use super::params::parse_params;
use super::tokens::{IdClaims, verify};
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::AppForm;
use crate::web::pages::{ErrorPage, LogoutPage, render};

const SIGNED_OUT_PAGE: &str = "/login?signed_out=1";

/// The checked destination of the browser after signing out.
struct Destination<'a> {
    client: Option<&'a Client>,
    redirect: Option<Url>,
    state: Option<String>,
}

impl Destination<'_> {
    fn response(self) -> Response {
        let Some(mut target) = self.redirect else {
            return Redirect::to(SIGNED_OUT_PAGE).into_response();
        };
        if let Some(state) = &self.state {
            target.query_pairs_mut().append_pair("state", state);
        }
        Redirect::to(target.as_str()).into_response()
    }
}

pub async fn start(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let Ok(params) = parse_params(query.as_deref().unwrap_or_default().as_bytes()) else {
        return bad_request(
            "The sign-out request repeats a parameter. Go back to the application and sign out again.",
        );
    };
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(token) => {
            let keys = state.provider.keys.for_token(token).await?;
            // An ID token that has expired still identifies the session it was issued for.
            match verify::<IdClaims>(token, &keys, &state.provider.issuer, "JWT", false) {
                Ok(claims) => Some(claims),
                Err(error) => {
                    tracing::info!(%error, "rejected an id_token_hint at sign-out");
                    return bad_request(
                        "The application sent a sign-out request with an ID token this service did not issue. Sign out from your account page instead.",
                    );
                }
            }
        }
    };
    let destination = match destination(
        &state,
        &params,
        hint.as_ref().map(|claims| claims.aud.as_str()),
    ) {
        Ok(destination) => destination,
        Err(message) => return bad_request(&message),
    };

    let signed_in = SignedIn::load(&session).await?;
    let Some(current) = &signed_in else {
        // Nothing to end in this browser. The client revokes its own tokens
        // at /oauth2/revoke: an ID token alone, which travels in URLs, is
        // not enough to revoke a session's tokens without its cookie.
        return Ok(destination.response());
    };
    // Only an ID token of this very session skips the confirmation. Another
    // token of the same user may be an old one copied from a URL.
    let hint_matches = hint
        .as_ref()
        .is_some_and(|claims| claims.sid == current.session_id && claims.sub == current.user_id);
    if hint_matches {
        end_browser_session(&state, &session).await?;
        return Ok(destination.response());
    }

    let user = state.users.find_by_id(&current.user_id).await?;
    let redirect = destination.redirect.as_ref().map(Url::to_string);
    let page = LogoutPage {
        csrf_token: &csrf.token().await?,
        client_name: destination.client.map(|client| client.name.as_str()),
        email: user.as_ref().map(|user| user.email.as_str()),
        client_id: destination.client.map(|client| client.id.as_str()),
        post_logout_redirect_uri: redirect.as_deref(),
        state: destination.state.as_deref(),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// Handles the confirmation form's post. The CSRF middleware has checked its token.
pub async fn confirm(
    State(state): State<AppState>,
    session: Session,
    AppForm(form): AppForm<ConfirmForm>,
) -> Result<Response, AppError> {
    let mut params = HashMap::new();
    for (name, value) in [
        ("client_id", form.client_id),
        ("post_logout_redirect_uri", form.post_logout_redirect_uri),
        ("state", form.state),
    ] {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            params.insert(name.to_owned(), value);
        }
    }
    let destination = match destination(&state, &params, None) {
        Ok(destination) => destination,
        Err(message) => return bad_request(&message),
    };
    end_browser_session(&state, &session).await?;
    Ok(destination.response())
}

fn destination<'a>(
    state: &'a AppState,
    params: &HashMap<String, String>,
    hint_audience: Option<&str>,
) -> Result<Destination<'a>, String> {
    let client_id = match (params.get("client_id").map(String::as_str), hint_audience) {
        (Some(param), Some(audience)) if param != audience => {
            return Err("The sign-out request names a different application than its ID token. Sign out from your account page instead.".into());
        }
        (Some(id), _) | (None, Some(id)) => Some(id),
        (None, None) => None,
    };
    let client = match client_id {
        Some(id) => Some(state.provider.clients.get(id).ok_or_else(|| {
            "The sign-out request names an application that is not registered. Sign out from your account page instead.".to_owned()
        })?),
        None => None,
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(requested) => {
            let Some(client) = client else {
                return Err("The sign-out request has a return address but does not say which application sent it (id_token_hint or client_id is missing).".into());
            };
            Some(client.post_logout_redirect_uri(requested).ok_or_else(|| {
                format!("The return address after sign-out is not registered for the application '{}'. Tell the administrator of the sign-in service to register it.", client.name)
            })?)
        }
    };
    Ok(Destination {
        client,
        redirect,
        state: params.get("state").cloned(),
    })
}

/// Ends the browser's broker session and revokes every token issued under
/// it. The session is deleted from the store, not just emptied, so a copied
/// cookie stops working too.
pub async fn end_browser_session(state: &AppState, session: &Session) -> Result<(), AppError> {
    if let Some(signed_in) = SignedIn::load(session).await? {
        revoke_session(state, &signed_in.session_id, &signed_in.user_id).await;
        tracing::info!(user.id = %signed_in.user_id, "user signed out");
        state
            .record(AuditEvent {
                kind: "logout",
                outcome: "success",
                user_id: Some(signed_in.user_id),
                ..AuditEvent::default()
            })
            .await;
    }
    session.flush().await?;
    Ok(())
}

/// Revokes every grant of a broker session; failures are logged, because the
/// sign-out itself goes on.
pub async fn revoke_session(state: &AppState, session_id: &str, user_id: &str) {
    let now = state.clock.now();
    match state
        .provider
        .store
        .revoke_session(session_id, "signed out", now)
        .await
    {
        Ok(revoked) => {
            tracing::info!(user.id = %user_id, grants = revoked, "revoked the tokens of a signed-out session")
        }
        Err(error) => {
            tracing::error!(%error, user.id = %user_id, "revoking the tokens of a signed-out session failed")
        }
    }
}

fn bad_request(message: &str) -> Result<Response, AppError> {
    render(
        StatusCode::BAD_REQUEST,
        &ErrorPage {
            title: "Sign-out request not accepted",
            message,
        },
    )
}
