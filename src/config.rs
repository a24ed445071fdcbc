//! Service configuration: built-in defaults, then an optional TOML file, then
//! `UNIFIED_LOGIN_*` environment variables (nested keys joined by `__`, for
//! example `UNIFIED_LOGIN_LOCKOUT__THRESHOLD=10`). Unknown keys are errors, so
//! a misspelt setting is reported instead of silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

pub const ENV_PREFIX: &str = "UNIFIED_LOGIN_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP(S) listener binds to.
    pub listen: SocketAddr,
    /// Externally visible base URL. Printed links and same-origin checks use
    /// it, never the Host header, so that a TLS-terminating proxy works.
    /// Defaults to `http://<listen>`.
    pub public_url: Option<Url>,
    /// `sqlite://PATH` for one instance, or `postgres://USER:PASSWORD@HOST/DB`
    /// for several instances sharing one database.
    pub database_url: String,
    /// Pool size, timeouts and what start-up does with an older schema.
    pub database: crate::db::DatabaseConfig,
    pub network: NetworkConfig,
    pub tls: Option<TlsConfig>,
    pub session: SessionConfig,
    pub lockout: LockoutConfig,
    pub rate_limit: RateLimitConfig,
    pub password: PasswordConfig,
    pub saml: SamlConfig,
    /// OpenID Connect IdP for CL Auth, as an alternative to a SAML IdP.
    pub oidc: Option<crate::connector::oidc::OidcSettings>,
    /// On-premises Active Directory or LDAP directory that checks the
    /// passwords of users without CL Auth, in place of local passwords.
    pub ldap: Option<crate::connector::ldap::LdapSettings>,
    /// Lifetimes and registered clients of the OAuth 2.0 / OpenID Connect provider.
    pub oauth2: crate::provider::clients::OAuth2Config,
    /// Sender, SMTP server or outbox folder for the emails the broker sends.
    pub email: crate::email::EmailConfig,
    pub health: HealthConfig,
    pub log: LogConfig,
}

/// The `[network]` table: how the broker learns the client's address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Networks of the load balancers and reverse proxies in front of the
    /// broker, as CIDR blocks or single addresses. A request from one of them
    /// takes its client address from `X-Forwarded-For`. Empty: every request
    /// uses its TCP peer's address and the header is ignored.
    pub trusted_proxies: Vec<String>,
}

/// The `[health]` table: the checks that raise and clear alarms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between two rounds of checks (database, IdP, SMTP server).
    pub check_seconds: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { check_seconds: 60 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlConfig {
    /// SP entity ID; defaults to `<public_url>/saml/metadata`.
    pub sp_entity_id: Option<String>,
    /// SP private key file (PEM), set together with `sp_certificate`. When
    /// both are unset, the key pair lives in the database and every instance
    /// sharing it signs with the same key. When set, the files are created at
    /// first start if neither exists.
    pub sp_key: Option<PathBuf>,
    /// SP certificate file (PEM) that belongs to `sp_key`.
    pub sp_certificate: Option<PathBuf>,
    /// Sign AuthnRequests with the SP key (RSA-SHA256, redirect binding).
    pub sign_authn_requests: bool,
    /// Minutes between scheduled fetches of the IdP's metadata URL.
    pub metadata_refresh_minutes: u32,
    /// IdP settings; when absent they come from `unified-login saml set`.
    pub idp: Option<crate::connector::saml::settings::IdpSettings>,
}

impl Default for SamlConfig {
    fn default() -> Self {
        Self {
            sp_entity_id: None,
            sp_key: None,
            sp_certificate: None,
            sign_authn_requests: true,
            metadata_refresh_minutes: 60,
            idp: None,
        }
    }
}

/// Paths of the SP key files that earlier versions created when no path was
/// set, relative to the working folder. Start-up imports these files into an
/// empty database.
pub const LEGACY_SP_KEY: &str = "certs/saml-sp.key";
pub const LEGACY_SP_CERTIFICATE: &str = "certs/saml-sp.crt";

/// Storage of the SAML SP key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpKeyLocation {
    /// Files that the operator set and manages.
    Files { key: PathBuf, certificate: PathBuf },
    /// The database, shared by every instance. `legacy_key` and
    /// `legacy_certificate` are the files that earlier versions created.
    Database {
        legacy_key: PathBuf,
        legacy_certificate: PathBuf,
    },
}

impl SamlConfig {
    /// Returns where the SP key pair is kept. Call it on a validated config,
    /// where the two paths are either both set or both unset.
    pub fn sp_key_location(&self) -> SpKeyLocation {
        match (&self.sp_key, &self.sp_certificate) {
            (Some(key), Some(certificate)) => SpKeyLocation::Files {
                key: key.clone(),
                certificate: certificate.clone(),
            },
            _ => SpKeyLocation::Database {
                legacy_key: PathBuf::from(LEGACY_SP_KEY),
                legacy_certificate: PathBuf::from(LEGACY_SP_CERTIFICATE),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Idle time after which a signed-in session ends, in minutes.
    pub idle_minutes: u32,
    /// Time a started sign-in may take before it has to start over, in minutes.
    pub login_minutes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Consecutive failures after which the account is locked.
    pub threshold: u32,
    /// Length of the first lock, in seconds; each further failure doubles it.
    pub base_seconds: u32,
    /// Upper bound of one lock, in seconds.
    pub max_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sign-in form submissions allowed per client IP address and minute.
    pub per_ip_per_minute: u32,
    /// Submissions a client IP address may send in a burst above that rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Argon2id memory cost, in KiB.
    pub memory_kib: u32,
    /// Argon2id time cost (passes over memory).
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
    /// Password hashes computed at once; 0 means one per CPU core.
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, overridden by `RUST_LOG` when that is set.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: "sqlite://data/unified-login.db".to_owned(),
            database: crate::db::DatabaseConfig::default(),
            network: NetworkConfig::default(),
            tls: None,
            session: SessionConfig::default(),
            lockout: LockoutConfig::default(),
            rate_limit: RateLimitConfig::default(),
            password: PasswordConfig::default(),
            saml: SamlConfig::default(),
            oidc: None,
            ldap: None,
            oauth2: crate::provider::clients::OAuth2Config::default(),
            email: crate::email::EmailConfig::default(),
            health: HealthConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_minutes: 480,
            login_minutes: 15,
        }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            base_seconds: 30,
            max_seconds: 900,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        // Generous, because a whole office behind one NAT address shares the
        // allowance; guessing one account's password is bounded by the lockout.
        Self {
            per_ip_per_minute: 300,
            burst: 100,
        }
    }
}

impl Default for PasswordConfig {
    // OWASP's minimum for Argon2id: 19 MiB of memory, two iterations, one lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            workers: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Loads the configuration from defaults, the file at `path` when given,
    /// and the environment, then validates it.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.is_file() {
                bail!("config file {} not found", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));

        let config: Config = figment.extract().map_err(|error| {
            anyhow::anyhow!(
                "invalid configuration: {}",
                error.to_string().replace('\n', "; ")
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let public_url = self.public_url();
        if !matches!(public_url.scheme(), "http" | "https") {
            bail!("public_url must start with http:// or https://, got '{public_url}'");
        }
        if public_url.host_str().is_none() || public_url.cannot_be_a_base() {
            bail!("public_url '{public_url}' has no host");
        }
        if self.lockout.threshold == 0 {
            bail!("lockout.threshold must be at least 1");
        }
        if self.lockout.max_seconds < self.lockout.base_seconds {
            bail!("lockout.max_seconds must not be smaller than lockout.base_seconds");
        }
        if self.rate_limit.per_ip_per_minute == 0 || self.rate_limit.burst == 0 {
            bail!("rate_limit.per_ip_per_minute and rate_limit.burst must be at least 1");
        }
        crate::web::client_address::TrustedProxies::parse(&self.network.trusted_proxies)?;
        if self.session.idle_minutes == 0 || self.session.login_minutes == 0 {
            bail!("session.idle_minutes and session.login_minutes must be at least 1");
        }
        crate::credentials::password::argon2_params(&self.password)
            .context("invalid [password] settings")?;
        if let Some(idp) = &self.saml.idp {
            idp.validate().context("invalid [saml.idp] settings")?;
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
            if self.saml.idp.is_some() {
                bail!(
                    "both [oidc] and [saml.idp] are set: CL Auth uses one identity provider, so remove one"
                );
            }
        }
        if let Some(ldap) = &self.ldap {
            ldap.validate().context("invalid [ldap] settings")?;
            let idp_table = if self.oidc.is_some() {
                Some("[oidc]")
            } else if self.saml.idp.is_some() {
                Some("[saml.idp]")
            } else {
                None
            };
            if let Some(table) = idp_table {
                bail!(
                    "both [ldap] and {table} are set, but only one source of authentication may be active: \
                     remove [ldap] to keep CloudLink authentication, or {table} to use the on-premises directory"
                );
            }
        }
        let oauth2 = &self.oauth2;
        if oauth2.access_token_minutes == 0
            || oauth2.refresh_token_days == 0
            || oauth2.code_seconds == 0
        {
            bail!(
                "oauth2.access_token_minutes, oauth2.refresh_token_days and oauth2.code_seconds must be at least 1"
            );
        }
        if oauth2.code_seconds > 600 {
            bail!(
                "oauth2.code_seconds must be at most 600: authorization codes are meant to be short-lived"
            );
        }
        crate::provider::clients::ClientRegistry::from_config(oauth2)?;
        self.email.validate()?;
        if self.health.check_seconds == 0 {
            bail!("health.check_seconds must be at least 1");
        }
        if self.saml.sp_key.is_some() != self.saml.sp_certificate.is_some() {
            bail!(
                "saml.sp_key and saml.sp_certificate must be set together: set both to keep the SP \
                 key pair in files, or neither to keep it in the database"
            );
        }
        if self.saml.metadata_refresh_minutes == 0 {
            bail!("saml.metadata_refresh_minutes must be at least 1");
        }
        if let Some(tls) = &self.tls {
            for file in [&tls.cert, &tls.key] {
                if !file.is_file() {
                    bail!("TLS file {} not found", file.display());
                }
            }
        }
        Ok(())
    }

    /// Returns the externally visible base URL, without a trailing slash path.
    pub fn public_url(&self) -> Url {
        match &self.public_url {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let url = format!("{scheme}://{}/", self.listen);
                Url::parse(&url).expect("a socket address always forms a valid URL")
            }
        }
    }

    pub fn uses_https(&self) -> bool {
        self.public_url().scheme() == "https"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.public_url().as_str(), "http://127.0.0.1:8080/");
        assert!(!config.uses_https());
    }

    #[test]
    fn file_rejects_unknown_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[lockout]\nthreshhold = 3\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("threshhold"), "{err}");
    }

    #[test]
    fn file_sets_nested_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "public_url = \"https://login.example.com\"\n[lockout]\nthreshold = 3\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.lockout.threshold, 3);
        assert!(config.uses_https());
    }

    #[test]
    fn readme_client_sample_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("<!-- sample-clients:start -->")
            .expect("start marker");
        let end = readme
            .find("<!-- sample-clients:end -->")
            .expect("end marker");
        let block = &readme[start..end];
        let toml = block
            .split_once("```toml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(toml, _)| toml)
            .expect("a TOML block between the markers");

        let dir = tempfile::tempdir().unwrap();
        for name in ["uc-web-secret", "uc-meetings-secret"] {
            std::fs::write(
                dir.path().join(name),
                "a-secret-of-at-least-thirty-two-characters\n",
            )
            .unwrap();
        }
        let secrets = format!("{}/", dir.path().display());
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml.replace("/etc/unified-login/", &secrets)).unwrap();

        let config = Config::load(Some(&path)).unwrap();
        let ids: Vec<&str> = config
            .oauth2
            .clients
            .iter()
            .map(|client| client.id.as_str())
            .collect();
        assert_eq!(ids, ["uc-web", "uc-native", "uc-meetings"]);
    }

    #[test]
    fn ldap_next_to_idp_table_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let ldap = "[ldap]\nurl = \"ldaps://dc1.example.com\"\nbind_dn = \"cn=broker,dc=example,dc=com\"\n\
                    bind_password = \"service-password\"\nbase_dn = \"dc=example,dc=com\"\n";
        std::fs::write(&path, ldap).unwrap();
        Config::load(Some(&path)).unwrap();

        let oidc = "[oidc]\nname = \"Contoso\"\nissuer = \"https://idp.example/\"\nclient_id = \"broker\"\n";
        std::fs::write(&path, format!("{ldap}{oidc}")).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("only one source of authentication may be active"),
            "{err}"
        );
        assert!(err.contains("remove [ldap]"), "{err}");
        assert!(err.contains("or [oidc]"), "{err}");
    }

    #[test]
    fn trusted_proxies_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[network]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1/32\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(
            config.network.trusted_proxies,
            ["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"]
        );
        assert!(Config::default().network.trusted_proxies.is_empty());
    }

    #[test]
    fn invalid_trusted_proxy_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[network]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0/8\"]\n",
        )
        .unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("network.trusted_proxies[1] = \"10.0.0/8\" is invalid"),
            "{err}"
        );
        assert!(err.contains("expected a CIDR block"), "{err}");
    }

    #[test]
    fn sp_key_location_follows_explicit_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(
            config.saml.sp_key_location(),
            SpKeyLocation::Database {
                legacy_key: PathBuf::from("certs/saml-sp.key"),
                legacy_certificate: PathBuf::from("certs/saml-sp.crt"),
            }
        );

        // The old default written out still counts as the operator's choice.
        std::fs::write(
            &path,
            "[saml]\nsp_key = \"certs/saml-sp.key\"\nsp_certificate = \"certs/saml-sp.crt\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(
            config.saml.sp_key_location(),
            SpKeyLocation::Files {
                key: PathBuf::from("certs/saml-sp.key"),
                certificate: PathBuf::from("certs/saml-sp.crt"),
            }
        );
    }

    #[test]
    fn sp_key_without_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[saml]\nsp_key = \"/etc/unified-login/sp.key\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("must be set together"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/unified-login.toml"))).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
