//! Step 3: the one-time code from an authenticator app, or a recovery code.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::attempts::{charge_attempt, charged_failure, record_locked, refund};
use super::finish::complete_sign_in;
use super::state::{LoginFlow, Step};
use crate::credentials::{recovery, totp};
use crate::directory::User;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, ClientIp};
use crate::web::pages::{OtpPage, render};

const WRONG_CODE: &str = "That code is incorrect or was already used. Enter the current code \
     from your authenticator app, or one of your recovery codes.";

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<Response, AppError> {
    let flow = match LoginFlow::load_at(&session, &state, Step::SecondFactor).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    page(&csrf, &flow, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    ClientIp(client_ip): ClientIp,
    AppForm(form): AppForm<CodeForm>,
) -> Result<Response, AppError> {
    let flow = match LoginFlow::load_at(&session, &state, Step::SecondFactor).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };

    let charge = match charge_attempt(&state, &flow).await? {
        Ok(charge) => charge,
        Err(message) => {
            record_locked(&state, &flow, "login.otp", client_ip).await;
            return page(&csrf, &flow, StatusCode::TOO_MANY_REQUESTS, Some(&message)).await;
        }
    };

    // The password step only moves to this one for a known, active user.
    let user_id = flow.user_id.as_deref().unwrap_or_default();
    let Some(user) = state
        .users
        .find_by_id(user_id)
        .await?
        .filter(|user| user.active)
    else {
        refund(&state, &flow, charge).await?;
        LoginFlow::clear(&session).await?;
        return Ok(Redirect::to("/login").into_response());
    };

    match check_code(&state, &user, &form.code).await? {
        Some(method) => {
            complete_sign_in(
                &state,
                &session,
                &flow,
                &user,
                &["password", method],
                client_ip,
            )
            .await
        }
        None => {
            let locked = charged_failure(
                &state,
                &flow,
                charge,
                "login.otp",
                "wrong or reused code",
                client_ip,
            )
            .await?;
            let message = locked.as_deref().unwrap_or(WRONG_CODE);
            page(&csrf, &flow, StatusCode::UNAUTHORIZED, Some(message)).await
        }
    }
}

/// Returns the method that accepted `code` (`totp` or `recovery_code`), after
/// marking the code as used, or `None` when it is wrong or already spent.
async fn check_code(
    state: &AppState,
    user: &User,
    code: &str,
) -> Result<Option<&'static str>, AppError> {
    let Some(secret) = &user.totp_secret else {
        return Ok(None);
    };
    let now = u64::try_from(state.clock.now()).unwrap_or(0);
    let step = totp::matching_step(secret, code, now).map_err(anyhow::Error::from)?;
    if let Some(step) = step {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let fresh = state.users.consume_totp_step(&user.id, step).await?;
        return Ok(fresh.then_some("totp"));
    }
    if let Some(canonical) = recovery::normalize(code) {
        let digest = recovery::digest(&canonical);
        let unused = state
            .users
            .consume_recovery_code(&user.id, &digest, state.clock.now())
            .await?;
        return Ok(unused.then_some("recovery_code"));
    }
    Ok(None)
}

async fn page(
    csrf: &Csrf,
    flow: &LoginFlow,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let page = OtpPage {
        csrf_token: &csrf.token().await?,
        restart_url: &flow.restart_url(),
        error,
    };
    render(status, &page)
}
