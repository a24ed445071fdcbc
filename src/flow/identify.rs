//! Step 1: the identifier (email address or login ID).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::cl_auth;
use super::state::{LoginFlow, Step};
use crate::directory::{IdentifierError, MAX_IDENTIFIER_CHARS, identifier_key};
use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, AppQuery};
use crate::web::pages::{IdentifyPage, render};
use crate::web::return_to::safe_return_to;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
    signed_out: Option<String>,
    expired: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    AppQuery(query): AppQuery<LoginQuery>,
) -> Result<Response, AppError> {
    let return_to = safe_return_to(query.return_to.as_deref(), &state.public_url);
    if query.login_hint.is_none() && SignedIn::load(&session).await?.is_some() {
        return Ok(Redirect::to(&return_to).into_response());
    }

    // Loads the IdP settings, so the page's CSP allows posting on to the IdP.
    state.saml.active_idp().await?;

    let hint: String = query
        .login_hint
        .as_deref()
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_IDENTIFIER_CHARS)
        .collect();
    let notice = if query.signed_out.is_some() {
        Some("You have signed out.")
    } else if query.expired.is_some() {
        Some("Your sign-in took too long and was cancelled. Start again.")
    } else {
        None
    };
    let page = IdentifyPage {
        csrf_token: &csrf.token().await?,
        identifier: &hint,
        return_to: &return_to,
        notice,
        error: None,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct IdentifyForm {
    identifier: String,
    return_to: Option<String>,
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    AppForm(form): AppForm<IdentifyForm>,
) -> Result<Response, AppError> {
    let return_to = safe_return_to(form.return_to.as_deref(), &state.public_url);
    let key = match identifier_key(&form.identifier) {
        Ok(key) => key,
        Err(error) => {
            let message = match error {
                IdentifierError::Empty => "Enter your email address or login ID.".to_owned(),
                other => format!("Check what you typed: {other}."),
            };
            let page = IdentifyPage {
                csrf_token: &csrf.token().await?,
                identifier: form.identifier.trim(),
                return_to: &return_to,
                notice: None,
                error: Some(&message),
            };
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };

    let user = state.users.find_by_key(&key).await?;
    let lockout_key = match &user {
        Some(user) => format!("user:{}", user.id),
        None => format!("identifier:{key}"),
    };
    let step = match &user {
        Some(user) if user.cl_auth_enabled => {
            cl_auth::next_step(cl_auth::active_idp(&state).await?.as_ref())
        }
        _ => Step::Password,
    };
    let flow = LoginFlow {
        identifier: form.identifier.trim().to_owned(),
        lockout_key,
        user_id: user.map(|user| user.id),
        step,
        return_to,
        started_at: state.clock.now(),
        saml_request_id: None,
        asserted_user_id: None,
        oidc: None,
    };
    match step {
        Step::AwaitingIdp => cl_auth::redirect_to_idp(&state, &session, flow, false).await,
        Step::ChooseMethod => {
            flow.save(&session).await?;
            Ok(Redirect::to("/login/choose").into_response())
        }
        _ => {
            flow.save(&session).await?;
            Ok(Redirect::to("/login/password").into_response())
        }
    }
}
