//! Enrolment of a TOTP authenticator by the signed-in user.
//!
//! The new secret stays in the session until the user proves, with a code,
//! that their app has it; only then is it stored and recovery codes issued.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use data_encoding::BASE64;
use serde::Deserialize;

use crate::credentials::{recovery, totp};
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, CurrentUser};
use crate::web::pages::{RecoveryCodesPage, TotpEnrollPage, render};

const PENDING_SECRET_KEY: &str = "account.pending_totp_secret";

pub async fn show(current: CurrentUser, csrf: Csrf) -> Result<Response, AppError> {
    if current.user.has_second_factor() {
        return Ok(Redirect::to("/account").into_response());
    }
    let secret = match current.session.get::<String>(PENDING_SECRET_KEY).await? {
        Some(secret) => secret,
        None => {
            let secret = totp::generate_secret();
            current.session.insert(PENDING_SECRET_KEY, &secret).await?;
            secret
        }
    };
    enrol_page(&current, &csrf, &secret, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    code: String,
}

pub async fn confirm(
    State(state): State<AppState>,
    current: CurrentUser,
    csrf: Csrf,
    AppForm(form): AppForm<ConfirmForm>,
) -> Result<Response, AppError> {
    if current.user.has_second_factor() {
        return Ok(Redirect::to("/account").into_response());
    }
    let Some(secret) = current.session.get::<String>(PENDING_SECRET_KEY).await? else {
        return Ok(Redirect::to("/account/totp").into_response());
    };

    let now = state.clock.now();
    let step = totp::matching_step(&secret, &form.code, u64::try_from(now).unwrap_or(0))
        .map_err(anyhow::Error::from)?;
    let Some(step) = step else {
        let message = "That code does not match. Check that the app shows the account you just added, and enter its current code.";
        return enrol_page(
            &current,
            &csrf,
            &secret,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(message),
        )
        .await;
    };

    let codes = recovery::generate_codes();
    let digests: Vec<String> = codes
        .iter()
        .filter_map(|code| recovery::normalize(code))
        .map(|canonical| recovery::digest(&canonical))
        .collect();
    state
        .users
        .set_totp(&current.user.id, Some(&secret), &digests, now)
        .await?;
    // The enrolment code counts as used, so it cannot also sign someone in.
    state
        .users
        .consume_totp_step(&current.user.id, i64::try_from(step).unwrap_or(i64::MAX))
        .await?;
    current.session.remove::<String>(PENDING_SECRET_KEY).await?;

    tracing::info!(user.id = %current.user.id, "TOTP enrolled");
    state
        .record(AuditEvent {
            kind: "totp.enroll",
            outcome: "success",
            user_id: Some(current.user.id.clone()),
            ..AuditEvent::default()
        })
        .await;
    render(StatusCode::OK, &RecoveryCodesPage { codes: &codes })
}

async fn enrol_page(
    current: &CurrentUser,
    csrf: &Csrf,
    secret: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let uri = totp::otpauth_uri(secret, &current.user.email).map_err(anyhow::Error::from)?;
    let qr_data_url = format!(
        "data:image/svg+xml;base64,{}",
        BASE64.encode(totp::qr_svg(&uri).as_bytes())
    );
    let page = TotpEnrollPage {
        csrf_token: &csrf.token().await?,
        qr_data_url: &qr_data_url,
        secret,
        otpauth_uri: &uri,
        error,
    };
    render(status, &page)
}
