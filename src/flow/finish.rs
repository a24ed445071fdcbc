//! The end of a successful flow: a fresh session id, the audit record, and
//! the redirect to where the user was going.

use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::{Expiry, Session};

use super::state::LoginFlow;
use crate::directory::{AuditEvent, User};
use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;

pub async fn complete_sign_in(
    state: &AppState,
    session: &Session,
    flow: &LoginFlow,
    user: &User,
    methods: &[&str],
    client_ip: Option<String>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    // Signing in again as the same user keeps the session id, so tokens
    // issued before stay tied to this browser's session and its sign-out.
    let previous = SignedIn::load(session).await?;
    let session_id = match previous {
        Some(previous) if previous.user_id == user.id => previous.session_id,
        Some(previous) => {
            // Another user takes over this browser, which ends the previous
            // user's session, so the tokens issued under it go too.
            crate::provider::logout::revoke_session(state, &previous.session_id, &previous.user_id)
                .await;
            crate::provider::tokens::random_token()
        }
        None => crate::provider::tokens::random_token(),
    };
    state
        .users
        .record_sign_in(
            &user.id,
            &flow.lockout_key,
            AuditEvent {
                kind: "login",
                outcome: "success",
                user_id: Some(user.id.clone()),
                identifier: Some(flow.identifier.clone()),
                client_ip,
                detail: Some(methods.join("+")),
            },
            now,
        )
        .await?;

    // A new id defeats session fixation: an id planted before sign-in is
    // worthless after it.
    session.cycle_id().await?;
    crate::web::csrf::rotate(session).await?;
    let idle = time::Duration::minutes(i64::from(state.config.session.idle_minutes));
    session.set_expiry(Some(Expiry::OnInactivity(idle)));
    LoginFlow::clear(session).await?;
    let signed_in = SignedIn {
        user_id: user.id.clone(),
        authenticated_at: now,
        methods: methods.iter().map(|method| (*method).to_owned()).collect(),
        session_id,
        sign_in_id: crate::provider::tokens::random_token(),
    };
    signed_in.save(session).await?;

    metrics::counter!("unified_login_sign_ins_total", "outcome" => "success").increment(1);
    tracing::info!(user.id = %user.id, methods = ?methods, "user signed in");
    Ok(Redirect::to(&flow.return_to).into_response())
}
