//! SQLite implementation of [`ScimStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::resources::{StoredUser, UserRecord};
use super::store::{
    Commit, CommitError, DetainedEntry, NewDetained, Operation, ScimStore, Settings, UserWrite,
};
use crate::db;
use crate::db::{DbPool, DbTransaction};
use crate::directory::sql::bind_audit_event;
use crate::directory::{AuditEvent, DirectoryError, identifier_key};

#[derive(Clone)]
pub struct SqlScimStore {
    pool: DbPool,
}

impl SqlScimStore {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }
}

const USER_COLUMNS: &str = "id, login_id, email, first_name, last_name, active, created_at, \
     updated_at, scim_user_name, scim_external_id, scim_version, role, directory_number, mobile, \
     did, company, street_address, city, postal_code, country";

fn non_empty(text: String) -> Option<String> {
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

fn user_from_row(row: &AnyRow) -> Result<StoredUser, sqlx::Error> {
    let login_id: String = row.try_get("login_id")?;
    let scim_user_name: Option<String> = row.try_get("scim_user_name")?;
    Ok(StoredUser {
        id: row.try_get("id")?,
        record: UserRecord {
            // Users added by hand have no userName yet; their login ID is used instead.
            user_name: scim_user_name.unwrap_or(login_id),
            external_id: row.try_get("scim_external_id")?,
            active: db::flag(row, "active")?,
            given_name: non_empty(row.try_get("first_name")?),
            family_name: non_empty(row.try_get("last_name")?),
            email: non_empty(row.try_get("email")?),
            role: row.try_get("role")?,
            directory_number: row.try_get("directory_number")?,
            mobile: row.try_get("mobile")?,
            did: row.try_get("did")?,
            company: row.try_get("company")?,
            street_address: row.try_get("street_address")?,
            city: row.try_get("city")?,
            postal_code: row.try_get("postal_code")?,
            country: row.try_get("country")?,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("scim_version")?,
    })
}

fn entry_from_row(row: &AnyRow) -> Result<DetainedEntry, sqlx::Error> {
    let operation: String = row.try_get("operation")?;
    Ok(DetainedEntry {
        id: row.try_get("id")?,
        operation: Operation::parse(&operation).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown detained operation '{operation}'").into())
        })?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        reason: row.try_get("reason")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_of(field: &'static str, value: &str) -> Result<String, CommitError> {
    identifier_key(value).map_err(|error| CommitError::Invalid {
        field,
        message: error.to_string(),
    })
}

/// Returns the id of a user other than `id` whose email, login ID or
/// userName has `key`.
async fn other_holder(
    conn: &mut AnyConnection,
    key: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM users WHERE (email_key = $1 OR login_id_key = $1 OR scim_user_name_key = $1) \
         AND id <> $2 LIMIT 1",
    )
    .bind(key)
    .bind(id)
    .fetch_optional(conn)
    .await
}

async fn append_audit(
    conn: &mut AnyConnection,
    event: AuditEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO audit_events (at, kind, outcome, user_id, identifier, client_ip, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now);
    bind_audit_event(query, event).execute(conn).await?;
    Ok(())
}

/// Checks that the userName and email of `record` belong to no other user,
/// and returns their keys.
async fn check_unique(
    conn: &mut AnyConnection,
    id: &str,
    record: &UserRecord,
) -> Result<(String, String), CommitError> {
    let user_name_key = key_of("userName", &record.user_name)?;
    if other_holder(conn, &user_name_key, id).await?.is_some() {
        return Err(CommitError::Conflict {
            field: "userName",
            value: record.user_name.clone(),
        });
    }
    let email = record.email.clone().unwrap_or_default();
    let email_key = key_of("email", &email)?;
    if other_holder(conn, &email_key, id).await?.is_some() {
        return Err(CommitError::Conflict {
            field: "email",
            value: email,
        });
    }
    Ok((user_name_key, email_key))
}

async fn insert_user(
    conn: &mut AnyConnection,
    id: &str,
    record: &UserRecord,
    now: i64,
) -> Result<(), CommitError> {
    let (user_name_key, email_key) = check_unique(conn, id, record).await?;
    sqlx::query(
        "INSERT INTO users (id, login_id, login_id_key, email, email_key, first_name, last_name, \
         active, cl_auth_enabled, created_at, updated_at, scim_user_name, scim_user_name_key, \
         scim_external_id, scim_managed, scim_version, role, directory_number, mobile, did, \
         company, street_address, city, postal_code, country) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, $2, $3, $10, 1, 1, $11, $12, $13, $14, \
         $15, $16, $17, $18, $19)",
    )
    .bind(id)
    .bind(&record.user_name)
    .bind(&user_name_key)
    .bind(record.email.as_deref().unwrap_or_default())
    .bind(&email_key)
    .bind(record.given_name.as_deref().unwrap_or_default())
    .bind(record.family_name.as_deref().unwrap_or_default())
    .bind(i64::from(record.active))
    .bind(now)
    .bind(&record.external_id)
    .bind(&record.role)
    .bind(&record.directory_number)
    .bind(&record.mobile)
    .bind(&record.did)
    .bind(&record.company)
    .bind(&record.street_address)
    .bind(&record.city)
    .bind(&record.postal_code)
    .bind(&record.country)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn update_user(
    conn: &mut AnyConnection,
    id: &str,
    record: &UserRecord,
    expected_version: i64,
    now: i64,
) -> Result<(), CommitError> {
    let current: Option<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT scim_version, login_id_key, scim_user_name_key FROM users \
         WHERE id = $1 AND is_admin = 0",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((version, login_id_key, old_user_name_key)) = current else {
        return Err(CommitError::NotFound(id.to_owned()));
    };
    if version != expected_version {
        return Err(CommitError::VersionMismatch);
    }
    let (user_name_key, email_key) = check_unique(conn, id, record).await?;
    // The login ID follows a renamed userName, unless single sign-on has
    // already replaced it with the email address.
    let old_user_name_key = old_user_name_key.unwrap_or_else(|| login_id_key.clone());
    let follow_rename = login_id_key == old_user_name_key;
    sqlx::query(
        "UPDATE users SET email = $2, email_key = $3, first_name = $4, last_name = $5, \
         active = $6, updated_at = $7, scim_user_name = $8, scim_user_name_key = $9, \
         scim_external_id = $10, scim_managed = 1, scim_version = scim_version + 1, role = $11, \
         directory_number = $12, mobile = $13, did = $14, company = $15, street_address = $16, \
         city = $17, postal_code = $18, country = $19, \
         login_id = CASE WHEN $20 THEN $8 ELSE login_id END, \
         login_id_key = CASE WHEN $20 THEN $9 ELSE login_id_key END \
         WHERE id = $1 AND is_admin = 0",
    )
    .bind(id)
    .bind(record.email.as_deref().unwrap_or_default())
    .bind(&email_key)
    .bind(record.given_name.as_deref().unwrap_or_default())
    .bind(record.family_name.as_deref().unwrap_or_default())
    .bind(i64::from(record.active))
    .bind(now)
    .bind(&record.user_name)
    .bind(&user_name_key)
    .bind(&record.external_id)
    .bind(&record.role)
    .bind(&record.directory_number)
    .bind(&record.mobile)
    .bind(&record.did)
    .bind(&record.company)
    .bind(&record.street_address)
    .bind(&record.city)
    .bind(&record.postal_code)
    .bind(&record.country)
    .bind(follow_rename)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SqlScimStore {
    /// Starts a transaction that runs alone (see `db::begin_exclusive`):
    /// provisioning checks uniqueness before it writes, and the IdP sends
    /// concurrent requests.
    async fn write_transaction(&self) -> Result<DbTransaction, sqlx::Error> {
        db::begin_exclusive(&self.pool).await
    }

    async fn find_user_in(
        conn: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<StoredUser>, sqlx::Error> {
        // Administrators are out of the IdP's reach: a provisioning token
        // must not be able to rename, deactivate or delete an admin account.
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND is_admin = 0");
        let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
        row.as_ref().map(user_from_row).transpose()
    }
}

#[async_trait]
impl ScimStore for SqlScimStore {
    async fn token_hash(&self) -> Result<Option<Vec<u8>>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT token_hash FROM scim_token WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn replace_token(
        &self,
        token_hash: &[u8],
        audit: AuditEvent,
        now: i64,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "INSERT INTO scim_token (id, token_hash, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET token_hash = $1, created_at = $2",
        )
        .bind(token_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_token(&self, audit: AuditEvent, now: i64) -> Result<bool, DirectoryError> {
        let mut tx = self.write_transaction().await?;
        let deleted = sqlx::query("DELETE FROM scim_token WHERE id = 1")
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            append_audit(&mut tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn settings(&self) -> Result<Settings, DirectoryError> {
        let row = sqlx::query(
            "SELECT defer_all, reinitialize, reinitialize_started_at, last_request_at \
             FROM scim_settings WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Settings::default());
        };
        Ok(Settings {
            defer_all: db::flag(&row, "defer_all")?,
            reinitialize: db::flag(&row, "reinitialize")?,
            reinitialize_started_at: row.try_get("reinitialize_started_at")?,
            last_request_at: row.try_get("last_request_at")?,
        })
    }

    async fn save_settings(&self, settings: Settings, now: i64) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO scim_settings (id, defer_all, reinitialize, reinitialize_started_at, \
             last_request_at, updated_at) VALUES (1, $1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET defer_all = $1, reinitialize = $2, \
             reinitialize_started_at = $3, last_request_at = $4, updated_at = $5",
        )
        .bind(i64::from(settings.defer_all))
        .bind(i64::from(settings.reinitialize))
        .bind(settings.reinitialize_started_at)
        .bind(settings.last_request_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_user(&self, id: &str) -> Result<Option<StoredUser>, DirectoryError> {
        let mut conn = self.pool.acquire().await?;
        Ok(Self::find_user_in(&mut conn, id).await?)
    }

    async fn find_by_user_name(&self, key: &str) -> Result<Option<StoredUser>, DirectoryError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE is_admin = 0 AND (scim_user_name_key = $1 \
             OR (scim_user_name_key IS NULL AND login_id_key = $1)) LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn list_users(&self) -> Result<Vec<StoredUser>, DirectoryError> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM users WHERE is_admin = 0 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn count_users(&self) -> Result<i64, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 0")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn list_users_page(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<StoredUser>, DirectoryError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE is_admin = 0 \
             ORDER BY created_at, id LIMIT $1 OFFSET $2"
        );
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn commit(&self, commit: Commit, now: i64) -> Result<Option<StoredUser>, CommitError> {
        let mut tx = self.write_transaction().await?;
        let id = match &commit.write {
            UserWrite::Insert { id, record } => {
                insert_user(&mut tx, id, record, now).await?;
                Some(id.clone())
            }
            UserWrite::Update {
                id,
                record,
                expected_version,
            } => {
                update_user(&mut tx, id, record, *expected_version, now).await?;
                Some(id.clone())
            }
            UserWrite::Delete { id } => {
                let deleted = sqlx::query("DELETE FROM users WHERE id = $1 AND is_admin = 0")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if deleted.rows_affected() == 0 {
                    return Err(CommitError::NotFound(id.clone()));
                }
                None
            }
        };
        if let Some(entry) = commit.resolve_detained {
            sqlx::query("DELETE FROM scim_detained WHERE id = $1")
                .bind(entry)
                .execute(&mut *tx)
                .await?;
        }
        append_audit(&mut tx, commit.audit, now).await?;
        let stored = match id {
            Some(id) => Self::find_user_in(&mut tx, &id).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(stored)
    }

    async fn detain(
        &self,
        entry: NewDetained,
        audit: AuditEvent,
        now: i64,
    ) -> Result<i64, DirectoryError> {
        let mut tx = self.write_transaction().await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM scim_detained WHERE operation = $1 AND user_id = $2 AND payload = $3 \
             ORDER BY id LIMIT 1",
        )
        .bind(entry.operation.as_str())
        .bind(&entry.user_id)
        .bind(&entry.payload)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match existing {
            Some(id) => {
                sqlx::query("UPDATE scim_detained SET reason = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&entry.reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO scim_detained (operation, user_id, user_name, reason, payload, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
                )
                .bind(entry.operation.as_str())
                .bind(&entry.user_id)
                .bind(&entry.user_name)
                .bind(&entry.reason)
                .bind(&entry.payload)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let audit = AuditEvent {
            detail: Some(format!(
                "detained entry {id}: {}",
                audit.detail.as_deref().unwrap_or(&entry.reason)
            )),
            ..audit
        };
        append_audit(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn detained(&self) -> Result<Vec<DetainedEntry>, DirectoryError> {
        let rows = sqlx::query("SELECT * FROM scim_detained ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(entry_from_row).collect::<Result<_, _>>()?)
    }

    async fn detained_entry(&self, id: i64) -> Result<Option<DetainedEntry>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM scim_detained WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(entry_from_row).transpose()?)
    }

    async fn pending_create(&self, user_id: &str) -> Result<Option<DetainedEntry>, DirectoryError> {
        let row = sqlx::query(
            "SELECT * FROM scim_detained WHERE operation = 'create' AND user_id = $1 ORDER BY id LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(entry_from_row).transpose()?)
    }

    async fn pending_create_by_user_name(
        &self,
        key: &str,
    ) -> Result<Option<DetainedEntry>, DirectoryError> {
        let rows =
            sqlx::query("SELECT * FROM scim_detained WHERE operation = 'create' ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        for row in &rows {
            let entry = entry_from_row(row)?;
            let matches = entry
                .user_name
                .as_deref()
                .and_then(|name| identifier_key(name).ok())
                .is_some_and(|entry_key| entry_key == key);
            if matches {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    async fn update_detained(
        &self,
        id: i64,
        reason: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "UPDATE scim_detained SET reason = $2, payload = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(reason)
        .bind(payload)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn cancel_detained(
        &self,
        id: i64,
        audit: AuditEvent,
        now: i64,
    ) -> Result<bool, DirectoryError> {
        let mut tx = self.write_transaction().await?;
        let deleted = sqlx::query("DELETE FROM scim_detained WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            append_audit(&mut tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
