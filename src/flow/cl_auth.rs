//! Steps of the CL Auth branch that do not depend on the IdP's protocol.
//!
//! They choose the step after the identifier, send the browser to the IdP,
//! map the asserted identity to a directory user, handle the "different
//! account" decision, and end the sign-in.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::finish::complete_sign_in;
use super::state::{LoginFlow, Step};
use super::{oidc, saml};
use crate::connector::oidc::OidcConnector;
use crate::connector::saml::ActiveIdp;
use crate::directory::{AuditEvent, User, identifier_key};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, ClientIp};
use crate::web::pages::{ErrorPage, MismatchPage, render};

/// The identity provider in force for CL Auth.
pub enum ClIdp {
    Saml(Arc<ActiveIdp>),
    Oidc(Arc<OidcConnector>),
}

impl ClIdp {
    pub fn name(&self) -> &str {
        match self {
            Self::Saml(idp) => &idp.settings.name,
            Self::Oidc(idp) => &idp.settings.name,
        }
    }

    pub fn mitel_credentials(&self) -> bool {
        match self {
            Self::Saml(idp) => idp.settings.mitel_credentials,
            Self::Oidc(idp) => idp.settings.mitel_credentials,
        }
    }
}

/// Returns the configured IdP: the OpenID Connect one when the config file
/// has an `[oidc]` table, else the SAML one, else none.
pub async fn active_idp(state: &AppState) -> Result<Option<ClIdp>, AppError> {
    if let Some(oidc) = &state.oidc {
        return Ok(Some(ClIdp::Oidc(oidc.clone())));
    }
    Ok(state.saml.active_idp().await?.map(ClIdp::Saml))
}

/// Returns the step a CL Auth user goes to after identifying.
pub fn next_step(idp: Option<&ClIdp>) -> Step {
    match idp {
        None => Step::MitelPassword,
        Some(idp) if idp.mitel_credentials() => Step::ChooseMethod,
        Some(_) => Step::AwaitingIdp,
    }
}

/// Sends the browser to the configured IdP for `flow`.
pub async fn redirect_to_idp(
    state: &AppState,
    session: &Session,
    flow: LoginFlow,
    force_authn: bool,
) -> Result<Response, AppError> {
    match active_idp(state).await? {
        Some(ClIdp::Oidc(connector)) => {
            oidc::redirect_to_idp(session, &connector, flow, force_authn).await
        }
        Some(ClIdp::Saml(_)) => saml::redirect_to_idp(state, session, flow, force_authn).await,
        None => Err(anyhow::anyhow!("no identity provider is configured").into()),
    }
}

/// Continues a flow after the IdP vouched for `identity`: maps it to a
/// user, shows the mismatch page when it is not the user typed, and signs
/// in otherwise.
pub async fn after_idp(
    state: &AppState,
    session: &Session,
    csrf: &Csrf,
    mut flow: LoginFlow,
    identity: &str,
    audit_kind: &'static str,
    client_ip: Option<String>,
) -> Result<Response, AppError> {
    let user = match mapped_user(state, identity).await? {
        Ok(user) => user,
        Err(message) => {
            state
                .record(AuditEvent {
                    kind: audit_kind,
                    outcome: "failure",
                    identifier: Some(identity.to_owned()),
                    client_ip,
                    detail: Some(message.clone()),
                    ..AuditEvent::default()
                })
                .await;
            LoginFlow::clear(session).await?;
            return refuse(StatusCode::FORBIDDEN, &message);
        }
    };

    if flow.user_id.as_ref().is_some_and(|typed| *typed != user.id) {
        flow.step = Step::IdentityMismatch;
        flow.asserted_user_id = Some(user.id.clone());
        flow.save(session).await?;
        return mismatch_page(state, csrf, &flow, &user).await;
    }
    flow.lockout_key = format!("user:{}", user.id);
    finish_cl_sign_in(state, session, &flow, user, client_ip).await
}

/// Finds the directory user for the IdP's identity, or returns the message
/// that explains why the user cannot sign in.
async fn mapped_user(state: &AppState, identity: &str) -> Result<Result<User, String>, AppError> {
    let unknown = || {
        format!(
            "No account here matches {identity}, the user your identity provider signed in. Ask your administrator to add it."
        )
    };
    let Ok(key) = identifier_key(identity) else {
        return Ok(Err(unknown()));
    };
    let Some(user) = state.users.find_by_email_key(&key).await? else {
        return Ok(Err(unknown()));
    };
    if !user.active {
        return Ok(Err(format!(
            "The account {identity} is disabled. Ask your administrator to enable it."
        )));
    }
    if !user.cl_auth_enabled {
        return Ok(Err(format!(
            "Single sign-on is not enabled for {identity}. Sign in with your password, or ask your administrator to enable CL Auth."
        )));
    }
    Ok(Ok(user))
}

async fn finish_cl_sign_in(
    state: &AppState,
    session: &Session,
    flow: &LoginFlow,
    user: User,
    client_ip: Option<String>,
) -> Result<Response, AppError> {
    // The first single sign-on makes the email the login ID; the audit
    // record keeps the old one.
    let email_key = identifier_key(&user.email).map_err(anyhow::Error::from)?;
    let login_key = identifier_key(&user.login_id).map_err(anyhow::Error::from)?;
    if email_key != login_key {
        state
            .users
            .set_login_id(&user.id, &user.email, state.clock.now())
            .await?;
        tracing::info!(user.id = %user.id, "login ID changed to the email address at first single sign-on");
        state
            .record(AuditEvent {
                kind: "user.login_id_changed",
                outcome: "success",
                user_id: Some(user.id.clone()),
                identifier: Some(user.email.clone()),
                detail: Some(format!("previous login ID: {}", user.login_id)),
                ..AuditEvent::default()
            })
            .await;
    }
    let method = match active_idp(state).await? {
        Some(ClIdp::Oidc(_)) => "oidc",
        _ => "saml",
    };
    complete_sign_in(state, session, flow, &user, &[method], client_ip).await
}

async fn mismatch_page(
    state: &AppState,
    csrf: &Csrf,
    flow: &LoginFlow,
    asserted: &User,
) -> Result<Response, AppError> {
    let idp_name = active_idp(state)
        .await?
        .map(|idp| idp.name().to_owned())
        .unwrap_or_default();
    let page = MismatchPage {
        csrf_token: &csrf.token().await?,
        typed: &flow.identifier,
        asserted: &asserted.email,
        idp_name: &idp_name,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct MismatchForm {
    action: String,
}

/// `POST /login/mismatch`: continue as the asserted user, or start over at
/// the IdP with forced re-authentication.
pub async fn resolve_mismatch(
    State(state): State<AppState>,
    session: Session,
    ClientIp(client_ip): ClientIp,
    AppForm(form): AppForm<MismatchForm>,
) -> Result<Response, AppError> {
    let mut flow = match LoginFlow::load_at(&session, &state, Step::IdentityMismatch).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    if form.action == "restart" {
        flow.asserted_user_id = None;
        return redirect_to_idp(&state, &session, flow, true).await;
    }
    let asserted_id = flow.asserted_user_id.clone().unwrap_or_default();
    let Some(user) = state.users.find_by_id(&asserted_id).await? else {
        LoginFlow::clear(&session).await?;
        return Ok(Redirect::to("/login").into_response());
    };
    flow.lockout_key = format!("user:{}", user.id);
    finish_cl_sign_in(&state, &session, &flow, user, client_ip).await
}

pub fn refuse(status: StatusCode, message: &str) -> Result<Response, AppError> {
    render(
        status,
        &ErrorPage {
            title: "Sign-in failed",
            message,
        },
    )
}
