//! OpenID Provider metadata (OpenID Connect Discovery 1.0; RFC 8414) and
//! the JSON Web Key Set.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::clients::SUPPORTED_SCOPES;
use super::error::OAuthError;
use crate::state::AppState;

/// Clients may cache both documents for this long; after a key rotation the
/// previous key stays published for longer than that.
const CACHE_CONTROL: &str = "public, max-age=300";

pub async fn configuration(State(state): State<AppState>) -> Response {
    let provider = &state.provider;
    let document = json!({
        "issuer": provider.issuer,
        "authorization_endpoint": provider.endpoint("/oauth2/authorize"),
        "token_endpoint": provider.endpoint("/oauth2/token"),
        "userinfo_endpoint": provider.endpoint("/oauth2/userinfo"),
        "jwks_uri": provider.endpoint("/oauth2/jwks"),
        "revocation_endpoint": provider.endpoint("/oauth2/revoke"),
        "end_session_endpoint": provider.endpoint("/oauth2/logout"),
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "amr", "azp", "at_hash",
            "email", "email_verified", "name", "given_name", "family_name", "preferred_username"
        ],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    cacheable(Json(document).into_response())
}

pub async fn jwks(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let keys = state.provider.keys.current()?;
    Ok(cacheable(Json(keys.jwks()).into_response()))
}

fn cacheable(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}
