//! Passwords kept by the broker itself as Argon2id hashes.

use async_trait::async_trait;
use secrecy::SecretString;

use super::{CheckUnavailable, PasswordAuthenticator};
use crate::credentials::password::PasswordHasher;
use crate::directory::User;

/// The stored password of a user that an authenticator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    /// The local password of users without CL Auth.
    Local,
    /// The separate "Mitel credentials" password of CL Auth users.
    MitelCredentials,
}

pub struct LocalPassword {
    hasher: PasswordHasher,
    kind: PasswordKind,
}

impl LocalPassword {
    pub fn new(hasher: PasswordHasher, kind: PasswordKind) -> Self {
        Self { hasher, kind }
    }
}

#[async_trait]
impl PasswordAuthenticator for LocalPassword {
    fn id(&self) -> &'static str {
        match self.kind {
            PasswordKind::Local => "local",
            PasswordKind::MitelCredentials => "mitel_credentials",
        }
    }

    async fn authenticate(
        &self,
        user: Option<&User>,
        password: SecretString,
    ) -> Result<bool, CheckUnavailable> {
        let stored_hash = user.and_then(|user| match self.kind {
            PasswordKind::Local => user.password_hash.clone(),
            PasswordKind::MitelCredentials if user.cl_auth_enabled => user.cl_password_hash.clone(),
            PasswordKind::MitelCredentials => None,
        });
        Ok(self.hasher.verify(password, stored_hash).await)
    }
}
