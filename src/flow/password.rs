//! Step 2: the password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use super::attempts::{charge_attempt, charged_failure, record_locked, refund};
use super::finish::complete_sign_in;
use super::state::{LoginFlow, Step};
use crate::connector::CheckUnavailable;
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, ClientIp};
use crate::web::pages::{PasswordPage, render};

/// The one message for an unknown identifier and a wrong password alike.
const WRONG_CREDENTIALS: &str =
    "The email address, login ID or password is incorrect. Check them and try again.";
const SINGLE_SIGN_ON_ONLY: &str =
    "This account signs in through single sign-on. Start again from the sign-in page.";
const ACCOUNT_DISABLED: &str = "This account is disabled. Ask your administrator to enable it.";
/// Shown when the LDAP directory that checks passwords does not respond.
const DIRECTORY_UNAVAILABLE: &str =
    "The sign-in service cannot reach the company directory right now. Try again in a few minutes.";

/// Steps that show the password form: the local password, and the Mitel
/// credentials of CL Auth users.
const PASSWORD_STEPS: &[Step] = &[Step::Password, Step::MitelPassword];

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<Response, AppError> {
    let flow = match LoginFlow::load_at_any(&session, &state, PASSWORD_STEPS).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    page(&csrf, &flow, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    password: SecretString,
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    ClientIp(client_ip): ClientIp,
    AppForm(form): AppForm<PasswordForm>,
) -> Result<Response, AppError> {
    let mut flow = match LoginFlow::load_at_any(&session, &state, PASSWORD_STEPS).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };

    let charge = match charge_attempt(&state, &flow).await? {
        Ok(charge) => charge,
        Err(message) => {
            record_locked(&state, &flow, "login.password", client_ip).await;
            return page(&csrf, &flow, StatusCode::TOO_MANY_REQUESTS, Some(&message)).await;
        }
    };

    let user = match &flow.user_id {
        Some(id) => state.users.find_by_id(id).await?,
        None => None,
    };
    let mitel = flow.step == Step::MitelPassword;
    let authenticator = if mitel {
        &state.mitel_password
    } else {
        &state.local_password
    };
    let verified = match authenticator
        .authenticate(user.as_ref(), form.password)
        .await
    {
        Ok(verified) => verified,
        Err(CheckUnavailable) => {
            // Not counted towards the lockout: the password was never checked.
            refund(&state, &flow, charge).await?;
            state
                .record(AuditEvent {
                    kind: "login.password",
                    outcome: "error",
                    user_id: flow.user_id.clone(),
                    identifier: Some(flow.identifier.clone()),
                    client_ip,
                    detail: Some(format!("{} unavailable", authenticator.id())),
                })
                .await;
            return page(
                &csrf,
                &flow,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(DIRECTORY_UNAVAILABLE),
            )
            .await;
        }
    };
    let user = match user {
        Some(user) if verified => user,
        other => {
            let reason = if other.is_some() {
                "wrong password"
            } else {
                "unknown identifier"
            };
            let locked =
                charged_failure(&state, &flow, charge, "login.password", reason, client_ip).await?;
            let message = locked.as_deref().unwrap_or(WRONG_CREDENTIALS);
            return page(&csrf, &flow, StatusCode::UNAUTHORIZED, Some(message)).await;
        }
    };

    if !mitel && user.cl_auth_enabled {
        // CL Auth users prove who they are at their IdP or with Mitel
        // credentials; the local password is not a way around that.
        charged_failure(
            &state,
            &flow,
            charge,
            "login.password",
            "local password for a CL Auth user",
            client_ip,
        )
        .await?;
        return page(
            &csrf,
            &flow,
            StatusCode::FORBIDDEN,
            Some(SINGLE_SIGN_ON_ONLY),
        )
        .await;
    }
    if !user.active {
        charged_failure(
            &state,
            &flow,
            charge,
            "login.password",
            "account disabled",
            client_ip,
        )
        .await?;
        return page(&csrf, &flow, StatusCode::FORBIDDEN, Some(ACCOUNT_DISABLED)).await;
    }
    if mitel {
        // Mitel credentials belong to the CL Auth branch, where any second
        // factor is the identity provider's business.
        return complete_sign_in(
            &state,
            &session,
            &flow,
            &user,
            &["mitel_credentials"],
            client_ip,
        )
        .await;
    }
    if user.must_change_password {
        // The temporary password is spent now, so it works exactly once.
        let spent = state
            .users
            .spend_temporary_password(&user.id, state.clock.now())
            .await?;
        if !spent {
            // Another sign-in spent it a moment ago.
            let locked = charged_failure(
                &state,
                &flow,
                charge,
                "login.password",
                "temporary password already used",
                client_ip,
            )
            .await?;
            let message = locked.as_deref().unwrap_or(WRONG_CREDENTIALS);
            return page(&csrf, &flow, StatusCode::UNAUTHORIZED, Some(message)).await;
        }
        refund(&state, &flow, charge).await?;
        flow.step = Step::ChangePassword;
        flow.save(&session).await?;
        return Ok(Redirect::to(super::new_password::PATH).into_response());
    }
    if user.has_second_factor() {
        // The code step counts its own attempts against the same lockout.
        refund(&state, &flow, charge).await?;
        flow.step = Step::SecondFactor;
        flow.save(&session).await?;
        return Ok(Redirect::to("/login/otp").into_response());
    }
    complete_sign_in(&state, &session, &flow, &user, &["password"], client_ip).await
}

async fn page(
    csrf: &Csrf,
    flow: &LoginFlow,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let heading = match flow.step {
        Step::MitelPassword => "Enter your Mitel credentials password",
        _ => "Enter your password",
    };
    let page = PasswordPage {
        csrf_token: &csrf.token().await?,
        heading,
        identifier: &flow.identifier,
        restart_url: &flow.restart_url(),
        error,
    };
    render(status, &page)
}
