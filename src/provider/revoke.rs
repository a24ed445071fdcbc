//! Token revocation (RFC 7009). Revoking either a refresh token or an access
//! token revokes the whole grant, so the client loses every token of that
//! sign-in, which is what a client asking for revocation on sign-out wants.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::OAuthError;
use super::token::{authenticate_client, form_params};
use super::tokens::{ACCESS_TOKEN_TYPE, AccessClaims, token_digest, verify};
use crate::state::AppState;

pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form_params(&headers, &body)?;
    let client = authenticate_client(&state.provider, &headers, &params)?;
    let Some(token) = params.get("token") else {
        return Err(OAuthError::invalid_request("token is missing"));
    };
    // Both kinds are looked up whatever `token_type_hint` contains, so the hint,
    // known or not, changes nothing (RFC 7009, section 2.1).
    let provider = &state.provider;
    let now = state.clock.now();

    let grant = match provider
        .store
        .find_refresh_token(&token_digest(token))
        .await?
    {
        Some((grant, _)) => Some(grant),
        None => {
            let keys = provider.keys.for_token(token).await?;
            // An expired access token can still be revoked: its grant lives on.
            match verify::<AccessClaims>(token, &keys, &provider.issuer, ACCESS_TOKEN_TYPE, false) {
                Ok(claims) => provider.store.find_grant(&claims.grant_id).await?,
                Err(_) => None,
            }
        }
    };
    // Unknown tokens and other clients' tokens get the same 200 response
    // (RFC 7009, section 2.2), so the endpoint cannot be used to test tokens.
    match grant {
        Some(grant) if grant.client_id == client.id => {
            let revoked = provider
                .store
                .revoke_grant(&grant.id, "revoked by the client", now)
                .await?;
            if revoked {
                tracing::info!(client_id = %client.id, grant.id = %grant.id, "client revoked a grant");
            }
        }
        Some(grant) => {
            tracing::warn!(client_id = %client.id, grant.client_id = %grant.client_id, "a client tried to revoke another client's token");
        }
        None => {}
    }
    Ok(StatusCode::OK.into_response())
}
