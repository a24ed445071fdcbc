//! Passwords kept by the broker itself as Argon2id hashes.

use async_trait::async_trait;
use secrecy::SecretString;

use super::PasswordAuthenticator;
use crate::credentials::password::PasswordHasher;
use crate::directory::User;

pub struct LocalPassword {
    hasher: PasswordHasher,
}

impl LocalPassword {
    pub fn new(hasher: PasswordHasher) -> Self {
        Self { hasher }
    }
}

#[async_trait]
impl PasswordAuthenticator for LocalPassword {
    fn id(&self) -> &'static str {
        "local"
    }

    async fn authenticate(&self, user: Option<&User>, password: SecretString) -> bool {
        let stored_hash = user.and_then(|user| user.password_hash.clone());
        self.hasher.verify(password, stored_hash).await
    }
}
