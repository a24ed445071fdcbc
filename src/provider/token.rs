//! The token endpoint (RFC 6749, section 3.2): authorization code exchange
//! with PKCE (RFC 7636) and refresh with rotation.
//!
//! Each refresh spends the token it was given and returns a new one in the
//! same family (the grant). A spent token coming back means two parties hold
//! it, so the whole family is revoked, as RFC 9700, section 4.14.2 advises.
//! A code presented twice revokes the tokens issued for it (RFC 6749,
//! section 4.1.2).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use data_encoding::{BASE64, BASE64URL_NOPAD};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Provider;
use super::clients::{Client, ClientKind};
use super::error::OAuthError;
use super::params::parse_params;
use super::store::{CodeRedemption, Grant, RefreshRotation};
use super::tokens::{Minter, random_token, token_digest};
use crate::directory::User;
use crate::state::AppState;

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

pub async fn exchange(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form_params(&headers, &body)?;
    let client = authenticate_client(&state.provider, &headers, &params)?;
    let now = state.clock.now();
    let response = match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => exchange_code(&state, client, &params, now).await?,
        Some("refresh_token") => refresh(&state, client, &params, now).await?,
        Some(other) => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type '{}' is not supported; use authorization_code or refresh_token",
                other.chars().take(100).collect::<String>()
            )));
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    };
    let mut response = Json(response).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Reads an `application/x-www-form-urlencoded` body with no repeated parameter.
pub fn form_params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "the body must be sent as application/x-www-form-urlencoded",
        ));
    }
    parse_params(body)
        .map_err(|name| OAuthError::invalid_request(format!("the parameter '{name}' is repeated")))
}

/// Authenticates the client with `client_secret_basic`, `client_secret_post`,
/// or, for a public client, its `client_id` alone (RFC 6749, section 2.3).
pub fn authenticate_client<'a>(
    provider: &'a Provider,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<&'a Client, OAuthError> {
    let basic = basic_credentials(headers)?;
    let (client_id, secret) = match basic {
        Some((id, secret)) => {
            if params.contains_key("client_secret") {
                return Err(OAuthError::invalid_request(
                    "the client authenticated twice (Authorization header and client_secret); use one method",
                ));
            }
            if params
                .get("client_id")
                .is_some_and(|body_id| *body_id != id)
            {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the one in the Authorization header",
                ));
            }
            (id, Some(secret))
        }
        None => {
            let Some(id) = params.get("client_id") else {
                return Err(OAuthError::invalid_client(
                    "no client authentication: send client_id (and client_secret for a confidential client)",
                ));
            };
            (id.clone(), params.get("client_secret").cloned())
        }
    };
    let Some(client) = provider.clients.get(&client_id) else {
        tracing::info!(client_id = %client_id.chars().take(100).collect::<String>(), "token request from an unknown client");
        return Err(OAuthError::invalid_client("client authentication failed"));
    };
    if let Err(reason) = client.authenticate(secret.as_deref()) {
        tracing::info!(client_id = %client.id, %reason, "client authentication failed");
        return Err(OAuthError::invalid_client("client authentication failed"));
    }
    Ok(client)
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || OAuthError::invalid_client("the Authorization header is not valid Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = BASE64
        .decode(encoded.trim().as_bytes())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // RFC 6749, section 2.3.1: both parts are form-urlencoded before encoding.
    let decode = |part: &str| {
        url::form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((decode(id), decode(secret))))
}

async fn exchange_code(
    state: &AppState,
    client: &Client,
    params: &HashMap<String, String>,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let provider = &state.provider;
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let redirect_uri = params.get("redirect_uri").ok_or_else(|| {
        OAuthError::invalid_request(
            "redirect_uri is missing; send the one used in the authorization request",
        )
    })?;

    let redeemed = match provider
        .store
        .redeem_code(&token_digest(code), &client.id, now)
        .await?
    {
        CodeRedemption::Redeemed(redeemed) => redeemed,
        CodeRedemption::AlreadyUsed { grant_id } => {
            if provider
                .store
                .revoke_grant(&grant_id, "code reused", now)
                .await?
            {
                tracing::warn!(client_id = %client.id, grant.id = %grant_id, "an authorization code was used twice; revoked the tokens issued for it");
            }
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        // Nothing changes: revoking here would let any caller who saw a
        // code cancel the tokens of the client it belongs to.
        CodeRedemption::OtherClient { client_id } => {
            tracing::warn!(client_id = %client.id, code.client_id = %client_id, "a client presented another client's authorization code");
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        CodeRedemption::NotFound => {
            return Err(OAuthError::invalid_grant(
                "the authorization code is not valid",
            ));
        }
    };
    let grant = redeemed.grant;
    if now >= redeemed.expires_at {
        return Err(OAuthError::invalid_grant(
            "the authorization code has expired; start the sign-in again",
        ));
    }
    if redeemed.redirect_uri != *redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the one in the authorization request",
        ));
    }
    check_pkce(
        client,
        redeemed.code_challenge.as_deref(),
        params.get("code_verifier").map(String::as_str),
    )?;
    if !grant.is_usable(now) {
        return Err(OAuthError::invalid_grant(
            "the sign-in session this code belongs to has ended",
        ));
    }

    let user = active_user(state, &grant, now).await?;
    let refresh_token = if grant.has_scope("offline_access") {
        let token = random_token();
        provider
            .store
            .add_refresh_token(&grant.id, &token_digest(&token), now)
            .await?;
        Some(token)
    } else {
        None
    };
    tracing::info!(client_id = %client.id, user.id = %user.id, grant.id = %grant.id, "exchanged an authorization code for tokens");
    mint(
        provider,
        &grant,
        &user,
        &grant.scope,
        refresh_token,
        true,
        now,
    )
}

/// Checks the PKCE verifier against the stored S256 challenge.
fn check_pkce(
    client: &Client,
    challenge: Option<&str>,
    verifier: Option<&str>,
) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier.bytes().all(|byte| {
                    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
                });
            if !well_formed {
                return Err(OAuthError::invalid_grant(
                    "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' or '~'",
                ));
            }
            let computed = BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes()));
            if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
        (Some(_), None) => Err(OAuthError::invalid_grant(
            "code_verifier is missing; send the PKCE verifier",
        )),
        // A verifier without a challenge could let an attacker who injected a
        // code pass PKCE, so it is rejected (RFC 9700, section 2.1.1).
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier was sent, but the authorization request had no code_challenge",
        )),
        (None, None) if client.kind == ClientKind::Public => {
            Err(OAuthError::invalid_grant("public clients must use PKCE"))
        }
        (None, None) => Ok(()),
    }
}

async fn refresh(
    state: &AppState,
    client: &Client,
    params: &HashMap<String, String>,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let provider = &state.provider;
    let token = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let token_hash = token_digest(token);
    let Some((grant, spent)) = provider.store.find_refresh_token(&token_hash).await? else {
        return Err(OAuthError::invalid_grant("the refresh token is not valid"));
    };
    if grant.client_id != client.id {
        tracing::warn!(client_id = %client.id, grant.client_id = %grant.client_id, "a client presented another client's refresh token");
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if spent {
        revoke_reused(provider, &grant, now).await?;
        return Err(OAuthError::invalid_grant(
            "the refresh token was already used; sign in again",
        ));
    }
    if !grant.is_usable(now) {
        return Err(OAuthError::invalid_grant(
            "the refresh token was revoked or has expired; sign in again",
        ));
    }
    let scope = narrowed_scope(&grant, params.get("scope"))?;
    let user = active_user(state, &grant, now).await?;

    let new_token = random_token();
    match provider
        .store
        .rotate_refresh_token(&token_hash, &token_digest(&new_token), now)
        .await?
    {
        RefreshRotation::Rotated => {}
        // Another request spent the token between the look-up and now.
        RefreshRotation::Reused => {
            revoke_reused(provider, &grant, now).await?;
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; sign in again",
            ));
        }
    }
    tracing::debug!(client_id = %client.id, grant.id = %grant.id, "rotated a refresh token");
    mint(provider, &grant, &user, &scope, Some(new_token), false, now)
}

async fn revoke_reused(provider: &Provider, grant: &Grant, now: i64) -> Result<(), OAuthError> {
    if provider
        .store
        .revoke_grant(&grant.id, "refresh token reused", now)
        .await?
    {
        tracing::warn!(client_id = %grant.client_id, user.id = %grant.user_id, grant.id = %grant.id, "a spent refresh token was presented again; revoked its token family");
    }
    Ok(())
}

/// Returns the scope of a refresh, which may request fewer scopes than granted, never more (RFC 6749, section 6).
fn narrowed_scope(grant: &Grant, requested: Option<&String>) -> Result<String, OAuthError> {
    let Some(requested) = requested else {
        return Ok(grant.scope.clone());
    };
    let mut scopes: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|scope| !scope.is_empty()) {
        if !grant.has_scope(scope) {
            return Err(OAuthError::invalid_scope(format!(
                "scope '{}' was not granted; a refresh can only keep or narrow the granted scopes ({})",
                scope.chars().take(100).collect::<String>(),
                grant.scope
            )));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes.join(" "))
}

/// Returns the grant's user, revoking the grant if the account was removed or
/// deactivated since sign-in.
async fn active_user(state: &AppState, grant: &Grant, now: i64) -> Result<User, OAuthError> {
    match state.users.find_by_id(&grant.user_id).await? {
        Some(user) if user.active => Ok(user),
        _ => {
            state
                .provider
                .store
                .revoke_grant(&grant.id, "user inactive", now)
                .await?;
            Err(OAuthError::invalid_grant("the user's account is disabled"))
        }
    }
}

fn mint(
    provider: &Provider,
    grant: &Grant,
    user: &User,
    scope: &str,
    refresh_token: Option<String>,
    with_nonce: bool,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let keys = provider.keys.current()?;
    let minter = Minter {
        keys: &keys,
        issuer: &provider.issuer,
        now,
        lifetime_seconds: provider.access_token_seconds(),
    };
    let access_token = minter.access_token(grant, scope)?;
    metrics::counter!("unified_login_tokens_issued_total", "grant_type" => if with_nonce { "authorization_code" } else { "refresh_token" }).increment(1);
    let id_token = if scope.split(' ').any(|scope| scope == "openid") {
        Some(minter.id_token(grant, user, scope, &access_token, with_nonce)?)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: provider.access_token_seconds(),
        scope: scope.to_owned(),
        id_token,
        refresh_token,
    })
}
