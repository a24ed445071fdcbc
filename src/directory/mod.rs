//! The user directory: accounts, their credentials, failed-attempt counters
//! and the audit trail, behind capability traits so that the login flow does
//! not depend on one database engine.

pub mod identifier;
pub mod sql;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use identifier::{
    EmailError, IdentifierError, MAX_IDENTIFIER_CHARS, identifier_key, parse_email,
};

/// Stable, opaque user identifier (a UUID), never shown as a login name.
pub type UserId = String;

#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub login_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub active: bool,
    pub cl_auth_enabled: bool,
    pub totp_secret: Option<String>,
    /// Hash of the separate "Mitel credentials" password of CL Auth users.
    pub cl_password_hash: Option<String>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

// Credentials stay out of `Debug` so that a stray `?user` in a log line leaks nothing.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("login_id", &self.login_id)
            .field("active", &self.active)
            .field("cl_auth_enabled", &self.cl_auth_enabled)
            .field("totp_enrolled", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_owned()
    }

    pub fn has_second_factor(&self) -> bool {
        self.totp_secret.is_some()
    }
}

/// Fields of a user that the administrator supplies.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{field} '{value}' is already used by another user")]
    Duplicate { field: &'static str, value: String },
    #[error("no user has the login ID or email '{0}'")]
    UnknownUser(String),
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// How many users the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserCount {
    pub total: i64,
    pub cl_auth: i64,
}

/// Consecutive failures recorded for one account or typed identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureRecord {
    pub failures: u32,
    pub locked_until: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Finds the user whose email or login ID has the given normalised key.
    async fn find_by_key(&self, key: &str) -> Result<Option<User>, DirectoryError>;
    async fn find_by_id(&self, id: &str) -> Result<Option<User>, DirectoryError>;
    async fn list(&self) -> Result<Vec<User>, DirectoryError>;
    /// Counts all users and those with CL Auth enabled, without loading them.
    async fn count(&self) -> Result<UserCount, DirectoryError>;
    async fn create(&self, user: NewUser, now: i64) -> Result<User, DirectoryError>;
    async fn set_password(
        &self,
        id: &str,
        password_hash: &str,
        must_change: bool,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Stores a confirmed TOTP secret with its recovery-code digests, replacing
    /// any earlier enrolment, or removes both when `secret` is `None`.
    async fn set_totp(
        &self,
        id: &str,
        secret: Option<&str>,
        recovery_code_hashes: &[String],
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Marks a TOTP time step as used. Returns false when that step or a later
    /// one was already used, which is how a replayed code is detected.
    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool, DirectoryError>;
    /// Marks a recovery code as used. Returns false when it is unknown or spent.
    async fn consume_recovery_code(
        &self,
        id: &str,
        code_hash: &str,
        now: i64,
    ) -> Result<bool, DirectoryError>;
    async fn remaining_recovery_codes(&self, id: &str) -> Result<u32, DirectoryError>;
    /// Records a successful sign-in of user `id`: clears the failures
    /// counted under `lockout_key`, stamps the last login and appends
    /// `event` to the audit log, all in one round trip to the database.
    async fn record_sign_in(
        &self,
        id: &str,
        lockout_key: &str,
        event: AuditEvent,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Removes a temporary password (one that must be changed) after its one
    /// use; returns false when it was already gone.
    async fn spend_temporary_password(&self, id: &str, now: i64) -> Result<bool, DirectoryError>;
    /// Finds the user whose primary email has the given normalised key.
    async fn find_by_email_key(&self, key: &str) -> Result<Option<User>, DirectoryError>;
    async fn set_cl_auth(&self, id: &str, enabled: bool, now: i64) -> Result<(), DirectoryError>;
    async fn set_cl_password(
        &self,
        id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Replaces the login ID, failing when another user already has it as login ID or email.
    async fn set_login_id(&self, id: &str, login_id: &str, now: i64) -> Result<(), DirectoryError>;
}

#[async_trait]
pub trait FailureStore: Send + Sync {
    async fn failures(&self, subject_key: &str) -> Result<FailureRecord, DirectoryError>;
    async fn save_failures(
        &self,
        subject_key: &str,
        record: FailureRecord,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Replaces the record with `new` only while it still equals `expected`
    /// (a missing record equals the default one); returns whether it did.
    async fn replace_failures(
        &self,
        subject_key: &str,
        expected: FailureRecord,
        new: FailureRecord,
        now: i64,
    ) -> Result<bool, DirectoryError>;
    /// Takes one failure off the count, leaving any lock as it is.
    async fn forgive_failure(&self, subject_key: &str) -> Result<(), DirectoryError>;
}

/// One entry of the audit trail. Never carries a password, code or token.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub kind: &'static str,
    pub outcome: &'static str,
    pub user_id: Option<String>,
    pub identifier: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append(&self, event: AuditEvent, now: i64) -> Result<(), DirectoryError>;
}

/// A pending AuthnRequest as stored between the redirect and the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSamlRequest {
    pub id: String,
    pub expires_at: i64,
    pub consumed: bool,
}

/// The SAML SP key pair as stored in the database, both parts as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSpKeyPair {
    pub private_key_pem: String,
    pub certificate_pem: String,
}

// Written by hand so that the private key never reaches a log or a panic message.
impl std::fmt::Debug for StoredSpKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSpKeyPair")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// Storage for the SAML service provider, shared by all broker instances.
#[async_trait]
pub trait SamlStore: Send + Sync {
    /// Returns the SP key pair stored in the database, if there is one.
    async fn load_sp_key_pair(&self) -> Result<Option<StoredSpKeyPair>, DirectoryError>;
    /// Stores `pair` unless the database has a pair already. Returns the
    /// pair that the database has afterwards, and true when that is `pair`.
    async fn add_first_sp_key_pair(
        &self,
        pair: &StoredSpKeyPair,
        now: i64,
    ) -> Result<(StoredSpKeyPair, bool), DirectoryError>;
    async fn load_idp_settings(&self) -> Result<Option<String>, DirectoryError>;
    async fn save_idp_settings(&self, settings_json: &str, now: i64) -> Result<(), DirectoryError>;
    /// Deletes the saved IdP settings. Returns false when none were saved.
    async fn delete_idp_settings(&self) -> Result<bool, DirectoryError>;
    async fn create_request(
        &self,
        id: &str,
        relay_key: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DirectoryError>;
    async fn find_request_by_relay(
        &self,
        relay_key: &str,
    ) -> Result<Option<PendingSamlRequest>, DirectoryError>;
    /// Marks the request completed and parks `result` under `handoff_key`.
    /// Returns false when it was already completed or has expired.
    async fn complete_request(
        &self,
        id: &str,
        handoff_key: &str,
        handoff_expires_at: i64,
        result_json: &str,
        now: i64,
    ) -> Result<bool, DirectoryError>;
    /// Takes the parked result once: returns the request id and the result.
    async fn take_handoff(
        &self,
        handoff_key: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, DirectoryError>;
    /// Records an accepted assertion. Returns false when it was seen before.
    async fn record_assertion(
        &self,
        issuer: &str,
        assertion_id: &str,
        expires_at: i64,
    ) -> Result<bool, DirectoryError>;
    async fn purge_expired(&self, now: i64) -> Result<(), DirectoryError>;
}
