//! Storage of signing keys, grants, authorization codes and refresh tokens.
//!
//! Codes and refresh tokens are kept only as SHA-256 digests. Each one-time
//! value is spent with a conditional `UPDATE … WHERE used_at IS NULL`, so two
//! requests racing with the same code or refresh token cannot both win, even
//! on different broker instances sharing the database.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{DbPool, DbTransaction};
use crate::directory::DirectoryError;

/// A private signing key as stored.
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key_pem: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// The authorization a user gave one client in one broker session.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    /// Authentication methods, space-separated, such as `password totp`.
    pub methods: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl Grant {
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|granted| granted == scope)
    }
}

pub struct NewCode {
    pub code_hash: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires_at: i64,
}

/// A code spent by [`ProviderStore::redeem_code`].
pub struct RedeemedCode {
    pub grant: Grant,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires_at: i64,
}

pub enum CodeRedemption {
    Redeemed(Box<RedeemedCode>),
    /// The code belongs to another client; nothing was changed.
    OtherClient {
        client_id: String,
    },
    /// The code was spent before: the caller revokes its grant.
    AlreadyUsed {
        grant_id: String,
    },
    NotFound,
}

pub enum RefreshRotation {
    Rotated,
    /// The token was spent before, so it was copied: the caller revokes the family.
    Reused,
}

#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Returns every stored key: the ones that sign first, then newest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, DirectoryError>;
    /// Adds `key` as the signing key, retires the current ones and deletes
    /// keys retired by an earlier rotation.
    async fn rotate_signing_key(&self, key: StoredKey, now: i64) -> Result<(), DirectoryError>;
    /// Adds the first key unless another instance added one meanwhile.
    async fn add_first_signing_key(&self, key: StoredKey) -> Result<(), DirectoryError>;

    async fn create_grant(&self, grant: &Grant, code: &NewCode) -> Result<(), DirectoryError>;
    /// Spends a code of `client_id`. A code of another client is left as it is.
    async fn redeem_code(
        &self,
        code_hash: &str,
        client_id: &str,
        now: i64,
    ) -> Result<CodeRedemption, DirectoryError>;
    async fn find_grant(&self, id: &str) -> Result<Option<Grant>, DirectoryError>;

    async fn add_refresh_token(
        &self,
        grant_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Returns the grant a refresh token belongs to and whether it was spent.
    async fn find_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(Grant, bool)>, DirectoryError>;
    /// Spends `old_hash` and stores `new_hash` in the same family, in one transaction.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<RefreshRotation, DirectoryError>;

    /// Revokes one grant; returns whether it was still active.
    async fn revoke_grant(&self, id: &str, reason: &str, now: i64) -> Result<bool, DirectoryError>;
    /// Revokes every active grant of a broker session; returns how many.
    async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, DirectoryError>;
    /// Deletes expired grants with their tokens, and spent or expired codes.
    async fn purge_expired(&self, now: i64) -> Result<(), DirectoryError>;
}

#[derive(Clone)]
pub struct SqlProviderStore {
    pool: DbPool,
}

impl SqlProviderStore {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }
}

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.session_id, g.scope, g.nonce, \
     g.auth_time, g.methods, g.created_at, g.expires_at, g.revoked_at";

fn grant_from_row(row: &AnyRow) -> Result<Grant, sqlx::Error> {
    Ok(Grant {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        session_id: row.try_get("session_id")?,
        scope: row.try_get("scope")?,
        nonce: row.try_get("nonce")?,
        auth_time: row.try_get("auth_time")?,
        methods: row.try_get("methods")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        kid: row.try_get("kid")?,
        algorithm: row.try_get("algorithm")?,
        private_key_pem: row.try_get("private_key_pem")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

#[async_trait]
impl ProviderStore for SqlProviderStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key_pem, created_at, retired_at FROM signing_keys \
             ORDER BY retired_at IS NOT NULL, created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    async fn rotate_signing_key(&self, key: StoredKey, now: i64) -> Result<(), DirectoryError> {
        let mut tx = crate::db::begin_write(&self.pool).await?;
        // Keys retired by an earlier rotation can no longer have live tokens.
        sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut tx, &key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_first_signing_key(&self, key: StoredKey) -> Result<(), DirectoryError> {
        // Instances that start together must not each add a first key.
        let mut tx = crate::db::begin_exclusive(&self.pool).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await?;
        if existing == 0 {
            insert_key(&mut tx, &key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_grant(&self, grant: &Grant, code: &NewCode) -> Result<(), DirectoryError> {
        let mut tx = crate::db::begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO oauth_grants (id, client_id, user_id, session_id, scope, nonce, auth_time, \
             methods, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&grant.id)
        .bind(&grant.client_id)
        .bind(&grant.user_id)
        .bind(&grant.session_id)
        .bind(&grant.scope)
        .bind(&grant.nonce)
        .bind(grant.auth_time)
        .bind(&grant.methods)
        .bind(grant.created_at)
        .bind(grant.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&code.code_hash)
        .bind(&grant.id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        client_id: &str,
        now: i64,
    ) -> Result<CodeRedemption, DirectoryError> {
        let spent = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL \
             AND EXISTS (SELECT 1 FROM oauth_grants g WHERE g.id = oauth_codes.grant_id AND g.client_id = $3) \
             RETURNING grant_id, redirect_uri, code_challenge, expires_at",
        )
        .bind(now)
        .bind(code_hash)
        .bind(client_id)
        .fetch_optional(self.pool.inline())
        .await?;
        let Some(spent) = spent else {
            let owner = sqlx::query(
                "SELECT c.grant_id, g.client_id FROM oauth_codes c \
                 JOIN oauth_grants g ON g.id = c.grant_id WHERE c.code_hash = $1",
            )
            .bind(code_hash)
            .fetch_optional(self.pool.inline())
            .await?;
            let Some(owner) = owner else {
                return Ok(CodeRedemption::NotFound);
            };
            let owner_client: String = owner.try_get("client_id")?;
            return Ok(if owner_client == client_id {
                CodeRedemption::AlreadyUsed {
                    grant_id: owner.try_get("grant_id")?,
                }
            } else {
                CodeRedemption::OtherClient {
                    client_id: owner_client,
                }
            });
        };
        let grant_id: String = spent.try_get("grant_id")?;
        let Some(grant) = self.find_grant(&grant_id).await? else {
            return Ok(CodeRedemption::NotFound);
        };
        Ok(CodeRedemption::Redeemed(Box::new(RedeemedCode {
            grant,
            redirect_uri: spent.try_get("redirect_uri")?,
            code_challenge: spent.try_get("code_challenge")?,
            expires_at: spent.try_get("expires_at")?,
        })))
    }

    async fn find_grant(&self, id: &str) -> Result<Option<Grant>, DirectoryError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g WHERE g.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool.inline())
        .await?;
        Ok(row.as_ref().map(grant_from_row).transpose()?)
    }

    async fn add_refresh_token(
        &self,
        grant_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, issued_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(grant_id)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(())
    }

    async fn find_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(Grant, bool)>, DirectoryError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS}, t.used_at AS token_used_at FROM oauth_refresh_tokens t \
             JOIN oauth_grants g ON g.id = t.grant_id WHERE t.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool.inline())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let used: Option<i64> = row.try_get("token_used_at")?;
        Ok(Some((grant_from_row(&row)?, used.is_some())))
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<RefreshRotation, DirectoryError> {
        let mut tx = crate::db::begin_write(&self.pool).await?;
        let grant_id: Option<String> = sqlx::query_scalar(
            "UPDATE oauth_refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
             RETURNING grant_id",
        )
        .bind(now)
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(grant_id) = grant_id else {
            return Ok(RefreshRotation::Reused);
        };
        sqlx::query(
            "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, issued_at) VALUES ($1, $2, $3)",
        )
        .bind(new_hash)
        .bind(&grant_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshRotation::Rotated)
    }

    async fn revoke_grant(&self, id: &str, reason: &str, now: i64) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, DirectoryError> {
        let result = sqlx::query(
            "UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 \
             WHERE session_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(session_id)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected())
    }

    async fn purge_expired(&self, now: i64) -> Result<(), DirectoryError> {
        let mut tx = crate::db::begin_write(&self.pool).await?;
        sqlx::query("DELETE FROM oauth_codes WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Revoked grants are kept until they expire, so a late replay of one
        // of their refresh tokens is still recognised as reuse.
        sqlx::query("DELETE FROM oauth_grants WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_key(tx: &mut DbTransaction, key: &StoredKey) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_key_pem, created_at, retired_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.kid)
    .bind(&key.algorithm)
    .bind(&key.private_key_pem)
    .bind(key.created_at)
    .bind(key.retired_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
