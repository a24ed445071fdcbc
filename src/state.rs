//! Shared application state handed to every request handler.

use std::sync::Arc;

use sqlx::SqlitePool;
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connector::PasswordAuthenticator;
use crate::connector::local::{LocalPassword, PasswordKind};
use crate::connector::oidc::OidcConnector;
use crate::connector::saml::SamlBroker;
use crate::credentials::lockout::LockoutPolicy;
use crate::credentials::password::PasswordHasher;
use crate::directory::sqlite::SqliteDirectory;
use crate::directory::{AuditEvent, AuditLog, FailureStore, SamlStore, UserStore};
use crate::scim::sqlite::SqliteScimStore;
use crate::scim::store::ScimStore;
use crate::web::rate_limit::IpRateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub public_url: Url,
    pub users: Arc<dyn UserStore>,
    pub failures: Arc<dyn FailureStore>,
    pub audit: Arc<dyn AuditLog>,
    pub passwords: PasswordHasher,
    pub local_password: Arc<dyn PasswordAuthenticator>,
    pub mitel_password: Arc<dyn PasswordAuthenticator>,
    pub saml: Arc<SamlBroker>,
    pub saml_store: Arc<dyn SamlStore>,
    pub oidc: Option<Arc<OidcConnector>>,
    /// SCIM provisioning: Secret Token, settings, provisioned users, detained queue.
    pub scim: Arc<dyn ScimStore>,
    pub lockout: LockoutPolicy,
    pub rate_limiter: IpRateLimiter,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(config: Config, pool: SqlitePool) -> anyhow::Result<Self> {
        let scim = Arc::new(SqliteScimStore::new(pool.clone()));
        let directory = Arc::new(SqliteDirectory::new(pool));
        let passwords = PasswordHasher::new(&config.password)?;
        let public_url = config.public_url();
        let saml = SamlBroker::new(&config.saml, &public_url, directory.clone())?;
        let oidc = match &config.oidc {
            Some(settings) => Some(Arc::new(OidcConnector::new(settings.clone(), &public_url)?)),
            None => None,
        };
        Ok(Self {
            public_url,
            users: directory.clone(),
            failures: directory.clone(),
            saml_store: directory.clone(),
            audit: directory,
            saml: Arc::new(saml),
            oidc,
            scim,
            local_password: Arc::new(LocalPassword::new(passwords.clone(), PasswordKind::Local)),
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
