//! Shared application state handed to every request handler.

use std::sync::Arc;

use sqlx::SqlitePool;
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connector::PasswordAuthenticator;
use crate::connector::ldap::LdapConnector;
use crate::connector::local::{LocalPassword, PasswordKind};
use crate::connector::oidc::OidcConnector;
use crate::connector::saml::SamlBroker;
use crate::credentials::lockout::LockoutPolicy;
use crate::credentials::password::PasswordHasher;
use crate::directory::sqlite::SqliteDirectory;
use crate::directory::{AuditEvent, AuditLog, FailureStore, SamlStore, UserStore};
use crate::provider::Provider;
use crate::provider::store::SqliteProviderStore;
use crate::web::rate_limit::IpRateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub public_url: Url,
    pub users: Arc<dyn UserStore>,
    pub failures: Arc<dyn FailureStore>,
    pub audit: Arc<dyn AuditLog>,
    pub passwords: PasswordHasher,
    /// Checks the password of users without CL Auth: the `[ldap]` directory
    /// when one is configured, else the broker's own password hashes.
    pub local_password: Arc<dyn PasswordAuthenticator>,
    pub mitel_password: Arc<dyn PasswordAuthenticator>,
    pub saml: Arc<SamlBroker>,
    pub saml_store: Arc<dyn SamlStore>,
    pub oidc: Option<Arc<OidcConnector>>,
    /// The OAuth 2.0 / OpenID Connect provider for the broker's own clients.
    pub provider: Arc<Provider>,
    pub lockout: LockoutPolicy,
    pub rate_limiter: IpRateLimiter,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(config: Config, pool: SqlitePool) -> anyhow::Result<Self> {
        let provider_store = Arc::new(SqliteProviderStore::new(pool.clone()));
        let directory = Arc::new(SqliteDirectory::new(pool));
        let passwords = PasswordHasher::new(&config.password)?;
        let public_url = config.public_url();
        let saml = SamlBroker::new(&config.saml, &public_url, directory.clone())?;
        let oidc = match &config.oidc {
            Some(settings) => Some(Arc::new(OidcConnector::new(settings.clone(), &public_url)?)),
            None => None,
        };
        let provider = Provider::new(&config.oauth2, &public_url, provider_store)?;
        let local_password: Arc<dyn PasswordAuthenticator> = match &config.ldap {
            Some(settings) => Arc::new(LdapConnector::new(settings.clone())?),
            None => Arc::new(LocalPassword::new(passwords.clone(), PasswordKind::Local)),
        };
        Ok(Self {
            provider: Arc::new(provider),
            public_url,
            users: directory.clone(),
            failures: directory.clone(),
            saml_store: directory.clone(),
            audit: directory,
            saml: Arc::new(saml),
            oidc,
            local_password,
            mitel_password: Arc::new(LocalPassword::new(
                passwords.clone(),
                PasswordKind::MitelCredentials,
            )),
            passwords,
            lockout: LockoutPolicy::from(&config.lockout),
            rate_limiter: IpRateLimiter::new(&config.rate_limit),
            clock: Arc::new(SystemClock),
            config: Arc::new(config),
        })
    }

    /// Appends to the audit log. A failure to write is logged, not returned,
    /// because the user's request should not fail for it.
    pub async fn record(&self, event: AuditEvent) {
        let kind = event.kind;
        if let Err(error) = self.audit.append(event, self.clock.now()).await {
            tracing::error!(%error, kind, "writing the audit log failed");
        }
    }
}
