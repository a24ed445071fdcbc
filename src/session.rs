//! Server-side sessions: the store, the cookie, and the typed values kept in
//! a session.

use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::config::Config;
use crate::db::DbPool;
use crate::error::AppError;
use crate::state::AppState;

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

/// Sessions in the `browser_sessions` table of the shared database, so any
/// instance can continue a sign-in that another one started, and a restart
/// loses none.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    pool: DbPool,
}

impl DbSessionStore {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Sessions that have not expired, for capacity figures.
    pub async fn count_active(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM browser_sessions WHERE expires_at > $1")
            .bind(time::OffsetDateTime::now_utc().unix_timestamp())
            .fetch_one(&self.pool)
            .await
    }
}

/// Returns the stored key of a session. The cookie's value is never written
/// down, so a copy of the table cannot be turned back into cookies.
fn id_hash(id: &Id) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(id.to_string().as_bytes()))
}

fn backend(error: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(error.to_string())
}

fn encode(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(record).map_err(|error| session_store::Error::Encode(error.to_string()))
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A colliding id (2^-128) would overwrite another browser's session
        // under `save`, so creation only inserts and draws again on conflict.
        loop {
            let inserted = sqlx::query(
                "INSERT INTO browser_sessions (id_hash, record, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id_hash) DO NOTHING",
            )
            .bind(id_hash(&record.id))
            .bind(encode(record)?)
            .bind(record.expiry_date.unix_timestamp())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        sqlx::query(
            "INSERT INTO browser_sessions (id_hash, record, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id_hash) DO UPDATE SET record = excluded.record, \
             expires_at = excluded.expires_at",
        )
        .bind(id_hash(&record.id))
        .bind(encode(record)?)
        .bind(record.expiry_date.unix_timestamp())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT record FROM browser_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash(id))
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        stored
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|error| session_store::Error::Decode(error.to_string()))
            })
            .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM browser_sessions WHERE id_hash = $1")
            .bind(id_hash(id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for DbSessionStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        sqlx::query("DELETE FROM browser_sessions WHERE expires_at <= $1")
            .bind(time::OffsetDateTime::now_utc().unix_timestamp())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Creates the session store in the database and the layer that loads and
/// saves sessions around each request.
pub fn layer(
    pool: DbPool,
    config: &Config,
) -> (SessionManagerLayer<DbSessionStore>, DbSessionStore) {
    let store = DbSessionStore::new(pool);
    let idle = time::Duration::minutes(i64::from(config.session.idle_minutes));
    let layer = SessionManagerLayer::new(store.clone())
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.uses_https())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(idle));
    (layer, store)
}

/// Middleware that gives a session changed before sign-in the sign-in time
/// limit in place of the signed-in idle time. tower-sessions starts every
/// request with the layer's expiry and writes it with any change, so without
/// this a sign-in abandoned halfway would keep its row for the idle time.
pub async fn limit_unfinished_sign_ins(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let session = request.extensions().get::<Session>().cloned();
    let response = next.run(request).await;
    let Some(session) = session.filter(Session::is_modified) else {
        return response;
    };
    match SignedIn::load(&session).await {
        Ok(None) => {
            let limit = time::Duration::minutes(i64::from(state.config.session.login_minutes));
            session.set_expiry(Some(Expiry::OnInactivity(limit)));
        }
        Ok(Some(_)) => {}
        Err(error) => {
            tracing::warn!(%error, "reading the session failed, so its expiry was left as it was")
        }
    }
    response
}

/// Deletes expired sessions from the store once a minute, for ever. A failed
/// round is logged and retried, because the database may come back.
pub async fn delete_expired(store: DbSessionStore) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        if let Err(error) = store.delete_expired().await {
            tracing::warn!(%error, "deleting expired sessions failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> DbSessionStore {
        DbSessionStore::new(crate::db::connect_default("sqlite::memory:").await.unwrap())
    }

    fn record(expiry: time::OffsetDateTime) -> Record {
        let mut data = std::collections::HashMap::new();
        data.insert("auth.flow".into(), serde_json::json!({"step": "password"}));
        Record {
            id: Id::default(),
            data,
            expiry_date: expiry,
        }
    }

    #[tokio::test]
    async fn saved_record_loads_without_stored_id() {
        let store = store().await;
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
        let mut saved = record(later);
        store.create(&mut saved).await.unwrap();
        let loaded = store.load(&saved.id).await.unwrap().expect("session");
        assert_eq!(loaded.data, saved.data);
        assert_eq!(loaded.expiry_date.unix_timestamp(), later.unix_timestamp());
        let keys: Vec<String> = sqlx::query_scalar("SELECT id_hash FROM browser_sessions")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(keys, vec![id_hash(&saved.id)]);
        assert_ne!(keys[0], saved.id.to_string());
    }

    #[tokio::test]
    async fn expired_sessions_do_not_load_and_are_deleted() {
        let store = store().await;
        let mut expired = record(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
        store.create(&mut expired).await.unwrap();
        assert!(store.load(&expired.id).await.unwrap().is_none());
        store.delete_expired().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM browser_sessions")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
