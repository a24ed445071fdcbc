//! Bearer tokens for the admin API. The command line creates them and prints
//! each token once; the database keeps only its SHA-256 digest.

use serde::Serialize;
use sqlx::Row;

use crate::db::DbPool;
use crate::provider::tokens::{random_token, token_digest};

/// Prefix that makes admin tokens recognisable in a secret scanner's report.
const TOKEN_PREFIX: &str = "ula_";

#[derive(Debug, Serialize)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Creates a token named `name` and returns the token itself.
pub async fn create(pool: &DbPool, name: &str, now: i64) -> anyhow::Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("the token name must have 1 to 100 characters");
    }
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM admin_tokens WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    if taken.is_some() {
        anyhow::bail!(
            "an active admin token is already named '{name}'; revoke it first or choose another name"
        );
    }
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    sqlx::query(
        "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(name)
    .bind(token_digest(&token))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(token)
}

pub async fn list(pool: &DbPool) -> anyhow::Result<Vec<AdminToken>> {
    let rows = sqlx::query("SELECT id, name, created_at, last_used_at, revoked_at FROM admin_tokens ORDER BY created_at, name")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AdminToken {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                last_used_at: row.try_get("last_used_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// Revokes the active token named `name`; returns whether one existed.
pub async fn revoke(pool: &DbPool, name: &str, now: i64) -> anyhow::Result<bool> {
    let result = sqlx::query(
        "UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(name.trim())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Returns the name of the active token `token`, recording its use. The
/// look-up is by digest, so timing reveals nothing about the token itself.
pub async fn authenticate(pool: &DbPool, token: &str, now: i64) -> anyhow::Result<Option<String>> {
    let name: Option<String> = sqlx::query_scalar(
        "UPDATE admin_tokens SET last_used_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL RETURNING name",
    )
    .bind(now)
    .bind(token_digest(token))
    .fetch_optional(pool)
    .await?;
    Ok(name)
}
