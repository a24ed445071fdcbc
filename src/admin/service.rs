//! Administrative operations shared by the admin API and the command line:
//! bulk CL Auth changes, account-setup emails, the user summary report and
//! the audit log query.
//!
//! A bulk change runs one transaction per user, which covers the user's row,
//! the email that reports the change and the audit record. A failing user
//! therefore keeps its old state completely and does not stop the others.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use url::Url;

use crate::clock::Clock;
use crate::credentials::password::{PasswordHasher, check_strength};
use crate::db::{DbPool, DbTransaction};
use crate::directory::{User, UserStore, identifier_key};
use crate::email::{self, Mailer, NewEmail};
use crate::provider::tokens::{random_token, token_digest};

/// The texts administrators see when a change fails for a user; other
/// systems match on them, so they never change.
pub const ENABLE_FAILED: &str = "Failed to enable CloudLink Authentication.";
pub const DISABLE_FAILED: &str = "Failed to disable CloudLink Authentication.";
pub const SETUP_EMAIL_FAILED: &str = "Failed to send CloudLink Account setup Email.";

/// How long an account-setup link works.
pub const SETUP_LINK_HOURS: i64 = 72;

/// The users a bulk change applies to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selection {
    /// Login IDs or email addresses.
    Users(Vec<String>),
    /// Users whose login ID, email or name contains the text (case-insensitive).
    Matching(String),
    All,
}

/// The result for one user of a bulk change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserOutcome {
    /// The login ID, or the identifier as given when no user matched it.
    pub user: String,
    pub outcome: Outcome,
    /// The fixed failure text followed by the reason, for failures only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Changed,
    /// The user was already in the requested state; nothing was written.
    Unchanged,
    Failed,
}

/// The reason a whole bulk request was rejected before any user was touched.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the default password and its confirmation differ; enter the same password twice")]
    PasswordMismatch,
    #[error("the default password is too weak: {0}")]
    WeakPassword(String),
    #[error("no users match the selection")]
    EmptySelection,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What decides whether CL Auth users also get a Mitel-credentials password.
#[derive(Debug, Clone, Copy)]
pub struct ClAuthContext {
    /// An IdP (SAML or OpenID Connect) is configured.
    pub idp_configured: bool,
    /// CL Auth users get a separate Mitel-credentials password, because the
    /// IdP offers it or no IdP is configured.
    pub mitel_credentials: bool,
    /// An on-premises LDAP directory is the source of authentication, and
    /// only one source may be active, so CL Auth cannot be turned on.
    pub ldap_active: bool,
}

pub struct AdminService {
    pool: DbPool,
    users: Arc<dyn UserStore>,
    passwords: PasswordHasher,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    public_url: Url,
}

impl AdminService {
    pub fn new(
        pool: DbPool,
        users: Arc<dyn UserStore>,
        passwords: PasswordHasher,
        mailer: Arc<Mailer>,
        clock: Arc<dyn Clock>,
        public_url: Url,
    ) -> Self {
        Self {
            pool,
            users,
            passwords,
            mailer,
            clock,
            public_url,
        }
    }

    pub fn mailer(&self) -> &Arc<Mailer> {
        &self.mailer
    }

    /// Resolves a selection to users. Identifiers that match no user come
    /// back as failures, so the caller can report them next to the others.
    pub async fn select(&self, selection: &Selection) -> anyhow::Result<(Vec<User>, Vec<String>)> {
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        match selection {
            Selection::Users(identifiers) => {
                for identifier in identifiers {
                    let user = match identifier_key(identifier) {
                        Ok(key) => self.users.find_by_key(&key).await?,
                        Err(_) => None,
                    };
                    match user {
                        Some(user) if !found.iter().any(|seen: &User| seen.id == user.id) => {
                            found.push(user)
                        }
                        Some(_) => {}
                        None => unknown.push(identifier.clone()),
                    }
                }
            }
            Selection::Matching(text) => {
                let needle = text.trim().to_lowercase();
                for user in self.users.list().await? {
                    let haystack = format!(
                        "{} {} {} {}",
                        user.login_id, user.email, user.first_name, user.last_name
                    )
                    .to_lowercase();
                    if haystack.contains(&needle) {
                        found.push(user);
                    }
                }
            }
            Selection::All => found = self.users.list().await?,
        }
        Ok((found, unknown))
    }

    /// Turns CL Auth on for the selected users. When Mitel credentials apply,
    /// each user also gets an account-setup email in the same transaction.
    pub async fn enable_cl_auth(
        &self,
        selection: &Selection,
        context: ClAuthContext,
        actor: &str,
    ) -> Result<Vec<UserOutcome>, BulkError> {
        let (users, unknown) = self.select(selection).await?;
        if users.is_empty() && unknown.is_empty() {
            return Err(BulkError::EmptySelection);
        }
        let mut outcomes = unknown_outcomes(&unknown, ENABLE_FAILED);
        for user in users {
            let outcome = if context.ldap_active {
                failed(
                    &user,
                    ENABLE_FAILED,
                    "The on-premises LDAP directory is the source of authentication, and only one source of authentication may be active; remove [ldap] from the config file first.",
                )
            } else if user.cl_auth_enabled {
                unchanged(&user)
            } else if !context.idp_configured && !context.mitel_credentials {
                failed(
                    &user,
                    ENABLE_FAILED,
                    "no identity provider is configured; set one up first",
                )
            } else if !user.active {
                failed(&user, ENABLE_FAILED, "the account is deactivated")
            } else {
                match self.enable_one(&user, context, actor).await {
                    Ok(true) => changed(&user),
                    Ok(false) => unchanged(&user),
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), user.id = %user.id, "enabling CL Auth failed");
                        failed(
                            &user,
                            ENABLE_FAILED,
                            "the database change failed; try again",
                        )
                    }
                }
            };
            outcomes.push(outcome);
        }
        self.mailer.notify();
        Ok(outcomes)
    }

    async fn enable_one(
        &self,
        user: &User,
        context: ClAuthContext,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let mut tx = crate::db::begin_write(&self.pool).await?;
        // Conditional, so that of two concurrent requests only one changes
        // the user and sends an email.
        let updated = sqlx::query(
            "UPDATE users SET cl_auth_enabled = 1, updated_at = $1 WHERE id = $2 AND cl_auth_enabled = 0",
        )
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let mut detail = format!("by {actor}");
        if context.mitel_credentials {
            self.queue_setup_email(&mut tx, user, now).await?;
            detail.push_str("; account-setup email queued");
        }
        audit(&mut tx, "cl_auth.enable", Some(user), &detail, now).await?;
        tx.commit().await?;
        tracing::info!(user.id = %user.id, actor, "CL Auth enabled");
        Ok(true)
    }

    /// Turns CL Auth off for the selected users. The default password becomes
    /// each user's temporary local password, to be changed at the next
    /// sign-in, and each user gets a welcome email with it.
    pub async fn disable_cl_auth(
        &self,
        selection: &Selection,
        default_password: &SecretString,
        confirmation: &SecretString,
        actor: &str,
    ) -> Result<Vec<UserOutcome>, BulkError> {
        let password = default_password.expose_secret();
        if password.as_bytes() != confirmation.expose_secret().as_bytes() {
            return Err(BulkError::PasswordMismatch);
        }
        check_strength(password, &[])
            .map_err(|error| BulkError::WeakPassword(error.to_string()))?;
        let (users, unknown) = self.select(selection).await?;
        if users.is_empty() && unknown.is_empty() {
            return Err(BulkError::EmptySelection);
        }
        // One hash for the batch: every user gets the same password anyway.
        let hash = self.passwords.hash(default_password.clone()).await?;

        let mut outcomes = unknown_outcomes(&unknown, DISABLE_FAILED);
        for user in users {
            let outcome = if !user.cl_auth_enabled {
                unchanged(&user)
            } else if user.email.trim().is_empty() {
                failed(
                    &user,
                    DISABLE_FAILED,
                    "the user has no email address for the welcome email",
                )
            } else {
                match self.disable_one(&user, &hash, password, actor).await {
                    Ok(true) => changed(&user),
                    Ok(false) => unchanged(&user),
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), user.id = %user.id, "disabling CL Auth failed");
                        failed(
                            &user,
                            DISABLE_FAILED,
                            "the database change failed; try again",
                        )
                    }
                }
            };
            outcomes.push(outcome);
        }
        self.mailer.notify();
        Ok(outcomes)
    }

    async fn disable_one(
        &self,
        user: &User,
        hash: &str,
        password: &str,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let mut tx = crate::db::begin_write(&self.pool).await?;
        // The Mitel-credentials password and unused setup links belong to
        // CL Auth, so they end with it and cannot come back with a later
        // enable.
        let updated = sqlx::query(
            "UPDATE users SET cl_auth_enabled = 0, password_hash = $1, must_change_password = 1, \
             cl_password_hash = NULL, updated_at = $2 WHERE id = $3 AND cl_auth_enabled = 1",
        )
        .bind(hash)
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE setup_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let sign_in = self.public_url.join("login")?;
        let body = format!(
            "Hello {name},\n\n\
             You now sign in to your unified-communications account with a password.\n\n\
             Sign-in page: {sign_in}\n\
             Login ID: {login_id}\n\
             Temporary password: {password}\n\n\
             You will choose a new password when you first sign in. The temporary password works only once.\n",
            name = plain_name(user),
            login_id = user.login_id,
        );
        let email = NewEmail {
            kind: "welcome",
            user_id: Some(&user.id),
            recipient: &user.email,
            subject: "Your new sign-in password".into(),
            body,
        };
        email::enqueue(&mut tx, &email, now).await?;
        audit(
            &mut tx,
            "cl_auth.disable",
            Some(user),
            &format!("by {actor}; welcome email queued"),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user.id = %user.id, actor, "CL Auth disabled");
        Ok(true)
    }

    /// Queues a new account-setup email for a CL Auth user; links sent
    /// before stop working.
    pub async fn resend_setup_email(
        &self,
        identifier: &str,
        context: ClAuthContext,
        actor: &str,
    ) -> Result<UserOutcome, BulkError> {
        let (users, unknown) = self
            .select(&Selection::Users(vec![identifier.to_owned()]))
            .await?;
        let Some(user) = users.into_iter().next() else {
            return Ok(unknown_outcomes(&unknown, SETUP_EMAIL_FAILED).remove(0));
        };
        if !user.cl_auth_enabled {
            return Ok(failed(
                &user,
                SETUP_EMAIL_FAILED,
                "CL Auth is not enabled for this user",
            ));
        }
        if !context.mitel_credentials {
            return Ok(failed(
                &user,
                SETUP_EMAIL_FAILED,
                "Mitel credentials are turned off for the identity provider",
            ));
        }
        let now = self.clock.now();
        let result: anyhow::Result<()> = async {
            let mut tx = crate::db::begin_write(&self.pool).await?;
            self.queue_setup_email(&mut tx, &user, now).await?;
            audit(
                &mut tx,
                "cl_auth.setup_email",
                Some(&user),
                &format!("by {actor}"),
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.mailer.notify();
        Ok(match result {
            Ok(()) => changed(&user),
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), user.id = %user.id, "queueing an account-setup email failed");
                failed(
                    &user,
                    SETUP_EMAIL_FAILED,
                    "the database change failed; try again",
                )
            }
        })
    }

    async fn queue_setup_email(
        &self,
        tx: &mut DbTransaction,
        user: &User,
        now: i64,
    ) -> anyhow::Result<()> {
        sqlx::query("UPDATE setup_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(&user.id)
            .execute(&mut **tx)
            .await?;
        let token = random_token();
        sqlx::query("INSERT INTO setup_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_digest(&token))
            .bind(&user.id)
            .bind(now)
            .bind(now + SETUP_LINK_HOURS * 3_600)
            .execute(&mut **tx)
            .await?;
        let mut link = self.public_url.join("account/setup")?;
        link.query_pairs_mut().append_pair("token", &token);
        let body = format!(
            "Hello {name},\n\n\
             Your account now signs in through your company's identity provider (CloudLink authentication).\n\
             To also set a Mitel-credentials password, open this link within {SETUP_LINK_HOURS} hours. It works once.\n\n\
             {link}\n",
            name = plain_name(user),
        );
        let email = NewEmail {
            kind: "account_setup",
            user_id: Some(&user.id),
            recipient: &user.email,
            subject: "Set up your CloudLink account".into(),
            body,
        };
        email::enqueue(tx, &email, now).await?;
        Ok(())
    }

    /// Spends an account-setup link and sets the Mitel-credentials password.
    /// Returns the user's login ID, or `None` when the link is unknown,
    /// used or expired.
    pub async fn complete_setup(
        &self,
        token: &str,
        password: SecretString,
    ) -> anyhow::Result<Option<String>> {
        let now = self.clock.now();
        let hash = self.passwords.hash(password).await?;
        let mut tx = crate::db::begin_write(&self.pool).await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE setup_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = setup_tokens.user_id \
             AND u.cl_auth_enabled = 1 AND u.active = 1) RETURNING user_id",
        )
        .bind(now)
        .bind(token_digest(token))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        sqlx::query("UPDATE users SET cl_password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(&hash)
            .bind(now)
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        let login_id: String = sqlx::query_scalar("SELECT login_id FROM users WHERE id = $1")
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit_events (at, kind, outcome, user_id, identifier, detail) VALUES ($1, 'cl_auth.setup_completed', 'success', $2, $3, 'Mitel-credentials password set from the account-setup link')",
        )
        .bind(now)
        .bind(&user_id)
        .bind(&login_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(login_id))
    }

    /// Returns whether an account-setup link can still be used.
    pub async fn setup_link_valid(&self, token: &str) -> anyhow::Result<bool> {
        let valid: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM setup_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = setup_tokens.user_id \
             AND u.cl_auth_enabled = 1 AND u.active = 1)",
        )
        .bind(token_digest(token))
        .bind(self.clock.now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(valid.is_some())
    }

    /// Builds the user summary report as CSV (RFC 4180).
    pub async fn user_report_csv(&self) -> anyhow::Result<String> {
        let rows = sqlx::query(
            "SELECT first_name, last_name, email, ucc_bundle, department, location FROM users ORDER BY last_name, first_name, email",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut csv = String::from("First Name,Last Name,Email,UCC Bundle,Department,Location\r\n");
        for row in rows {
            let fields: Vec<Option<String>> = (0..6)
                .map(|index| row.try_get(index))
                .collect::<Result<_, _>>()?;
            let line: Vec<String> = fields
                .iter()
                .map(|field| csv_field(field.as_deref().unwrap_or("")))
                .collect();
            csv.push_str(&line.join(","));
            csv.push_str("\r\n");
        }
        Ok(csv)
    }

    /// Returns audit records, newest first, optionally for one user and a time range.
    pub async fn audit(&self, query: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
        let user_id = match &query.user {
            None => None,
            Some(identifier) => {
                let key = identifier_key(identifier)
                    .map_err(|error| anyhow::anyhow!("user '{identifier}': {error}"))?;
                match self.users.find_by_key(&key).await? {
                    Some(user) => Some(user.id),
                    // Records of removed or unknown accounts are kept under the typed identifier.
                    None => Some(String::new()),
                }
            }
        };
        let rows = sqlx::query(
            "SELECT id, at, kind, outcome, user_id, identifier, client_ip, detail FROM audit_events \
             WHERE ($1 IS NULL OR user_id = $1 OR ($1 = '' AND identifier = $2)) \
             AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4) \
             ORDER BY at DESC, id DESC LIMIT $5",
        )
        .bind(&user_id)
        .bind(&query.user)
        .bind(query.since)
        .bind(query.until)
        .bind(query.limit.unwrap_or(100).clamp(1, 1_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    outcome: row.try_get("outcome")?,
                    user_id: row.try_get("user_id")?,
                    identifier: row.try_get("identifier")?,
                    client_ip: row.try_get("client_ip")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Login ID or email.
    pub user: Option<String>,
    /// Unix time in seconds, inclusive.
    pub since: Option<i64>,
    /// Unix time in seconds, exclusive.
    pub until: Option<i64>,
    /// At most 1,000; 100 by default.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub identifier: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

async fn audit(
    tx: &mut DbTransaction,
    kind: &str,
    user: Option<&User>,
    detail: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_events (at, kind, outcome, user_id, identifier, detail) VALUES ($1, $2, 'success', $3, $4, $5)")
        .bind(now)
        .bind(kind)
        .bind(user.map(|user| user.id.as_str()))
        .bind(user.map(|user| user.login_id.as_str()))
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn changed(user: &User) -> UserOutcome {
    UserOutcome {
        user: user.login_id.clone(),
        outcome: Outcome::Changed,
        error: None,
    }
}

fn unchanged(user: &User) -> UserOutcome {
    UserOutcome {
        user: user.login_id.clone(),
        outcome: Outcome::Unchanged,
        error: None,
    }
}

fn failed(user: &User, text: &str, reason: &str) -> UserOutcome {
    UserOutcome {
        user: user.login_id.clone(),
        outcome: Outcome::Failed,
        error: Some(format!("{text} {reason}")),
    }
}

fn unknown_outcomes(identifiers: &[String], text: &str) -> Vec<UserOutcome> {
    identifiers
        .iter()
        .map(|identifier| UserOutcome {
            user: identifier.clone(),
            outcome: Outcome::Failed,
            error: Some(format!(
                "{text} No user has the login ID or email '{identifier}'."
            )),
        })
        .collect()
}

/// Returns the user's name for an email body, with control characters
/// (which names provisioned by an IdP may contain) turned into spaces.
fn plain_name(user: &User) -> String {
    user.display_name()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Quotes a CSV field when needed, and defuses values that spreadsheet
/// programs would run as formulas.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    // A `;` is quoted too: spreadsheets set to a `;` separator would
    // otherwise start a new cell there, which could hold a formula.
    if value.contains([',', ';', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
        assert_eq!(csv_field("x;=1+1"), "\"x;=1+1\"");
    }
}
