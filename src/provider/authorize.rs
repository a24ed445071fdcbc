//! The authorization endpoint (RFC 6749, section 4.1.1; OpenID Connect Core
//! 1.0, section 3.1.2).
//!
//! The order of checks is what keeps it from being an open redirect: an
//! unknown `client_id` or a `redirect_uri` that is not registered is shown to
//! the user as a page and never redirected to. Only after both are known good
//! do further errors go back to the client's redirect URI.
//!
//! Without a broker session the request is parked in the browser's session
//! and the user is sent to the sign-in page, which returns to
//! `/oauth2/authorize/continue` once the user has signed in.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use url::Url;

use super::Provider;
use super::clients::{Client, ClientKind};
use super::params::parse_params;
use super::store::{Grant, NewCode};
use super::tokens::{random_token, token_digest};
use crate::directory::{User, identifier_key};
use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;
use crate::web::extract::AppQuery;
use crate::web::pages::{ErrorPage, render};

const PENDING_KEY: &str = "oauth2.pending";
/// Authorization requests a browser may have waiting at once, for example
/// two applications opened together; the oldest is dropped beyond this.
const MAX_PENDING: usize = 8;
const MAX_STATE_CHARS: usize = 2048;
const MAX_NONCE_CHARS: usize = 512;

/// A request that passed every check, kept until the user has signed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Granted scopes, space-separated, each once.
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub login_hint: Option<String>,
    pub max_age: Option<i64>,
    pub prompt: Prompt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Prompt {
    #[default]
    Default,
    /// `prompt=none`: respond without showing any page.
    None,
    /// `prompt=login`: the user signs in again even with a broker session.
    Login,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRequest {
    id: String,
    requested_at: i64,
    /// With `prompt=login` or an exceeded `max_age`, the id of the sign-in
    /// that was already there: only another sign-in satisfies the request.
    stale_sign_in_id: Option<String>,
    request: AuthorizationRequest,
}

/// A rejected request: either shown to the user, or sent back to the client.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted, so there is nowhere safe to redirect.
    Page {
        title: &'static str,
        message: String,
    },
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

pub async fn start(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let request = match parse_request(&state.provider, query.as_deref().unwrap_or_default()) {
        Ok(request) => request,
        Err(error) => return error_response(&state.provider, error),
    };
    let signed_in = current_user(&state, &session).await?;
    let requires_login = match &signed_in {
        None => true,
        Some((signed_in, user)) => {
            request.prompt == Prompt::Login
                || needs_new_sign_in(&request, signed_in, now)
                || !hint_matches(request.login_hint.as_deref(), user)
        }
    };
    if !requires_login {
        let (signed_in, _) = signed_in.expect("a session exists when no login is required");
        return issue_code(&state, &request, &signed_in, now).await;
    }
    if request.prompt == Prompt::None {
        return error_response(
            &state.provider,
            redirect_error(
                &request,
                "login_required",
                "the user is not signed in, or must sign in again for this request",
            ),
        );
    }

    let login_hint = request
        .login_hint
        .clone()
        .or_else(|| signed_in.as_ref().map(|(_, user)| user.email.clone()));
    let stale_sign_in_id = signed_in
        .as_ref()
        .filter(|(signed_in, _)| needs_new_sign_in(&request, signed_in, now))
        .map(|(signed_in, _)| signed_in.sign_in_id.clone());
    let id = park(&session, request, stale_sign_in_id, now).await?;
    Ok(Redirect::to(&login_url(&id, login_hint.as_deref())).into_response())
}

#[derive(Deserialize)]
pub struct ResumeQuery {
    request: String,
}

/// Issues the code for a parked request once the browser's session satisfies
/// it. The sign-in page returns here.
pub async fn resume(
    State(state): State<AppState>,
    session: Session,
    AppQuery(query): AppQuery<ResumeQuery>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let mut pending: Vec<PendingRequest> = session.get(PENDING_KEY).await?.unwrap_or_default();
    let stored = pending.len();
    let login_seconds = i64::from(state.config.session.login_minutes) * 60;
    pending.retain(|entry| now - entry.requested_at <= login_seconds);
    let Some(position) = pending.iter().position(|entry| entry.id == query.request) else {
        // Only a change is written: an unknown id from a browser without a
        // session must not create a session row.
        if pending.len() != stored {
            store_pending(&session, &pending).await?;
        }
        return render(
            StatusCode::BAD_REQUEST,
            &ErrorPage {
                title: "Sign-in request expired",
                message: "This sign-in request has expired or was already used. Go back to the application and sign in again.",
            },
        );
    };

    let entry = &pending[position];
    let signed_in = current_user(&state, &session).await?;
    let satisfied = signed_in.as_ref().is_some_and(|(signed_in, user)| {
        let fresh_login = entry
            .stale_sign_in_id
            .as_ref()
            .is_none_or(|stale| *stale != signed_in.sign_in_id);
        fresh_login
            && (entry.request.max_age == Some(0) || within_max_age(&entry.request, signed_in, now))
            && hint_matches(entry.request.login_hint.as_deref(), user)
    });
    let Some((signed_in, user)) = signed_in.filter(|_| satisfied) else {
        // Someone opened this address without signing in first.
        let hint = entry.request.login_hint.clone();
        let url = login_url(&entry.id, hint.as_deref());
        store_pending(&session, &pending).await?;
        return Ok(Redirect::to(&url).into_response());
    };

    let entry = pending.remove(position);
    store_pending(&session, &pending).await?;
    tracing::debug!(user.id = %user.id, client_id = %entry.request.client_id, "resuming an authorization request after sign-in");
    issue_code(&state, &entry.request, &signed_in, now).await
}

/// Checks an authorization request in the order that keeps errors from
/// redirecting anywhere unregistered.
pub fn parse_request(
    provider: &Provider,
    query: &str,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let params = parse_params(query.as_bytes()).map_err(|name| AuthorizeError::Page {
        title: "Invalid sign-in request",
        message: format!("The application sent the parameter '{name}' more than once. Tell the application's administrator."),
    })?;
    let client = client_of(provider, &params)?;
    let redirect_uri = redirect_uri_of(client, &params)?;
    let state = params.get("state").cloned();
    let fail = |error: &'static str, description: String| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_string(),
        state: state
            .clone()
            .filter(|state| state.chars().count() <= MAX_STATE_CHARS),
        error,
        description,
    };

    if state
        .as_ref()
        .is_some_and(|state| state.chars().count() > MAX_STATE_CHARS)
    {
        return Err(fail(
            "invalid_request",
            format!("state is longer than {MAX_STATE_CHARS} characters"),
        ));
    }
    if params.contains_key("request") || params.contains_key("request_uri") {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported; send the parameters in the query".into(),
        ));
    }
    match params.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(other) => {
            return Err(fail(
                "unsupported_response_type",
                format!("response_type '{other}' is not supported; use 'code'"),
            ));
        }
        None => {
            return Err(fail(
                "invalid_request",
                "response_type is missing; use 'code'".into(),
            ));
        }
    }
    if let Some(mode) = params
        .get("response_mode")
        .filter(|mode| mode.as_str() != "query")
    {
        return Err(fail(
            "invalid_request",
            format!("response_mode '{mode}' is not supported; use 'query'"),
        ));
    }

    let scope =
        scope_of(client, &params).map_err(|description| fail("invalid_scope", description))?;
    let code_challenge = code_challenge_of(client, &params)
        .map_err(|description| fail("invalid_request", description))?;
    let prompt = prompt_of(&params).map_err(|description| fail("invalid_request", description))?;
    let max_age = match params.get("max_age") {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(seconds) if seconds >= 0 => Some(seconds),
            _ => {
                return Err(fail(
                    "invalid_request",
                    format!("max_age '{raw}' is not a number of seconds"),
                ));
            }
        },
    };
    let nonce = params.get("nonce").cloned();
    if nonce
        .as_ref()
        .is_some_and(|nonce| nonce.chars().count() > MAX_NONCE_CHARS)
    {
        return Err(fail(
            "invalid_request",
            format!("nonce is longer than {MAX_NONCE_CHARS} characters"),
        ));
    }
    let login_hint = params
        .get("login_hint")
        .map(|hint| hint.trim().to_owned())
        .filter(|hint| !hint.is_empty());

    Ok(AuthorizationRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_string(),
        scope,
        state,
        nonce,
        code_challenge,
        login_hint,
        max_age,
        prompt,
    })
}

fn client_of<'a>(
    provider: &'a Provider,
    params: &HashMap<String, String>,
) -> Result<&'a Client, AuthorizeError> {
    let Some(client_id) = params.get("client_id") else {
        return Err(AuthorizeError::Page {
            title: "Invalid sign-in request",
            message: "The application did not say which client it is (client_id is missing). Tell the application's administrator.".into(),
        });
    };
    provider.clients.get(client_id).ok_or_else(|| AuthorizeError::Page {
        title: "Unknown application",
        message: format!("No application is registered with the client ID '{}'. Tell the application's administrator.", truncate(client_id)),
    })
}

fn redirect_uri_of(
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Url, AuthorizeError> {
    let Some(requested) = params.get("redirect_uri") else {
        return Err(AuthorizeError::Page {
            title: "Invalid sign-in request",
            message: format!(
                "The application '{}' sent no redirect_uri. Tell the application's administrator.",
                client.name
            ),
        });
    };
    client.redirect_uri(requested).ok_or_else(|| AuthorizeError::Page {
        title: "Invalid sign-in request",
        message: format!(
            "The address '{}' is not registered for the application '{}', so the sign-in cannot continue. Tell the administrator of the sign-in service to register it.",
            truncate(requested),
            client.name
        ),
    })
}

fn scope_of(client: &Client, params: &HashMap<String, String>) -> Result<String, String> {
    let Some(raw) = params.get("scope").filter(|raw| !raw.trim().is_empty()) else {
        return Err("scope is missing; request at least 'openid'".into());
    };
    let mut scopes: Vec<&str> = Vec::new();
    for scope in raw.split(' ').filter(|scope| !scope.is_empty()) {
        if !client.scopes.iter().any(|allowed| allowed == scope) {
            return Err(format!(
                "scope '{}' is not allowed for this client; allowed scopes are {}",
                truncate(scope),
                client.scopes.join(" ")
            ));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes.join(" "))
}

/// PKCE (RFC 7636): mandatory with S256 for public clients, optional for
/// confidential ones, and `plain` never.
fn code_challenge_of(
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Option<String>, String> {
    let challenge = params.get("code_challenge");
    let method = params.get("code_challenge_method").map(String::as_str);
    match (challenge, method) {
        (None, None) if client.kind == ClientKind::Public => {
            Err("code_challenge is missing: public clients must use PKCE with code_challenge_method=S256".into())
        }
        (None, None) => Ok(None),
        (None, Some(_)) => Err("code_challenge_method was sent without code_challenge".into()),
        (Some(_), None | Some("plain")) => {
            Err("code_challenge_method must be S256; the plain method is not accepted".into())
        }
        (Some(challenge), Some("S256")) => {
            let well_formed = challenge.len() == 43
                && challenge.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
            if well_formed {
                Ok(Some(challenge.clone()))
            } else {
                Err("code_challenge is not a base64url-encoded SHA-256 digest (43 characters)".into())
            }
        }
        (Some(_), Some(other)) => Err(format!("code_challenge_method '{}' is not supported; use S256", truncate(other))),
    }
}

fn prompt_of(params: &HashMap<String, String>) -> Result<Prompt, String> {
    let Some(raw) = params.get("prompt") else {
        return Ok(Prompt::Default);
    };
    let values: Vec<&str> = raw.split(' ').filter(|value| !value.is_empty()).collect();
    if values.contains(&"none") && values.len() > 1 {
        return Err("prompt=none cannot be combined with other prompt values".into());
    }
    let mut prompt = Prompt::Default;
    for value in values {
        match value {
            "none" => prompt = Prompt::None,
            "login" | "select_account" => prompt = Prompt::Login,
            // The clients are the broker's own, so there is no consent page to show.
            "consent" => {}
            other => {
                return Err(format!(
                    "prompt '{}' is not supported; use none, login, consent or select_account",
                    truncate(other)
                ));
            }
        }
    }
    Ok(prompt)
}

/// Returns whether the existing sign-in is too old or the client requested a new one.
/// `max_age=0` counts as `prompt=login`, since the sign-in time has a
/// resolution of one second.
fn needs_new_sign_in(request: &AuthorizationRequest, signed_in: &SignedIn, now: i64) -> bool {
    request.prompt == Prompt::Login
        || request.max_age == Some(0)
        || !within_max_age(request, signed_in, now)
}

fn within_max_age(request: &AuthorizationRequest, signed_in: &SignedIn, now: i64) -> bool {
    request
        .max_age
        .is_none_or(|max_age| now - signed_in.authenticated_at <= max_age)
}

/// Returns whether `login_hint` names the signed-in user. A hint for someone
/// else means the user wants to switch accounts.
fn hint_matches(hint: Option<&str>, user: &User) -> bool {
    let Some(hint) = hint else {
        return true;
    };
    let Ok(hint) = identifier_key(hint) else {
        return false;
    };
    [&user.email, &user.login_id]
        .into_iter()
        .filter_map(|identifier| identifier_key(identifier).ok())
        .any(|key| key == hint)
}

async fn current_user(
    state: &AppState,
    session: &Session,
) -> Result<Option<(SignedIn, User)>, AppError> {
    let Some(signed_in) = SignedIn::load(session).await? else {
        return Ok(None);
    };
    let user = state.users.find_by_id(&signed_in.user_id).await?;
    Ok(user
        .filter(|user| user.active)
        .map(|user| (signed_in, user)))
}

/// Stores the pending requests, and removes the key when none is left.
async fn store_pending(session: &Session, pending: &[PendingRequest]) -> Result<(), AppError> {
    if pending.is_empty() {
        session.remove_value(PENDING_KEY).await?;
    } else {
        session.insert(PENDING_KEY, pending).await?;
    }
    Ok(())
}

async fn park(
    session: &Session,
    request: AuthorizationRequest,
    stale_sign_in_id: Option<String>,
    now: i64,
) -> Result<String, AppError> {
    let mut pending: Vec<PendingRequest> = session.get(PENDING_KEY).await?.unwrap_or_default();
    if pending.len() >= MAX_PENDING {
        pending.drain(..=pending.len() - MAX_PENDING);
    }
    let id = random_token();
    pending.push(PendingRequest {
        id: id.clone(),
        requested_at: now,
        stale_sign_in_id,
        request,
    });
    session.insert(PENDING_KEY, &pending).await?;
    Ok(id)
}

fn login_url(request_id: &str, login_hint: Option<&str>) -> String {
    let return_to = format!("/oauth2/authorize/continue?request={request_id}");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("return_to", &return_to);
    if let Some(hint) = login_hint {
        query.append_pair("login_hint", hint);
    }
    format!("/login?{}", query.finish())
}

async fn issue_code(
    state: &AppState,
    request: &AuthorizationRequest,
    signed_in: &SignedIn,
    now: i64,
) -> Result<Response, AppError> {
    let provider = &state.provider;
    let code = random_token();
    let grant = Grant {
        id: uuid::Uuid::new_v4().to_string(),
        client_id: request.client_id.clone(),
        user_id: signed_in.user_id.clone(),
        session_id: signed_in.session_id.clone(),
        scope: request.scope.clone(),
        nonce: request.nonce.clone(),
        auth_time: signed_in.authenticated_at,
        methods: signed_in.methods.join(" "),
        created_at: now,
        expires_at: now + i64::from(provider.settings.refresh_token_days) * 86_400,
        revoked_at: None,
    };
    let new_code = NewCode {
        code_hash: token_digest(&code),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        expires_at: now + i64::from(provider.settings.code_seconds),
    };
    provider.store.create_grant(&grant, &new_code).await?;
    tracing::info!(user.id = %grant.user_id, client_id = %grant.client_id, grant.id = %grant.id, "issued an authorization code");

    let mut target = Url::parse(&request.redirect_uri)
        .map_err(|error| anyhow::anyhow!("a checked redirect URI no longer parses: {error}"))?;
    {
        let mut query = target.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(client_state) = &request.state {
            query.append_pair("state", client_state);
        }
        query.append_pair("iss", &provider.issuer);
    }
    Ok(Redirect::to(target.as_str()).into_response())
}

fn redirect_error(
    request: &AuthorizationRequest,
    error: &'static str,
    description: &str,
) -> AuthorizeError {
    AuthorizeError::Redirect {
        redirect_uri: request.redirect_uri.clone(),
        state: request.state.clone(),
        error,
        description: description.to_owned(),
    }
}

fn error_response(provider: &Provider, error: AuthorizeError) -> Result<Response, AppError> {
    match error {
        AuthorizeError::Page { title, message } => {
            tracing::info!(reason = %message, "rejected an authorization request without redirecting");
            render(
                StatusCode::BAD_REQUEST,
                &ErrorPage {
                    title,
                    message: &message,
                },
            )
        }
        AuthorizeError::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let mut redirect_uri = Url::parse(&redirect_uri).map_err(|error| {
                anyhow::anyhow!("a checked redirect URI no longer parses: {error}")
            })?;
            tracing::info!(error, reason = %description, "returned an authorization error to the client");
            {
                let mut query = redirect_uri.query_pairs_mut();
                query.append_pair("error", error);
                query.append_pair("error_description", &description);
                if let Some(state) = &state {
                    query.append_pair("state", state);
                }
                query.append_pair("iss", &provider.issuer);
            }
            Ok(Redirect::to(redirect_uri.as_str()).into_response())
        }
    }
}

/// Shortens a value echoed in a message, so a huge parameter cannot flood a page.
fn truncate(value: &str) -> String {
    const MAX: usize = 100;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}
