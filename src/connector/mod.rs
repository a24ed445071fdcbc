//! Authenticators: the places where a user proves who they are.
//!
//! The login flow identifies the user first and then hands the proof step to
//! an authenticator. Each kind implements the capability trait that matches
//! how it talks to the user: a password form handled on the broker's own page
//! (local passwords, and LDAP directory binds), or a redirect to an external
//! identity provider and a callback (SAML 2.0, OpenID Connect).

pub mod ldap;
pub mod local;
pub mod oidc;
pub mod saml;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::directory::User;

/// An authenticator that checks a password typed on the broker's own page.
#[async_trait]
pub trait PasswordAuthenticator: Send + Sync {
    /// Short, stable name used in logs and audit records.
    fn id(&self) -> &'static str;

    /// Returns whether `password` is right for `user`. When `user` is `None`
    /// (no user matched the identifier) the check must still take about as
    /// long as a real one and return false, so that the response does not
    /// reveal which identifiers exist.
    ///
    /// Returns `CheckUnavailable` when the password could not be checked,
    /// such as when a directory server does not respond.
    async fn authenticate(
        &self,
        user: Option<&User>,
        password: SecretString,
    ) -> Result<bool, CheckUnavailable>;
}

/// The service that checks passwords cannot be used right now. The password
/// was not checked, so this is not a failed attempt.
#[derive(Debug, thiserror::Error)]
#[error("the service that checks passwords cannot be used right now")]
pub struct CheckUnavailable;
