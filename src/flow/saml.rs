//! The CL Auth leg of the flow through a SAML 2.0 IdP: the redirect out, the
//! ACS that receives the IdP's POST, and the hand-back into this browser's
//! session.
//!
//! The POST to the ACS comes from the IdP's site, so a SameSite=Lax session
//! cookie does not arrive with it. The ACS therefore validates the response
//! on its own (the pending request is found through the RelayState key in the
//! database) and parks the verified identity under a one-time key. The
//! browser is then redirected with a GET, which does carry the session
//! cookie, and only a session that started this very request can take it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::cl_auth;
use super::state::{LoginFlow, Step};
use crate::connector::saml::request::new_request_id;
use crate::connector::saml::response::{ResponseError, decode_post_binding};
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, AppQuery, ClientIp};
use crate::web::pages::{ChoosePage, ErrorPage, render};
use crate::web::return_to::DEFAULT_RETURN_TO;

/// Seconds the browser has to follow the redirect from the ACS.
const HANDOFF_SECONDS: i64 = 120;
const UNSOLICITED_PREFIX: &str = "_unsolicited_";

fn random_key() -> String {
    BASE64URL_NOPAD.encode(&rand::random::<[u8; 16]>())
}

/// Sends the browser to the IdP with a new AuthnRequest for `flow`.
pub async fn redirect_to_idp(
    state: &AppState,
    session: &Session,
    mut flow: LoginFlow,
    force_authn: bool,
) -> Result<Response, AppError> {
    let Some(idp) = state.saml.active_idp().await? else {
        return Err(anyhow::anyhow!("no SAML IdP is configured").into());
    };
    let now = state.clock.now();
    let request_id = new_request_id();
    let relay_key = random_key();
    let expires_at = now + i64::from(state.config.session.login_minutes) * 60;
    state
        .saml_store
        .create_request(&request_id, &relay_key, now, expires_at)
        .await?;

    flow.step = Step::AwaitingIdp;
    flow.saml_request_id = Some(request_id.clone());
    flow.save(session).await?;

    let issue_instant = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let url = state.saml.authn_redirect(
        &idp,
        &request_id,
        &relay_key,
        &flow.identifier,
        force_authn,
        issue_instant,
    )?;
    tracing::info!(saml.request_id = %request_id, idp = %idp.settings.entity_id, force_authn, "sending browser to the SAML IdP");
    Ok(Redirect::to(url.as_str()).into_response())
}

pub async fn show_choice(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
) -> Result<Response, AppError> {
    let flow = match LoginFlow::load_at(&session, &state, Step::ChooseMethod).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    let idp_name = cl_auth::active_idp(&state)
        .await?
        .map(|idp| idp.name().to_owned())
        .unwrap_or_default();
    let page = ChoosePage {
        csrf_token: &csrf.token().await?,
        identifier: &flow.identifier,
        idp_name: &idp_name,
        restart_url: &flow.restart_url(),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ChoiceForm {
    method: String,
}

pub async fn submit_choice(
    State(state): State<AppState>,
    session: Session,
    AppForm(form): AppForm<ChoiceForm>,
) -> Result<Response, AppError> {
    let mut flow = match LoginFlow::load_at(&session, &state, Step::ChooseMethod).await? {
        Ok(flow) => flow,
        Err(redirect) => return Ok(redirect),
    };
    match form.method.as_str() {
        "idp" => cl_auth::redirect_to_idp(&state, &session, flow, false).await,
        "mitel" => {
            flow.step = Step::MitelPassword;
            flow.save(&session).await?;
            Ok(Redirect::to("/login/password").into_response())
        }
        _ => Ok(Redirect::to("/login/choose").into_response()),
    }
}

#[derive(Deserialize)]
pub struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// The verified identity that the ACS parks for the browser's session.
#[derive(Serialize, Deserialize)]
struct SamlResult {
    identity: String,
    assertion_id: String,
}

enum AcsError {
    Rejected(ResponseError),
    Request(&'static str),
    Internal(AppError),
}

impl<E: Into<AppError>> From<E> for AcsError {
    fn from(error: E) -> Self {
        Self::Internal(error.into())
    }
}

/// `POST /saml/acs`: the Assertion Consumer Service (HTTP-POST binding).
pub async fn acs(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    AppForm(form): AppForm<AcsForm>,
) -> Response {
    match accept_response(&state, &form).await {
        Ok(handoff) => Redirect::to(&format!("/saml/complete?handoff={handoff}")).into_response(),
        Err(AcsError::Internal(error)) => error.into_response(),
        Err(AcsError::Rejected(error)) => {
            reject(
                &state,
                client_ip,
                &error.to_string(),
                "The identity provider's answer could not be accepted",
            )
            .await
        }
        Err(AcsError::Request(reason)) => {
            reject(
                &state,
                client_ip,
                reason,
                "The sign-in could not be completed",
            )
            .await
        }
    }
}

async fn reject(
    state: &AppState,
    client_ip: Option<String>,
    reason: &str,
    shown: &str,
) -> Response {
    tracing::warn!(
        reason,
        client.ip = client_ip.as_deref().unwrap_or("-"),
        "SAML response rejected"
    );
    state
        .record(AuditEvent {
            kind: "login.saml",
            outcome: "failure",
            client_ip,
            detail: Some(reason.to_owned()),
            ..AuditEvent::default()
        })
        .await;
    let message = format!(
        "{shown}: {reason}. Start again from the sign-in page; if this keeps happening, tell your administrator."
    );
    let page = ErrorPage {
        title: "Sign-in failed",
        message: &message,
    };
    render(StatusCode::BAD_REQUEST, &page).unwrap_or_else(IntoResponse::into_response)
}

async fn accept_response(state: &AppState, form: &AcsForm) -> Result<String, AcsError> {
    let Some(idp) = state.saml.active_idp().await? else {
        return Err(AcsError::Request(
            "single sign-on is not configured on this server",
        ));
    };
    let xml = decode_post_binding(&form.saml_response).map_err(AcsError::Rejected)?;
    let now = state.clock.now();

    let pending = match form.relay_state.as_deref().filter(|key| !key.is_empty()) {
        Some(key) => {
            let Some(pending) = state.saml_store.find_request_by_relay(key).await? else {
                return Err(AcsError::Request("the sign-in request is unknown"));
            };
            if pending.consumed {
                return Err(AcsError::Request(
                    "this sign-in request was already answered",
                ));
            }
            if pending.expires_at <= now {
                return Err(AcsError::Request("the sign-in request has expired"));
            }
            Some(pending)
        }
        None => None,
    };

    let expected = pending.as_ref().map(|pending| pending.id.as_str());
    let chrono_now = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let verified = state
        .saml
        .validate(&idp, &xml, expected, chrono_now)
        .await
        .map_err(AcsError::Rejected)?;

    let keep_until =
        verified.not_on_or_after.timestamp() + i64::from(idp.settings.clock_skew_seconds);
    if !state
        .saml_store
        .record_assertion(&idp.settings.entity_id, &verified.assertion_id, keep_until)
        .await?
    {
        return Err(AcsError::Request(
            "this response was already used (replayed assertion)",
        ));
    }

    let request_id = match pending {
        Some(pending) => pending.id,
        None => {
            let id = format!("{UNSOLICITED_PREFIX}{}", random_key());
            state
                .saml_store
                .create_request(&id, &random_key(), now, now + HANDOFF_SECONDS)
                .await?;
            id
        }
    };
    let handoff = random_key();
    let result = serde_json::to_string(&SamlResult {
        identity: verified.identity.clone(),
        assertion_id: verified.assertion_id.clone(),
    })
    .map_err(anyhow::Error::from)?;
    if !state
        .saml_store
        .complete_request(&request_id, &handoff, now + HANDOFF_SECONDS, &result, now)
        .await?
    {
        return Err(AcsError::Request(
            "this sign-in request was already answered",
        ));
    }
    tracing::info!(saml.request_id = %request_id, saml.assertion_id = %verified.assertion_id, "SAML response accepted");
    Ok(handoff)
}

#[derive(Deserialize)]
pub struct CompleteQuery {
    handoff: String,
}

/// `GET /saml/complete`: binds the verified identity to this browser.
pub async fn complete(
    State(state): State<AppState>,
    session: Session,
    csrf: Csrf,
    ClientIp(client_ip): ClientIp,
    AppQuery(query): AppQuery<CompleteQuery>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let Some((request_id, result_json)) =
        state.saml_store.take_handoff(&query.handoff, now).await?
    else {
        return cl_auth::refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in link has expired or was already used. Start again from the sign-in page.",
        );
    };
    let result: SamlResult = serde_json::from_str(&result_json).map_err(anyhow::Error::from)?;

    let flow = session.get::<LoginFlow>(super::state::FLOW_KEY).await?;
    let unsolicited = request_id.starts_with(UNSOLICITED_PREFIX);
    let flow = match flow {
        Some(flow)
            if flow.step == Step::AwaitingIdp
                && flow.saml_request_id.as_deref() == Some(request_id.as_str()) =>
        {
            flow
        }
        _ if unsolicited => LoginFlow {
            identifier: result.identity.clone(),
            lockout_key: String::new(),
            user_id: None,
            step: Step::AwaitingIdp,
            return_to: DEFAULT_RETURN_TO.to_owned(),
            started_at: now,
            saml_request_id: Some(request_id.clone()),
            asserted_user_id: None,
            oidc: None,
        },
        _ => {
            tracing::warn!(saml.request_id = %request_id, "SAML response handed to a browser that did not start the request");
            state
                .record(AuditEvent {
                    kind: "login.saml",
                    outcome: "failure",
                    identifier: Some(result.identity.clone()),
                    client_ip,
                    detail: Some("response answers a request from another browser".into()),
                    ..AuditEvent::default()
                })
                .await;
            return cl_auth::refuse(
                StatusCode::FORBIDDEN,
                "This sign-in was started in another browser or tab. Start again from the sign-in page in this browser.",
            );
        }
    };

    cl_auth::after_idp(
        &state,
        &session,
        &csrf,
        flow,
        &result.identity,
        "login.saml",
        client_ip,
    )
    .await
}

/// `GET /saml/metadata`: SP metadata for the IdP administrator.
pub async fn metadata(State(state): State<AppState>) -> Result<Response, AppError> {
    let xml = state.saml.metadata_xml()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/samlmetadata+xml",
        )],
        xml,
    )
        .into_response())
}
