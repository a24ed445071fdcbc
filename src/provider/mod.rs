//! The broker as OAuth 2.0 authorization server and OpenID Connect provider
//! for its own clients: the web client, the native clients and the meetings
//! application.
//!
//! Browser-facing endpoints (`/oauth2/authorize`, `/oauth2/logout`) run with
//! the broker session, so a browser that signed in once gets codes for every
//! client without another prompt (cross-launch SSO). Back-channel endpoints
//! (token, userinfo, revocation, discovery, JWKS) take no cookies and respond
//! in JSON. This module knows nothing about how the user signed in: the login
//! flow hands back a [`SignedIn`] session, and the provider turns it into
//! codes and tokens.

pub mod authorize;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod keys;
pub mod logout;
pub mod params;
pub mod revoke;
pub mod store;
pub mod token;
pub mod tokens;
pub mod userinfo;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use self::clients::{ClientRegistry, OAuth2Config};
use self::keys::KeyRing;
use self::store::ProviderStore;
use crate::state::AppState;

/// Largest form a client may post to the token and revocation endpoints.
const MAX_FORM_BYTES: usize = 16 * 1024;

pub struct Provider {
    /// The `iss` value: the public URL without a trailing slash.
    pub issuer: String,
    pub clients: ClientRegistry,
    pub keys: KeyRing,
    pub store: Arc<dyn ProviderStore>,
    pub settings: OAuth2Config,
}

impl Provider {
    pub fn new(
        settings: &OAuth2Config,
        public_url: &url::Url,
        store: Arc<dyn ProviderStore>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: public_url.as_str().trim_end_matches('/').to_owned(),
            clients: ClientRegistry::from_config(settings)?,
            keys: KeyRing::new(store.clone()),
            store,
            settings: settings.clone(),
        })
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn access_token_seconds(&self) -> i64 {
        i64::from(self.settings.access_token_minutes) * 60
    }
}

/// Endpoints the browser visits with its broker session.
pub fn browser_routes() -> Router<AppState> {
    Router::new()
        .route("/oauth2/authorize", get(authorize::start))
        .route("/oauth2/authorize/continue", get(authorize::resume))
        .route("/oauth2/logout", get(logout::start).post(logout::confirm))
}

/// Back-channel endpoints, called by clients and resource servers.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::configuration),
        )
        .route("/oauth2/jwks", get(discovery::jwks))
        .route("/oauth2/token", post(token::exchange))
        .route("/oauth2/userinfo", get(userinfo::show).post(userinfo::show))
        .route("/oauth2/revoke", post(revoke::revoke))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
}
