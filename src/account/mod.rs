//! Pages for a signed-in user: who is signed in, setting up two-step
//! verification, and signing out.

mod setup;
mod totp;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tower_sessions::Session;

use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::CurrentUser;
use crate::web::pages::{AccountPage, render};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/account", get(show))
        .route("/account/totp", get(totp::show).post(totp::confirm))
        .route("/account/setup", get(setup::show).post(setup::submit))
        .route("/logout", post(logout))
}

async fn home(session: Session) -> Result<Response, AppError> {
    let target = if SignedIn::load(&session).await?.is_some() {
        "/account"
    } else {
        "/login"
    };
    Ok(Redirect::to(target).into_response())
}

async fn show(
    State(state): State<AppState>,
    current: CurrentUser,
    csrf: Csrf,
) -> Result<Response, AppError> {
    let CurrentUser {
        user, signed_in, ..
    } = current;
    let recovery_codes_left = if user.has_second_factor() {
        state.users.remaining_recovery_codes(&user.id).await?
    } else {
        0
    };
    let method = signed_in.methods.join(" + ");
    let page = AccountPage {
        csrf_token: &csrf.token().await?,
        display_name: &user.display_name(),
        email: &user.email,
        login_id: &user.login_id,
        method: &method,
        totp_enrolled: user.has_second_factor(),
        recovery_codes_left,
        notice: None,
    };
    render(StatusCode::OK, &page)
}

/// Ends the broker session and revokes the tokens issued under it.
async fn logout(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    crate::provider::logout::end_browser_session(&state, &session).await?;
    Ok(Redirect::to("/login?signed_out=1").into_response())
}
