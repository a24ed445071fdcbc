//! Shared application state handed to every request handler.

use std::sync::Arc;

use url::Url;

use crate::admin::service::AdminService;
use crate::alarms::AlarmBoard;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connector::PasswordAuthenticator;
use crate::connector::ldap::LdapConnector;
use crate::connector::local::{LocalPassword, PasswordKind};
use crate::connector::oidc::OidcConnector;
use crate::connector::saml::SamlBroker;
use crate::credentials::lockout::LockoutPolicy;
use crate::credentials::password::PasswordHasher;
use crate::db::DbPool;
use crate::directory::sql::SqlDirectory;
use crate::directory::{AuditEvent, AuditLog, FailureStore, SamlStore, UserStore};
use crate::email::Mailer;
use crate::provider::Provider;
use crate::provider::store::SqlProviderStore;
use crate::scim::sql::SqlScimStore;
use crate::scim::store::ScimStore;
use crate::web::client_address::TrustedProxies;
use crate::web::rate_limit::IpRateLimiter;

/// Cloned into every layer and handler of every request, so it is one
/// reference count: the parts behind it are shared, never copied.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub pool: DbPool,
    pub alarms: Arc<AlarmBoard>,
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
    pub mailer: Arc<Mailer>,
    pub admin: Arc<AdminService>,
    /// SCIM provisioning: Secret Token, settings, provisioned users, detained queue.
    pub scim: Arc<dyn ScimStore>,
    pub lockout: LockoutPolicy,
    pub rate_limiter: IpRateLimiter,
    /// Proxies whose `X-Forwarded-For` sets the client address.
    pub trusted_proxies: Arc<TrustedProxies>,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    /// Builds the state and loads the SAML SP key pair, which start-up may
    /// have to create or import into the database.
    pub async fn new(config: Config, pool: DbPool) -> anyhow::Result<Self> {
        let provider_store = Arc::new(SqlProviderStore::new(pool.clone()));
        let directory = Arc::new(SqlDirectory::new(pool.clone()));
        let scim = Arc::new(SqlScimStore::new(pool.clone()));
        let passwords = PasswordHasher::new(&config.password)?;
        let public_url = config.public_url();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let saml =
            SamlBroker::new(&config.saml, &public_url, directory.clone(), clock.now()).await?;
        let alarms = Arc::new(AlarmBoard::default());
        let oidc = match &config.oidc {
            Some(settings) => Some(Arc::new(
                OidcConnector::new(settings.clone(), &public_url)?.with_alarms(alarms.clone()),
            )),
            None => None,
        };
        let provider = Provider::new(&config.oauth2, &public_url, provider_store)?;
        let local_password: Arc<dyn PasswordAuthenticator> = match &config.ldap {
            Some(settings) => {
                Arc::new(LdapConnector::new(settings.clone())?.with_alarms(alarms.clone()))
            }
            None => Arc::new(LocalPassword::new(passwords.clone(), PasswordKind::Local)),
        };
        let mailer = Arc::new(Mailer::new(&config.email, pool.clone(), clock.clone())?);
        let admin = AdminService::new(
            pool.clone(),
            directory.clone(),
            passwords.clone(),
            mailer.clone(),
            clock.clone(),
            public_url.clone(),
        );
        Ok(Self(Arc::new(Shared {
            alarms,
            pool: pool.clone(),
            mailer,
            admin: Arc::new(admin),
            provider: Arc::new(provider),
            public_url,
            users: directory.clone(),
            failures: directory.clone(),
            saml_store: directory.clone(),
            audit: directory,
            saml: Arc::new(saml),
            oidc,
            scim,
            local_password,
            mitel_password: Arc::new(LocalPassword::new(
                passwords.clone(),
                PasswordKind::MitelCredentials,
            )),
            passwords,
            lockout: LockoutPolicy::from(&config.lockout),
            rate_limiter: IpRateLimiter::new(&config.rate_limit, pool.clone()),
            trusted_proxies: Arc::new(TrustedProxies::parse(&config.network.trusted_proxies)?),
            clock,
            config: Arc::new(config),
        })))
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
