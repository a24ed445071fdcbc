//! The userinfo endpoint (OpenID Connect Core 1.0, section 5.3), which takes
//! an access token in the `Authorization: Bearer` header (RFC 6750, section
//! 2.1) and returns the claims its scopes release.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Provider;
use super::error::OAuthError;
use super::store::Grant;
use super::tokens::{ACCESS_TOKEN_TYPE, AccessClaims, ProfileClaims, TokenError, verify};
use crate::state::AppState;

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let Some(token) = bearer_token(&headers)? else {
        return Err(OAuthError::invalid_token(
            "send the access token in an Authorization: Bearer header",
            false,
        ));
    };
    let now = state.clock.now();
    let (claims, _grant) = check_access_token(&state.provider, token, now).await?;
    if !claims.scope.split(' ').any(|scope| scope == "openid") {
        return Err(OAuthError::insufficient_scope(
            "the access token was not issued with the openid scope",
        ));
    }
    let Some(user) = state
        .users
        .find_by_id(&claims.sub)
        .await?
        .filter(|user| user.active)
    else {
        return Err(OAuthError::invalid_token(
            "the user's account is disabled",
            true,
        ));
    };

    let mut body = json!({ "sub": claims.sub });
    if let (Value::Object(body), Ok(Value::Object(profile))) = (
        &mut body,
        serde_json::to_value(ProfileClaims::for_scope(&user, &claims.scope)),
    ) {
        body.extend(profile);
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_request("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(OAuthError::invalid_token(
            "the Authorization header must use the Bearer scheme",
            false,
        )),
    }
}

/// Verifies an access token and checks that its grant is still active.
pub async fn check_access_token(
    provider: &Provider,
    token: &str,
    now: i64,
) -> Result<(AccessClaims, Grant), OAuthError> {
    let keys = provider.keys.for_token(token).await?;
    let claims: AccessClaims = verify(token, &keys, &provider.issuer, ACCESS_TOKEN_TYPE, true)
        .map_err(|error| {
            let description = match error {
                TokenError::Expired => "the access token has expired; refresh it",
                _ => "the access token is not valid",
            };
            OAuthError::invalid_token(description, true)
        })?;
    let grant = provider.store.find_grant(&claims.grant_id).await?;
    match grant {
        Some(grant) if grant.is_usable(now) && grant.user_id == claims.sub => Ok((claims, grant)),
        _ => Err(OAuthError::invalid_token(
            "the access token was revoked",
            true,
        )),
    }
}
