//! Server-side sessions: the store, the cookie, and the typed values kept in
//! a session.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tower_sessions::cookie::SameSite;
use tower_sessions::session_store::ExpiredDeletion;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;

use crate::config::Config;
use crate::error::AppError;

pub const COOKIE_NAME: &str = "unified_login_session";
const SIGNED_IN_KEY: &str = "auth.signed_in";

/// The signed-in state of a browser, set when a login flow completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub user_id: String,
    pub authenticated_at: i64,
    /// Methods the user proved their identity with, for example `["password", "totp"]`.
    pub methods: Vec<String>,
    /// Random id of this sign-in, the `sid` of the tokens issued under it. It
    /// lives as long as the session, even when the cookie's id is cycled.
    pub session_id: String,
    /// Random id of this one sign-in, new each time the user signs in again,
    /// even within the same second.
    #[serde(default)]
    pub sign_in_id: String,
}

impl SignedIn {
    pub async fn load(session: &Session) -> Result<Option<Self>, AppError> {
        let signed_in: Option<Self> = session.get(SIGNED_IN_KEY).await?;
        Ok(signed_in.filter(|signed_in| !signed_in.session_id.is_empty()))
    }

    pub async fn save(&self, session: &Session) -> Result<(), AppError> {
        Ok(session.insert(SIGNED_IN_KEY, self).await?)
    }
}

/// Creates the session store in the database and the layer that loads and
/// saves sessions around each request.
pub async fn layer(
    pool: SqlitePool,
    config: &Config,
) -> anyhow::Result<(SessionManagerLayer<SqliteStore>, SqliteStore)> {
    let store = SqliteStore::new(pool);
    store.migrate().await?;

    let idle = time::Duration::minutes(i64::from(config.session.idle_minutes));
    let layer = SessionManagerLayer::new(store.clone())
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.uses_https())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(idle));
    Ok((layer, store))
}

/// Deletes expired sessions from the store once a minute, for ever.
pub async fn delete_expired(store: SqliteStore) {
    if let Err(error) = store
        .continuously_delete_expired(Duration::from_secs(60))
        .await
    {
        tracing::error!(%error, "deleting expired sessions stopped");
    }
}
