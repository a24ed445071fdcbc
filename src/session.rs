//! Server-side sessions: the store, the cookie, and the typed values kept in
//! a session.

use std::sync::Arc;
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
///
/// On SQLite the store also keeps copies of recently used sessions, so that
/// the steps of a sign-in read their session without a statement. Only one
/// instance serves a SQLite file and every change to a session goes through
/// its store, so a copy cannot fall behind the table. Instances that share
/// PostgreSQL change each other's sessions, so there every load reads the
/// table.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    pool: DbPool,
    recent: Option<Arc<RecentSessions>>,
}

/// Copies of recently used sessions, with locks that keep each copy and its
/// row in step.
#[derive(Debug)]
struct RecentSessions {
    copies: moka::sync::Cache<Id, Record>,
    /// A session's row and its copy change together under the lock of its
    /// stripe. Otherwise a load that read the row just before a sign-out
    /// deleted it could store its copy just after, and the copy would bring
    /// the session back.
    stripes: Vec<tokio::sync::Mutex<()>>,
}

/// Sessions kept in memory, enough for the sign-ins in progress on a busy
/// instance. With all of them kept, `benches/capacity.rs` measured about
/// 5 MiB more resident memory than without copies.
const RECENT_SESSIONS: u64 = 2048;
/// A copy unused this long is dropped even while there is room.
const RECENT_IDLE: Duration = Duration::from_secs(600);
const STRIPES: usize = 64;

impl RecentSessions {
    fn new() -> Self {
        Self {
            copies: moka::sync::Cache::builder()
                .max_capacity(RECENT_SESSIONS)
                .time_to_idle(RECENT_IDLE)
                .build(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, id: &Id) -> &tokio::sync::Mutex<()> {
        &self.stripes[(id.0.unsigned_abs() % STRIPES as u128) as usize]
    }
}

impl DbSessionStore {
    pub fn new(pool: DbPool) -> Self {
        let recent =
            (pool.engine() == crate::db::Engine::Sqlite).then(|| Arc::new(RecentSessions::new()));
        Self { pool, recent }
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

/// The statements behind the store, without the copies.
impl DbSessionStore {
    async fn insert_new(&self, record: &mut Record) -> session_store::Result<()> {
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
            .execute(self.pool.inline())
            .await
            .map_err(backend)?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn upsert(&self, record: &Record) -> session_store::Result<()> {
        sqlx::query(
            "INSERT INTO browser_sessions (id_hash, record, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id_hash) DO UPDATE SET record = excluded.record, \
             expires_at = excluded.expires_at",
        )
        .bind(id_hash(&record.id))
        .bind(encode(record)?)
        .bind(record.expiry_date.unix_timestamp())
        .execute(self.pool.inline())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn select(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT record FROM browser_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash(id))
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .fetch_optional(self.pool.inline())
        .await
        .map_err(backend)?;
        stored
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|error| session_store::Error::Decode(error.to_string()))
            })
            .transpose()
    }

    async fn delete_row(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM browser_sessions WHERE id_hash = $1")
            .bind(id_hash(id))
            .execute(self.pool.inline())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.insert_new(record).await?;
        if let Some(recent) = &self.recent {
            // No other request has seen a new id yet, so no lock is needed.
            recent.copies.insert(record.id, record.clone());
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let Some(recent) = &self.recent else {
            return self.upsert(record).await;
        };
        let _stripe = recent.stripe(&record.id).lock().await;
        // The copy goes first, so that a write cut short by an error or by a
        // dropped request leaves the next load to read the row.
        recent.copies.invalidate(&record.id);
        self.upsert(record).await?;
        recent.copies.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(recent) = &self.recent else {
            return self.select(id).await;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(copy) = recent.copies.get(id) {
            // The same test as the statement's, so a copy expires with its row.
            return Ok((copy.expiry_date.unix_timestamp() > now).then_some(copy));
        }
        let _stripe = recent.stripe(id).lock().await;
        let stored = self.select(id).await?;
        if let Some(record) = &stored {
            recent.copies.insert(*id, record.clone());
        }
        Ok(stored)
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let Some(recent) = &self.recent else {
            return self.delete_row(id).await;
        };
        let _stripe = recent.stripe(id).lock().await;
        // The copy goes first, as in `save`.
        recent.copies.invalidate(id);
        self.delete_row(id).await
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

    /// Returns a store on the same database that keeps no copies, as on
    /// PostgreSQL.
    fn without_copies(store: &DbSessionStore) -> DbSessionStore {
        DbSessionStore {
            pool: store.pool.clone(),
            recent: None,
        }
    }

    fn unexpired_record() -> Record {
        record(time::OffsetDateTime::now_utc() + time::Duration::minutes(5))
    }

    async fn remove_rows(store: &DbSessionStore) {
        sqlx::query("DELETE FROM browser_sessions")
            .execute(&store.pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn sqlite_store_loads_saved_sessions_from_memory() {
        let store = store().await;
        let mut saved = unexpired_record();
        store.create(&mut saved).await.unwrap();
        saved
            .data
            .insert("auth.flow".into(), serde_json::json!({"step": "otp"}));
        store.save(&saved).await.unwrap();
        // With the rows gone, only the copy can return the session.
        remove_rows(&store).await;
        let loaded = store.load(&saved.id).await.unwrap().expect("copy");
        assert_eq!(loaded.data, saved.data);

        assert!(
            without_copies(&store)
                .load(&saved.id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn deleted_session_does_not_load_again() {
        let store = store().await;
        let mut saved = unexpired_record();
        store.create(&mut saved).await.unwrap();
        assert!(store.load(&saved.id).await.unwrap().is_some());
        store.delete(&saved.id).await.unwrap();
        assert!(store.load(&saved.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn load_from_the_table_keeps_a_copy() {
        let store = store().await;
        let mut saved = unexpired_record();
        // Written by a store without copies, as after a restart, so no copy
        // exists yet.
        without_copies(&store).create(&mut saved).await.unwrap();
        assert!(store.load(&saved.id).await.unwrap().is_some());
        remove_rows(&store).await;
        assert!(store.load(&saved.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn load_waits_for_a_delete_in_progress() {
        let store = store().await;
        let mut saved = unexpired_record();
        without_copies(&store).create(&mut saved).await.unwrap();
        let recent = store.recent.clone().expect("SQLite keeps copies");
        // Holds the session's lock as a delete does while its statement runs.
        let stripe = recent.stripe(&saved.id).lock().await;
        let load = tokio::spawn({
            let (store, id) = (store.clone(), saved.id);
            async move { store.load(&id).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !load.is_finished(),
            "the load read the row during the delete"
        );
        recent.copies.invalidate(&saved.id);
        store.delete_row(&saved.id).await.unwrap();
        drop(stripe);
        assert!(load.await.unwrap().is_none());
        assert!(recent.copies.get(&saved.id).is_none());
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
