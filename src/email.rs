//! Outgoing email: welcome emails with a temporary password and CloudLink
//! account-setup emails.
//!
//! Emails are queued in the `email_outbox` table in the same transaction as
//! the change they report, and a background worker sends them, so a request
//! never waits for a mail server. With `[email.smtp]` configured the worker
//! sends over SMTP (lettre, TLS through rustls); without it, it writes each
//! email as an `.eml` file into the outbox folder and logs the path. A failed
//! send is retried with exponential backoff; after the last attempt the row
//! stays in the table marked failed, with its error, and an error is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::db::{DbPool, DbTransaction};

/// Sends after this many failures stop; the email stays in the table.
const MAX_ATTEMPTS: i64 = 8;
const FIRST_RETRY_SECONDS: i64 = 30;
const MAX_RETRY_SECONDS: i64 = 3_600;
/// Emails sent per pass of the worker.
const BATCH: i64 = 20;
/// Seconds an instance keeps the lease on an email it is sending. Several instances share
/// the outbox, and the lease keeps them from sending the same email twice;
/// when an instance dies mid-send, the email is due again after the lease.
const SEND_LEASE_SECONDS: i64 = 300;

/// The `[email]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// Sender address, such as `Sign-in <noreply@example.com>`.
    pub from: String,
    /// Folder for `.eml` files when no SMTP server is configured.
    pub outbox_dir: PathBuf,
    pub smtp: Option<SmtpConfig>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            from: "unified-login <noreply@localhost>".into(),
            outbox_dir: PathBuf::from("data/outbox"),
            smtp: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    Starttls,
    /// No TLS at all; accepted only for a server on a loopback address.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    /// Better given as UNIFIED_LOGIN_EMAIL__SMTP__PASSWORD than in the file.
    #[serde(default, skip_serializing)]
    pub password: Option<SecretString>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// PEM file of the CA that issued the server's certificate, when the
    /// built-in list of public CAs does not include it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_timeout() -> u64 {
    20
}

impl EmailConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.from
            .parse::<Mailbox>()
            .with_context(|| format!("email.from '{}' is not a valid address", self.from))?;
        if let Some(smtp) = &self.smtp {
            let loopback = matches!(smtp.host.as_str(), "localhost" | "127.0.0.1" | "::1");
            if smtp.security == SmtpSecurity::None && !loopback {
                bail!(
                    "email.smtp.security = \"none\" is allowed only for a server on a loopback address; use \"starttls\" or \"tls\" for {}",
                    smtp.host
                );
            }
            if smtp.password.is_some() != smtp.username.is_some() {
                bail!("set both email.smtp.username and email.smtp.password, or neither");
            }
        }
        Ok(())
    }
}

/// An email to queue.
pub struct NewEmail<'a> {
    /// The purpose of the email, such as `welcome` or `account_setup`.
    pub kind: &'static str,
    pub user_id: Option<&'a str>,
    pub recipient: &'a str,
    pub subject: String,
    pub body: String,
}

/// Adds an email to the queue inside the caller's transaction.
pub async fn enqueue(
    tx: &mut DbTransaction,
    email: &NewEmail<'_>,
    now: i64,
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO email_outbox (id, kind, user_id, recipient, subject, body, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(email.kind)
    .bind(email.user_id)
    .bind(email.recipient)
    .bind(&email.subject)
    .bind(&email.body)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// One email's delivery state, for the admin API.
#[derive(Debug, Serialize)]
pub struct EmailStatus {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub created_at: i64,
    pub attempts: i64,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Sends queued emails: over SMTP when configured, else into the outbox folder.
pub struct Mailer {
    pool: DbPool,
    config: EmailConfig,
    from: Mailbox,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

impl Mailer {
    pub fn new(config: &EmailConfig, pool: DbPool, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let from = config
            .from
            .parse::<Mailbox>()
            .with_context(|| format!("email.from '{}' is not a valid address", config.from))?;
        let smtp = config.smtp.as_ref().map(smtp_transport).transpose()?;
        Ok(Self {
            pool,
            config: config.clone(),
            from,
            smtp,
            clock,
            wake: Notify::new(),
        })
    }

    /// Wakes the worker after a request queued an email.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Runs for ever, sending due emails.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(error) = self.send_due().await {
                tracing::error!(error = format!("{error:#}"), "sending queued emails failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Sends every email that is due now; returns how many were sent.
    pub async fn send_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let rows = sqlx::query(
            "SELECT id, kind, recipient, subject, body, attempts, next_attempt_at FROM email_outbox \
             WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY created_at LIMIT $2",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut sent = 0;
        for row in rows {
            let id: String = row.try_get("id")?;
            let due_at: i64 = row.try_get("next_attempt_at")?;
            let leased = sqlx::query(
                "UPDATE email_outbox SET next_attempt_at = $1 \
                 WHERE id = $2 AND next_attempt_at = $3 AND sent_at IS NULL AND failed_at IS NULL",
            )
            .bind(now + SEND_LEASE_SECONDS)
            .bind(&id)
            .bind(due_at)
            .execute(&self.pool)
            .await?;
            if leased.rows_affected() != 1 {
                // Another instance took this email first.
                continue;
            }
            let kind: String = row.try_get("kind")?;
            let recipient: String = row.try_get("recipient")?;
            let attempts: i64 = row.try_get("attempts")?;
            let result = self
                .deliver(
                    &id,
                    &recipient,
                    row.try_get("subject")?,
                    row.try_get("body")?,
                )
                .await;
            let now = self.clock.now();
            match result {
                Ok(where_to) => {
                    // The body can hold a temporary password, so it is not kept once sent.
                    sqlx::query(
                        "UPDATE email_outbox SET sent_at = $1, attempts = attempts + 1, body = '', last_error = NULL WHERE id = $2",
                    )
                    .bind(now)
                    .bind(&id)
                    .execute(&self.pool)
                    .await?;
                    tracing::info!(email.id = %id, kind = %kind, to = %recipient, via = %where_to, "email sent");
                    sent += 1;
                }
                Err(error) => {
                    let attempts = attempts + 1;
                    let message = format!("{error:#}");
                    if attempts >= MAX_ATTEMPTS {
                        sqlx::query(
                            // The body can hold a temporary password, so it goes
                            // with the last attempt; the row keeps the record.
                            "UPDATE email_outbox SET attempts = $1, failed_at = $2, last_error = $3, body = '' WHERE id = $4",
                        )
                        .bind(attempts)
                        .bind(now)
                        .bind(&message)
                        .bind(&id)
                        .execute(&self.pool)
                        .await?;
                        tracing::error!(email.id = %id, kind = %kind, to = %recipient, attempts, error = %message, "giving up on an email; it stays in the outbox table marked failed");
                    } else {
                        let delay = (FIRST_RETRY_SECONDS << (attempts - 1)).min(MAX_RETRY_SECONDS);
                        sqlx::query(
                            "UPDATE email_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4",
                        )
                        .bind(attempts)
                        .bind(now + delay)
                        .bind(&message)
                        .bind(&id)
                        .execute(&self.pool)
                        .await?;
                        tracing::warn!(email.id = %id, kind = %kind, to = %recipient, attempts, retry_in_seconds = delay, error = %message, "sending an email failed; will retry");
                    }
                }
            }
        }
        Ok(sent)
    }

    async fn deliver(
        &self,
        id: &str,
        recipient: &str,
        subject: String,
        body: String,
    ) -> anyhow::Result<String> {
        let to = recipient
            .parse::<Mailbox>()
            .with_context(|| format!("the recipient '{recipient}' is not a valid address"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        match &self.smtp {
            Some(transport) => {
                transport
                    .send(message)
                    .await
                    .context("the SMTP server rejected the email or could not be reached")?;
                let smtp = self
                    .config
                    .smtp
                    .as_ref()
                    .expect("SMTP settings exist with a transport");
                Ok(format!("smtp://{}:{}", smtp.host, smtp.port))
            }
            None => {
                let path = write_eml(&self.config.outbox_dir, id, &message.formatted()).await?;
                Ok(path.display().to_string())
            }
        }
    }

    /// Checks that the SMTP server accepts a connection; returns `None`
    /// without an SMTP server configured.
    pub async fn test_connection(&self) -> Option<anyhow::Result<()>> {
        let transport = self.smtp.as_ref()?;
        Some(match transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!("the server did not respond to NOOP")),
            Err(error) => Err(error.into()),
        })
    }

    /// Lists the most recent emails, newest first.
    pub async fn recent(&self, limit: i64) -> anyhow::Result<Vec<EmailStatus>> {
        let rows = sqlx::query(
            "SELECT id, kind, recipient, created_at, attempts, sent_at, failed_at, last_error \
             FROM email_outbox ORDER BY created_at DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EmailStatus {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    recipient: row.try_get("recipient")?,
                    created_at: row.try_get("created_at")?,
                    attempts: row.try_get("attempts")?,
                    sent_at: row.try_get("sent_at")?,
                    failed_at: row.try_get("failed_at")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }
}

fn smtp_transport(config: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut parameters = TlsParameters::builder(config.host.clone());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read email.smtp.ca_file {}", path.display()))?;
            let certificate = Certificate::from_pem(&pem).with_context(|| {
                format!(
                    "email.smtp.ca_file {} is not a PEM certificate",
                    path.display()
                )
            })?;
            parameters = parameters.add_root_certificate(certificate);
        }
        Ok(parameters.build_rustls()?)
    };
    // builder_dangerous only means that TLS is chosen here rather than by the
    // builder; the security setting always decides it.
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host);
    let builder = match config.security {
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::None => builder,
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(Duration::from_secs(config.timeout_seconds)));
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// Writes one email into the outbox folder. Setup emails carry single-use
/// links, so the folder and the files are readable by their owner alone.
async fn write_eml(dir: &Path, id: &str, formatted: &[u8]) -> anyhow::Result<PathBuf> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .with_context(|| format!("cannot create the outbox folder {}", dir.display()))?;
    let path = dir.join(format!("{id}.eml"));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    // tokio's file finishes a write in the background, so the flush is what
    // makes the email complete before its path is logged.
    file.write_all(formatted)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.flush()
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::write_eml;

    #[tokio::test]
    async fn outbox_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("data").join("outbox");
        let path = write_eml(&outbox, "first", b"Subject: hello\r\n\r\nbody")
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: hello\r\n\r\nbody");
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode(&path) & 0o777, 0o600);
        assert_eq!(mode(&outbox) & 0o777, 0o700);
    }
}
