//! The step after a temporary password: the user chooses their own.
//!
//! A temporary password (set when CL Auth is turned off, or by an
//! administrator) works once. The password step spends it as soon as it is
//! verified, so it cannot be used again even if the user leaves this page
//! without choosing a new password. An administrator then sets a new one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

use super::finish::complete_sign_in;
use super::state::{LoginFlow, Step};
use crate::credentials::password::check_strength;
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, ClientIp};
use crate::web::pages::{NewPasswordPage, render};

pub const PATH: &str = "/login/new-password";

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<Response, AppError> {
    match LoginFlow::load_at(&session, &state, Step::ChangePassword).await? {
        Ok(_) => page(&csrf, StatusCode::OK, None).await,
        Err(redirect) => Ok(redirect),
    }
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    new_password: SecretString,
    new_password_confirmation: SecretString,
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    ClientIp(client_ip): ClientIp,
    AppForm(form): AppForm<NewPasswordForm>,
) -> Result<Response, AppError> {
    let mut flow = match LoginFlow::load_at(&session, &state, Step::ChangePassword).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    let Some(user) = flow.user_id.as_deref() else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Some(user) = state
        .users
        .find_by_id(user)
        .await?
        .filter(|user| user.active)
    else {
        LoginFlow::clear(&session).await?;
        return Ok(Redirect::to("/login").into_response());
    };

    let password = form.new_password.expose_secret();
    if password != form.new_password_confirmation.expose_secret() {
        return page(
            &csrf,
            StatusCode::BAD_REQUEST,
            Some("The two passwords differ. Enter the same new password twice."),
        )
        .await;
    }
    let inputs = [
        user.login_id.as_str(),
        user.email.as_str(),
        user.first_name.as_str(),
        user.last_name.as_str(),
    ];
    if let Err(error) = check_strength(password, &inputs) {
        let message = format!("The new password cannot be used: {error}.");
        return page(&csrf, StatusCode::BAD_REQUEST, Some(&message)).await;
    }

    let hash = state.passwords.hash(form.new_password).await?;
    state
        .users
        .set_password(&user.id, &hash, false, state.clock.now())
        .await?;
    tracing::info!(user.id = %user.id, "user replaced a temporary password");
    state
        .record(AuditEvent {
            kind: "password.changed",
            outcome: "success",
            user_id: Some(user.id.clone()),
            identifier: Some(flow.identifier.clone()),
            client_ip: client_ip.clone(),
            detail: Some("replaced a temporary password at sign-in".into()),
        })
        .await;

    if user.has_second_factor() {
        flow.step = Step::SecondFactor;
        flow.save(&session).await?;
        return Ok(Redirect::to("/login/otp").into_response());
    }
    complete_sign_in(&state, &session, &flow, &user, &["password"], client_ip).await
}

async fn page(csrf: &Csrf, status: StatusCode, error: Option<&str>) -> Result<Response, AppError> {
    let page = NewPasswordPage {
        csrf_token: &csrf.token().await?,
        heading: "Choose a new password",
        explanation: "You signed in with a temporary password, which no longer works. Choose your own password to continue.",
        action: PATH,
        token: None,
        error,
    };
    render(status, &page)
}
