//! Storage for provisioning: the Secret Token's digest, the administrator's
//! switches, the provisioned users' fields and the detained queue.

use async_trait::async_trait;

use super::resources::{StoredUser, UserRecord};
use crate::directory::{AuditEvent, DirectoryError};

/// The administrator's switches for synchronisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Every incoming change is detained for review.
    pub defer_all: bool,
    /// The next synchronisation cycle is a full one.
    pub reinitialize: bool,
    /// When the first request of that full cycle arrived.
    pub reinitialize_started_at: Option<i64>,
    /// When the latest provisioning request arrived, while `reinitialize` is set.
    pub last_request_at: Option<i64>,
}

/// The kind of request that a detained entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Replace,
    Patch,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Replace => "replace",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "create" => Self::Create,
            "replace" => Self::Replace,
            "patch" => Self::Patch,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

/// A change that was not applied, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetainedEntry {
    pub id: i64,
    pub operation: Operation,
    /// The user the change is for; for a create, the id reserved for the new user.
    pub user_id: String,
    pub user_name: Option<String>,
    pub reason: String,
    /// The request body as received: a User resource, a PatchOp, or empty for a delete.
    pub payload: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewDetained {
    pub operation: Operation,
    pub user_id: String,
    pub user_name: Option<String>,
    pub reason: String,
    pub payload: String,
}

/// A write to the users table.
#[derive(Debug, Clone)]
pub enum UserWrite {
    /// A new user with CL Auth enabled and no local password.
    Insert {
        id: String,
        record: UserRecord,
    },
    /// New managed fields for an existing user, applied only while the
    /// user's version is still `expected_version`.
    Update {
        id: String,
        record: UserRecord,
        expected_version: i64,
    },
    Delete {
        id: String,
    },
}

/// Everything one request changes, written in one transaction.
#[derive(Debug, Clone)]
pub struct Commit {
    pub write: UserWrite,
    /// A detained entry that this write settles and that is removed with it.
    pub resolve_detained: Option<i64>,
    pub audit: AuditEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another user already has this userName, login ID or email.
    #[error("{field} '{value}' is already used by another user")]
    Conflict { field: &'static str, value: String },
    #[error("the user was changed by another request at the same time")]
    VersionMismatch,
    #[error("no user has the id '{0}'")]
    NotFound(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

impl From<sqlx::Error> for CommitError {
    fn from(error: sqlx::Error) -> Self {
        Self::Directory(DirectoryError::Database(error))
    }
}

#[async_trait]
pub trait ScimStore: Send + Sync {
    /// Returns the SHA-256 digest of the Secret Token, or `None` while
    /// synchronisation is off.
    async fn token_hash(&self) -> Result<Option<Vec<u8>>, DirectoryError>;
    /// Stores a new token digest, which revokes the previous token.
    async fn replace_token(
        &self,
        token_hash: &[u8],
        audit: AuditEvent,
        now: i64,
    ) -> Result<(), DirectoryError>;
    /// Removes the token, which turns synchronisation off. Returns false when
    /// there was none.
    async fn delete_token(&self, audit: AuditEvent, now: i64) -> Result<bool, DirectoryError>;

    async fn settings(&self) -> Result<Settings, DirectoryError>;
    async fn save_settings(&self, settings: Settings, now: i64) -> Result<(), DirectoryError>;

    async fn find_user(&self, id: &str) -> Result<Option<StoredUser>, DirectoryError>;
    /// Finds the user whose userName (or, for users added by hand, login ID)
    /// has the normalised key `key`.
    async fn find_by_user_name(&self, key: &str) -> Result<Option<StoredUser>, DirectoryError>;
    /// Returns all users in the order of creation.
    async fn list_users(&self) -> Result<Vec<StoredUser>, DirectoryError>;
    /// Returns how many users [`ScimStore::list_users`] would return.
    async fn count_users(&self) -> Result<i64, DirectoryError>;
    /// Returns at most `limit` users in the order of creation, after
    /// skipping the first `offset`.
    async fn list_users_page(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<StoredUser>, DirectoryError>;
    /// Applies a write with its audit event in one transaction and returns
    /// the user as stored afterwards (`None` after a delete).
    async fn commit(&self, commit: Commit, now: i64) -> Result<Option<StoredUser>, CommitError>;

    /// Adds an entry to the detained queue with its audit event, and returns
    /// its id. An open entry with the same operation, user and payload is
    /// reused (with the new reason), so a retried request adds no duplicate.
    async fn detain(
        &self,
        entry: NewDetained,
        audit: AuditEvent,
        now: i64,
    ) -> Result<i64, DirectoryError>;
    async fn detained(&self) -> Result<Vec<DetainedEntry>, DirectoryError>;
    async fn detained_entry(&self, id: i64) -> Result<Option<DetainedEntry>, DirectoryError>;
    /// Finds the open create entry that reserved `user_id`.
    async fn pending_create(&self, user_id: &str) -> Result<Option<DetainedEntry>, DirectoryError>;
    /// Finds the open create entry whose userName has the normalised key `key`.
    async fn pending_create_by_user_name(
        &self,
        key: &str,
    ) -> Result<Option<DetainedEntry>, DirectoryError>;
    async fn update_detained(
        &self,
        id: i64,
        reason: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool, DirectoryError>;
    /// Removes an entry without applying it. Returns false when it does not exist.
    async fn cancel_detained(
        &self,
        id: i64,
        audit: AuditEvent,
        now: i64,
    ) -> Result<bool, DirectoryError>;
}
