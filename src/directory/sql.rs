//! SQLite implementation of the directory traits.

use crate::db;
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    AuditEvent, AuditLog, DirectoryError, FailureRecord, FailureStore, NewUser, PendingSamlRequest,
    SamlStore, StoredSpKeyPair, User, UserCount, UserStore, identifier_key,
};
use crate::db::DbPool;

#[derive(Clone)]
pub struct SqlDirectory {
    pool: DbPool,
}

impl SqlDirectory {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }
}

const USER_COLUMNS: &str = "id, login_id, email, first_name, last_name, password_hash, \
     must_change_password, active, cl_auth_enabled, totp_secret, cl_password_hash, created_at, \
     last_login_at";

/// Binds the fields of `event` to the next six parameters of `query`, in the
/// order of the `audit_events` columns from `kind` to `detail`.
pub(crate) fn bind_audit_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    event: AuditEvent,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(event.kind)
        .bind(event.outcome)
        .bind(event.user_id)
        .bind(event.identifier)
        .bind(event.client_ip)
        .bind(event.detail)
}

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        login_id: row.try_get("login_id")?,
        email: row.try_get("email")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        password_hash: row.try_get("password_hash")?,
        must_change_password: db::flag(row, "must_change_password")?,
        active: db::flag(row, "active")?,
        cl_auth_enabled: db::flag(row, "cl_auth_enabled")?,
        totp_secret: row.try_get("totp_secret")?,
        cl_password_hash: row.try_get("cl_password_hash")?,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

/// Returns the id of the user whose email or login ID already has `key`.
async fn holder_of_key(
    conn: &mut sqlx::AnyConnection,
    key: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE email_key = $1 OR login_id_key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await
}

#[async_trait]
impl UserStore for SqlDirectory {
    async fn find_by_key(&self, key: &str) -> Result<Option<User>, DirectoryError> {
        // An email match wins over a login-ID match, because a user's login ID
        // may equal their own email after the first single sign-on.
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email_key = $1 OR login_id_key = $1 \
             ORDER BY (email_key = $1) DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(self.pool.inline())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn find_by_id(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool.inline())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn count(&self) -> Result<UserCount, DirectoryError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
             COUNT(CASE WHEN cl_auth_enabled = 1 THEN 1 END) AS cl_auth \
             FROM users",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(UserCount {
            total: row.try_get("total")?,
            cl_auth: row.try_get("cl_auth")?,
        })
    }

    async fn list(&self) -> Result<Vec<User>, DirectoryError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY login_id_key");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn create(&self, user: NewUser, now: i64) -> Result<User, DirectoryError> {
        let login_id_key = identifier_key(&user.login_id)?;
        let email_key = identifier_key(&user.email)?;

        let mut tx = db::begin_exclusive(&self.pool).await?;
        if holder_of_key(&mut tx, &login_id_key).await?.is_some() {
            return Err(DirectoryError::Duplicate {
                field: "login ID",
                value: user.login_id,
            });
        }
        if holder_of_key(&mut tx, &email_key).await?.is_some() {
            return Err(DirectoryError::Duplicate {
                field: "email",
                value: user.email,
            });
        }

        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO users (id, login_id, login_id_key, email, email_key, first_name, \
             last_name, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&id)
        .bind(user.login_id.trim())
        .bind(&login_id_key)
        .bind(user.email.trim())
        .bind(&email_key)
        .bind(user.first_name.trim())
        .bind(user.last_name.trim())
        .bind(&user.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        self.find_by_id(&id)
            .await?
            .ok_or(DirectoryError::UnknownUser(id))
    }

    async fn set_password(
        &self,
        id: &str,
        password_hash: &str,
        must_change: bool,
        now: i64,
    ) -> Result<(), DirectoryError> {
        let result = sqlx::query(
            "UPDATE users SET password_hash = $2, must_change_password = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(password_hash)
        .bind(i64::from(must_change))
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        if result.rows_affected() == 0 {
            return Err(DirectoryError::UnknownUser(id.to_owned()));
        }
        Ok(())
    }

    async fn set_totp(
        &self,
        id: &str,
        secret: Option<&str>,
        recovery_code_hashes: &[String],
        now: i64,
    ) -> Result<(), DirectoryError> {
        let mut tx = db::begin_write(&self.pool).await?;
        let result = sqlx::query(
            "UPDATE users SET totp_secret = $2, totp_last_step = NULL, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(secret)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(DirectoryError::UnknownUser(id.to_owned()));
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for code_hash in recovery_code_hashes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(id)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool, DirectoryError> {
        // One conditional UPDATE, so two requests racing with the same code
        // cannot both succeed.
        let result = sqlx::query(
            "UPDATE users SET totp_last_step = $2 \
             WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(id)
        .bind(step)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn consume_recovery_code(
        &self,
        id: &str,
        code_hash: &str,
        now: i64,
    ) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 \
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        )
        .bind(id)
        .bind(code_hash)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn remaining_recovery_codes(&self, id: &str) -> Result<u32, DirectoryError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(id)
        .fetch_one(self.pool.inline())
        .await?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    async fn find_by_email_key(&self, key: &str) -> Result<Option<User>, DirectoryError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_key = $1");
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(self.pool.inline())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn spend_temporary_password(&self, id: &str, now: i64) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2 \
             WHERE id = $1 AND must_change_password = 1 AND password_hash IS NOT NULL",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn set_cl_auth(&self, id: &str, enabled: bool, now: i64) -> Result<(), DirectoryError> {
        let query =
            sqlx::query("UPDATE users SET cl_auth_enabled = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(i64::from(enabled))
                .bind(now);
        self.update_user(id, query).await
    }

    async fn set_cl_password(
        &self,
        id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), DirectoryError> {
        let query =
            sqlx::query("UPDATE users SET cl_password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(password_hash)
                .bind(now);
        self.update_user(id, query).await
    }

    async fn set_login_id(&self, id: &str, login_id: &str, now: i64) -> Result<(), DirectoryError> {
        let key = identifier_key(login_id)?;
        let mut tx = db::begin_exclusive(&self.pool).await?;
        if let Some(holder) = holder_of_key(&mut tx, &key).await?
            && holder != id
        {
            return Err(DirectoryError::Duplicate {
                field: "login ID",
                value: login_id.to_owned(),
            });
        }
        let result = sqlx::query(
            "UPDATE users SET login_id = $2, login_id_key = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(login_id)
        .bind(&key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(DirectoryError::UnknownUser(id.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_sign_in(
        &self,
        id: &str,
        lockout_key: &str,
        event: AuditEvent,
        now: i64,
    ) -> Result<(), DirectoryError> {
        // Three writes in one call, because each call costs every sign-in a
        // round trip to the server (PostgreSQL), or a hand-off to a worker
        // thread when SQLite's inline connections are busy. PostgreSQL
        // applies them as one statement; on SQLite `inline` runs the three
        // in one transaction.
        let sql = match self.pool.engine() {
            db::Engine::Sqlite => {
                "DELETE FROM login_failures WHERE subject_key = $1; \
                 UPDATE users SET last_login_at = $2 WHERE id = $3; \
                 INSERT INTO audit_events (at, kind, outcome, user_id, identifier, client_ip, detail) \
                 VALUES ($2, $4, $5, $6, $7, $8, $9)"
            }
            db::Engine::Postgres => {
                "WITH cleared AS (DELETE FROM login_failures WHERE subject_key = $1), \
                 stamped AS (UPDATE users SET last_login_at = $2 WHERE id = $3) \
                 INSERT INTO audit_events (at, kind, outcome, user_id, identifier, client_ip, detail) \
                 VALUES ($2, $4, $5, $6, $7, $8, $9)"
            }
        };
        let query = sqlx::query(sql).bind(lockout_key).bind(now).bind(id);
        bind_audit_event(query, event)
            .execute(self.pool.inline())
            .await?;
        Ok(())
    }
}

impl SqlDirectory {
    async fn update_user<'q>(
        &self,
        id: &str,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<(), DirectoryError> {
        let result = query.execute(self.pool.inline()).await?;
        if result.rows_affected() == 0 {
            return Err(DirectoryError::UnknownUser(id.to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl FailureStore for SqlDirectory {
    async fn failures(&self, subject_key: &str) -> Result<FailureRecord, DirectoryError> {
        let row =
            sqlx::query("SELECT failures, locked_until FROM login_failures WHERE subject_key = $1")
                .bind(subject_key)
                .fetch_optional(self.pool.inline())
                .await?;
        let Some(row) = row else {
            return Ok(FailureRecord::default());
        };
        let failures: i64 = row.try_get("failures")?;
        Ok(FailureRecord {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            locked_until: row.try_get("locked_until")?,
        })
    }

    async fn save_failures(
        &self,
        subject_key: &str,
        record: FailureRecord,
        now: i64,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO login_failures (subject_key, failures, locked_until, last_failure) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject_key) DO UPDATE SET failures = $2, locked_until = $3, \
             last_failure = $4",
        )
        .bind(subject_key)
        .bind(i64::from(record.failures))
        .bind(record.locked_until)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(())
    }

    async fn replace_failures(
        &self,
        subject_key: &str,
        expected: FailureRecord,
        new: FailureRecord,
        now: i64,
    ) -> Result<bool, DirectoryError> {
        let replaced = if expected == FailureRecord::default() {
            // No record, or one that a success reset to nothing.
            sqlx::query(
                "INSERT INTO login_failures (subject_key, failures, locked_until, last_failure) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (subject_key) DO UPDATE SET failures = $2, locked_until = $3, \
                 last_failure = $4 \
                 WHERE login_failures.failures = 0 AND login_failures.locked_until = 0",
            )
            .bind(subject_key)
            .bind(i64::from(new.failures))
            .bind(new.locked_until)
            .bind(now)
            .execute(self.pool.inline())
            .await?
        } else {
            sqlx::query(
                "UPDATE login_failures SET failures = $2, locked_until = $3, last_failure = $4 \
                 WHERE subject_key = $1 AND failures = $5 AND locked_until = $6",
            )
            .bind(subject_key)
            .bind(i64::from(new.failures))
            .bind(new.locked_until)
            .bind(now)
            .bind(i64::from(expected.failures))
            .bind(expected.locked_until)
            .execute(self.pool.inline())
            .await?
        };
        Ok(replaced.rows_affected() == 1)
    }

    async fn forgive_failure(&self, subject_key: &str) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE login_failures SET failures = failures - 1 \
             WHERE subject_key = $1 AND failures > 0",
        )
        .bind(subject_key)
        .execute(self.pool.inline())
        .await?;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for SqlDirectory {
    async fn append(&self, event: AuditEvent, now: i64) -> Result<(), DirectoryError> {
        let query = sqlx::query(
            "INSERT INTO audit_events (at, kind, outcome, user_id, identifier, client_ip, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now);
        bind_audit_event(query, event)
            .execute(self.pool.inline())
            .await?;
        Ok(())
    }
}

async fn read_sp_key_pair(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<StoredSpKeyPair>, sqlx::Error> {
    let row =
        sqlx::query("SELECT private_key_pem, certificate_pem FROM saml_sp_key_pair WHERE id = 1")
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredSpKeyPair {
        private_key_pem: row.try_get("private_key_pem")?,
        certificate_pem: row.try_get("certificate_pem")?,
    }))
}

#[async_trait]
impl SamlStore for SqlDirectory {
    async fn load_sp_key_pair(&self) -> Result<Option<StoredSpKeyPair>, DirectoryError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read_sp_key_pair(&mut conn).await?)
    }

    async fn add_first_sp_key_pair(
        &self,
        pair: &StoredSpKeyPair,
        now: i64,
    ) -> Result<(StoredSpKeyPair, bool), DirectoryError> {
        // Instances that start together must all end up with the pair that
        // the first of them stores.
        let mut tx = db::begin_exclusive(&self.pool).await?;
        if let Some(existing) = read_sp_key_pair(&mut tx).await? {
            tx.commit().await?;
            return Ok((existing, false));
        }
        sqlx::query(
            "INSERT INTO saml_sp_key_pair (id, private_key_pem, certificate_pem, created_at) \
             VALUES (1, $1, $2, $3)",
        )
        .bind(&pair.private_key_pem)
        .bind(&pair.certificate_pem)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((pair.clone(), true))
    }

    async fn load_idp_settings(&self) -> Result<Option<String>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT settings FROM saml_idp_settings WHERE id = 1")
                .fetch_optional(self.pool.inline())
                .await?,
        )
    }

    async fn save_idp_settings(&self, settings_json: &str, now: i64) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO saml_idp_settings (id, settings, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET settings = $1, updated_at = $2",
        )
        .bind(settings_json)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(())
    }

    async fn delete_idp_settings(&self) -> Result<bool, DirectoryError> {
        let deleted = sqlx::query("DELETE FROM saml_idp_settings WHERE id = 1")
            .execute(self.pool.inline())
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn create_request(
        &self,
        id: &str,
        relay_key: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO saml_requests (id, relay_key, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(relay_key)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool.inline())
        .await?;
        Ok(())
    }

    async fn find_request_by_relay(
        &self,
        relay_key: &str,
    ) -> Result<Option<PendingSamlRequest>, DirectoryError> {
        let row = sqlx::query(
            "SELECT id, expires_at, consumed_at FROM saml_requests WHERE relay_key = $1",
        )
        .bind(relay_key)
        .fetch_optional(self.pool.inline())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let consumed_at: Option<i64> = row.try_get("consumed_at")?;
        Ok(Some(PendingSamlRequest {
            id: row.try_get("id")?,
            expires_at: row.try_get("expires_at")?,
            consumed: consumed_at.is_some(),
        }))
    }

    async fn complete_request(
        &self,
        id: &str,
        handoff_key: &str,
        handoff_expires_at: i64,
        result_json: &str,
        now: i64,
    ) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "UPDATE saml_requests SET consumed_at = $5, handoff_key = $2, handoff_expires_at = $3, \
             result = $4 WHERE id = $1 AND consumed_at IS NULL AND expires_at > $5",
        )
        .bind(id)
        .bind(handoff_key)
        .bind(handoff_expires_at)
        .bind(result_json)
        .bind(now)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn take_handoff(
        &self,
        handoff_key: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, DirectoryError> {
        let row = sqlx::query(
            "UPDATE saml_requests SET handoff_key = NULL WHERE handoff_key = $1 AND handoff_expires_at > $2 \
             RETURNING id, result",
        )
        .bind(handoff_key)
        .bind(now)
        .fetch_optional(self.pool.inline())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            row.try_get("id")?,
            row.try_get::<Option<String>, _>("result")?
                .unwrap_or_default(),
        )))
    }

    async fn record_assertion(
        &self,
        issuer: &str,
        assertion_id: &str,
        expires_at: i64,
    ) -> Result<bool, DirectoryError> {
        let result = sqlx::query(
            "INSERT INTO saml_assertions (issuer, assertion_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(issuer)
        .bind(assertion_id)
        .bind(expires_at)
        .execute(self.pool.inline())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn purge_expired(&self, now: i64) -> Result<(), DirectoryError> {
        sqlx::query("DELETE FROM saml_assertions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        // Completed requests stay a day for troubleshooting. Pending ones go at expiry.
        sqlx::query("DELETE FROM saml_requests WHERE expires_at < $1 - 86400 OR (consumed_at IS NULL AND expires_at < $1)")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn directory() -> SqlDirectory {
        let pool = db::connect_default("sqlite::memory:").await.unwrap();
        SqlDirectory::new(pool)
    }

    fn jane() -> NewUser {
        NewUser {
            login_id: "jdoe".into(),
            email: "Jane.Doe@Example.com".into(),
            first_name: "Jane".into(),
            last_name: "Doe".into(),
            password_hash: None,
        }
    }

    #[tokio::test]
    async fn create_then_find_by_either_identifier() {
        let dir = directory().await;
        let created = dir.create(jane(), 10).await.unwrap();
        let by_email = dir
            .find_by_key("jane.doe@example.com")
            .await
            .unwrap()
            .unwrap();
        let by_login = dir.find_by_key("jdoe").await.unwrap().unwrap();
        assert_eq!(by_email.id, created.id);
        assert_eq!(by_login.id, created.id);
        assert_eq!(by_email.email, "Jane.Doe@Example.com");
    }

    #[tokio::test]
    async fn create_rejects_duplicate_email_and_login() {
        let dir = directory().await;
        dir.create(jane(), 10).await.unwrap();

        let same_email = NewUser {
            login_id: "other".into(),
            email: "JANE.DOE@example.com".into(),
            ..jane()
        };
        let err = dir.create(same_email, 11).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::Duplicate { field: "email", .. }),
            "{err}"
        );

        let login_is_email = NewUser {
            login_id: "jane.doe@example.com".into(),
            email: "x@example.com".into(),
            ..jane()
        };
        let err = dir.create(login_is_email, 11).await.unwrap_err();
        assert!(
            matches!(
                err,
                DirectoryError::Duplicate {
                    field: "login ID",
                    ..
                }
            ),
            "{err}"
        );

        assert_eq!(dir.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn count_reports_total_and_cl_auth() {
        let dir = directory().await;
        assert_eq!(dir.count().await.unwrap(), UserCount::default());
        let user = dir.create(jane(), 10).await.unwrap();
        dir.create(
            NewUser {
                login_id: "ada".into(),
                email: "ada@example.com".into(),
                ..jane()
            },
            10,
        )
        .await
        .unwrap();
        dir.set_cl_auth(&user.id, true, 11).await.unwrap();
        assert_eq!(
            dir.count().await.unwrap(),
            UserCount {
                total: 2,
                cl_auth: 1
            }
        );
    }

    #[tokio::test]
    async fn concurrent_login_id_changes_succeed() {
        // A file database, because an in-memory one has a single connection
        // and so never runs two transactions at once.
        let folder = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", folder.path().join("directory.db").display());
        let dir = SqlDirectory::new(db::connect_default(&url).await.unwrap());
        let mut users = Vec::new();
        for index in 0..32 {
            let user = NewUser {
                login_id: format!("user{index}"),
                email: format!("user{index}@example.com"),
                ..jane()
            };
            users.push(dir.create(user, 10).await.unwrap());
        }

        let mut changes = tokio::task::JoinSet::new();
        for user in users {
            let dir = dir.clone();
            changes.spawn(async move {
                let result = dir.set_login_id(&user.id, &user.email, 11).await;
                (user.email, result)
            });
        }
        while let Some(joined) = changes.join_next().await {
            let (email, result) = joined.unwrap();
            assert!(result.is_ok(), "{email}: {}", result.unwrap_err());
        }
    }

    #[tokio::test]
    async fn totp_step_is_single_use() {
        let dir = directory().await;
        let user = dir.create(jane(), 10).await.unwrap();
        dir.set_totp(&user.id, Some("SECRET"), &[], 10)
            .await
            .unwrap();
        assert!(dir.consume_totp_step(&user.id, 100).await.unwrap());
        assert!(!dir.consume_totp_step(&user.id, 100).await.unwrap());
        assert!(!dir.consume_totp_step(&user.id, 99).await.unwrap());
        assert!(dir.consume_totp_step(&user.id, 101).await.unwrap());
    }

    #[tokio::test]
    async fn recovery_code_is_single_use() {
        let dir = directory().await;
        let user = dir.create(jane(), 10).await.unwrap();
        dir.set_totp(&user.id, Some("SECRET"), &["h1".into(), "h2".into()], 10)
            .await
            .unwrap();
        assert!(dir.consume_recovery_code(&user.id, "h1", 20).await.unwrap());
        assert!(!dir.consume_recovery_code(&user.id, "h1", 21).await.unwrap());
        assert!(
            !dir.consume_recovery_code(&user.id, "nope", 21)
                .await
                .unwrap()
        );
        assert_eq!(dir.remaining_recovery_codes(&user.id).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn sign_in_clears_failures_and_audits() {
        let dir = directory().await;
        let user = dir.create(jane(), 10).await.unwrap();
        let failed = FailureRecord {
            failures: 2,
            locked_until: 0,
        };
        dir.save_failures("user:jdoe", failed, 15).await.unwrap();
        dir.save_failures("user:other", failed, 15).await.unwrap();

        let event = AuditEvent {
            kind: "login",
            outcome: "success",
            user_id: Some(user.id.clone()),
            identifier: Some("jdoe".into()),
            client_ip: Some("192.0.2.4".into()),
            detail: Some("password".into()),
        };
        dir.record_sign_in(&user.id, "user:jdoe", event, 20)
            .await
            .unwrap();

        assert_eq!(
            dir.failures("user:jdoe").await.unwrap(),
            FailureRecord::default()
        );
        assert_eq!(dir.failures("user:other").await.unwrap(), failed);
        let stamped = dir.find_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(stamped.last_login_at, Some(20));
        let row = sqlx::query(
            "SELECT at, kind, outcome, user_id, identifier, client_ip, detail FROM audit_events",
        )
        .fetch_one(&dir.pool)
        .await
        .unwrap();
        let text = |column: &str| row.try_get::<Option<String>, _>(column).unwrap();
        assert_eq!(row.try_get::<i64, _>("at").unwrap(), 20);
        assert_eq!(text("kind").as_deref(), Some("login"));
        assert_eq!(text("outcome").as_deref(), Some("success"));
        assert_eq!(text("user_id"), Some(user.id));
        assert_eq!(text("identifier").as_deref(), Some("jdoe"));
        assert_eq!(text("client_ip").as_deref(), Some("192.0.2.4"));
        assert_eq!(text("detail").as_deref(), Some("password"));
    }
}
