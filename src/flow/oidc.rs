//! The CL Auth leg of the flow through an OpenID Connect IdP: the redirect
//! to the authorization endpoint and the callback. The callback is a
//! top-level GET, so the browser's SameSite=Lax session cookie comes with it
//! and the pending state, nonce and PKCE verifier are read from the session.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::cl_auth;
use super::state::{FLOW_KEY, LoginFlow, Step};
use crate::connector::oidc::{OidcConnector, OidcError};
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppQuery, ClientIp};

pub async fn redirect_to_idp(
    session: &Session,
    connector: &OidcConnector,
    mut flow: LoginFlow,
    force_login: bool,
) -> Result<Response, AppError> {
    let (url, pending) = match connector
        .authorization_url(&flow.identifier, force_login)
        .await
    {
        Ok(result) => result,
        Err(error) => {
            tracing::warn!(%error, "cannot start OpenID Connect sign-in");
            let message = format!(
                "{} cannot be reached right now, so single sign-on is unavailable. Try again in a few minutes.",
                connector.settings.name
            );
            return cl_auth::refuse(StatusCode::BAD_GATEWAY, &message);
        }
    };
    flow.step = Step::AwaitingIdp;
    flow.oidc = Some(pending);
    flow.save(session).await?;
    tracing::info!(issuer = %connector.settings.issuer, force_login, "sending browser to the OpenID Connect IdP");
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oidc/callback`: the redirect URI registered at the IdP.
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    ClientIp(client_ip): ClientIp,
    AppQuery(query): AppQuery<CallbackQuery>,
) -> Result<Response, AppError> {
    let Some(connector) = state.oidc.clone() else {
        return Err(AppError::NotFound);
    };
    let flow = session.get::<LoginFlow>(FLOW_KEY).await?;
    let Some(mut flow) = flow.filter(|flow| flow.step == Step::AwaitingIdp && flow.oidc.is_some())
    else {
        return fail(&state, client_ip, "no sign-in is waiting for the identity provider in this browser",
            "No sign-in is in progress in this browser, or it has expired. Start again from the sign-in page.").await;
    };
    let Some(pending) = flow.oidc.take() else {
        return Ok(Redirect::to("/login").into_response());
    };
    // The flow leaves the session before anything is checked: the state is
    // single-use, and a failed callback must not leave this browser at any
    // step it could continue from. `after_idp` saves the flow again only for
    // the different-account question.
    LoginFlow::clear(&session).await?;

    let returned_state = query.state.unwrap_or_default();
    if !bool::from(returned_state.as_bytes().ct_eq(pending.state.as_bytes())) {
        return fail(&state, client_ip, "state parameter does not match",
            "The sign-in response does not belong to this browser's sign-in. Start again from the sign-in page.").await;
    }
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        let shown = match error.as_str() {
            "access_denied" => format!(
                "{} did not let you sign in (access denied). Start again, or ask your administrator for access.",
                connector.settings.name
            ),
            "login_required" | "interaction_required" => format!(
                "{} needs you to sign in again. Start again from the sign-in page.",
                connector.settings.name
            ),
            _ => format!(
                "{} reported an error ({error}). Start again; if it keeps happening, tell your administrator.",
                connector.settings.name
            ),
        };
        return fail(
            &state,
            client_ip,
            &format!("IdP returned error {error}: {description}"),
            &shown,
        )
        .await;
    }
    let Some(code) = query.code else {
        return fail(
            &state,
            client_ip,
            "callback without code",
            "The identity provider sent no result. Start again from the sign-in page.",
        )
        .await;
    };

    match connector.exchange(&code, &pending).await {
        Ok(identity) => {
            cl_auth::after_idp(
                &state,
                &session,
                &csrf,
                flow,
                &identity,
                "login.oidc",
                client_ip,
            )
            .await
        }
        Err(error @ OidcError::Unreachable(_)) => {
            let shown = format!(
                "{} cannot be reached right now. Try again in a few minutes.",
                connector.settings.name
            );
            fail(&state, client_ip, &error.to_string(), &shown).await
        }
        Err(error) => {
            let shown = format!(
                "The answer from {} could not be accepted: {error}. Start again from the sign-in page.",
                connector.settings.name
            );
            fail(&state, client_ip, &error.to_string(), &shown).await
        }
    }
}

async fn fail(
    state: &AppState,
    client_ip: Option<String>,
    reason: &str,
    shown: &str,
) -> Result<Response, AppError> {
    tracing::warn!(
        reason,
        client.ip = client_ip.as_deref().unwrap_or("-"),
        "OpenID Connect sign-in failed"
    );
    state
        .record(AuditEvent {
            kind: "login.oidc",
            outcome: "failure",
            client_ip,
            detail: Some(reason.to_owned()),
            ..AuditEvent::default()
        })
        .await;
    cl_auth::refuse(StatusCode::BAD_REQUEST, shown)
}
