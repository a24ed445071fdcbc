//! An on-premises Active Directory or other LDAP directory as the source of
//! authentication, in place of the broker's local passwords.
//!
//! One sign-in opens one connection. The broker binds with its service
//! account, searches under the base DN for the single entry whose
//! `user_attribute` equals the directory user's email or login ID, and then
//! binds as that entry's DN with the typed password. The connection is
//! closed afterwards, so no user bind outlives the request.
//!
//! Passwords cross the network only inside TLS: `ldaps://`, or `ldap://` with
//! StartTLS. Plain `ldap://` is accepted only for a loopback IP address,
//! where the traffic never leaves the machine.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::alarms::{Alarm, AlarmBoard};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions, StdStream,
};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use super::{CheckUnavailable, PasswordAuthenticator};
use crate::directory::User;

/// The `[ldap]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: Url,
    /// Upgrade an `ldap://` connection with the StartTLS operation.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file with the CA certificates that the directory server's
    /// certificate must chain to; without it the system's trusted CAs apply.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN of the service account that searches for users.
    pub bind_dn: String,
    /// The service account's password; better given as the environment
    /// variable UNIFIED_LOGIN_LDAP__BIND_PASSWORD or in `bind_password_file`.
    #[serde(default, skip_serializing)]
    pub bind_password: Option<SecretString>,
    /// File whose first line is the service account's password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Subtree searched for users.
    pub base_dn: String,
    /// Attribute that contains the value in `match_on`, such as `mail`,
    /// `userPrincipalName`, `sAMAccountName` or `uid`.
    #[serde(default = "default_user_attribute")]
    pub user_attribute: String,
    /// The field of the broker's user that is compared with `user_attribute`.
    #[serde(default = "default_match_on")]
    pub match_on: MatchOn,
    /// Extra filter an entry must also match, such as
    /// `(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))`.
    #[serde(default)]
    pub user_filter: Option<String>,
    /// Seconds allowed for the TCP connection and the TLS handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u32,
    /// Seconds allowed for each bind and search.
    #[serde(default = "default_operation_timeout")]
    pub timeout_seconds: u32,
}

/// The field of the broker's user that the directory search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    /// The primary email address, for `mail` or `userPrincipalName`.
    Email,
    /// The login ID, for `sAMAccountName` or `uid`.
    LoginId,
}

fn default_user_attribute() -> String {
    "mail".to_owned()
}

fn default_match_on() -> MatchOn {
    MatchOn::Email
}

fn default_connect_timeout() -> u32 {
    5
}

fn default_operation_timeout() -> u32 {
    10
}

/// The protection of the connection to the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Ldaps,
    StartTls,
    /// Unencrypted, allowed only to a loopback address.
    Plain,
}

impl LdapSettings {
    /// Checks the settings. The password file and the CA file are read
    /// later, when the connector is built.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.transport()?;

        if self.bind_dn.trim().is_empty() {
            bail!(
                "ldap.bind_dn is empty: enter the DN of the service account that searches for users"
            );
        }

        if self.base_dn.trim().is_empty() {
            bail!(
                "ldap.base_dn is empty: enter the DN under which users are searched, such as dc=example,dc=com"
            );
        }
        if self.bind_password.is_some() && self.bind_password_file.is_some() {
            bail!("set ldap.bind_password or ldap.bind_password_file, not both");
        }
        if self.bind_password.is_none() && self.bind_password_file.is_none() {
            bail!(
                "no LDAP service account password: set ldap.bind_password_file or the UNIFIED_LOGIN_LDAP__BIND_PASSWORD variable"
            );
        }
        if !is_attribute_name(&self.user_attribute) {
            bail!(
                "ldap.user_attribute '{}' is not an attribute name: use letters, digits and hyphens, such as mail",
                self.user_attribute
            );
        }
        if self.user_attribute.eq_ignore_ascii_case("sAMAccountName")
            && self.match_on == MatchOn::Email
        {
            bail!(
                "ldap.user_attribute sAMAccountName contains login names, not email addresses: set ldap.match_on = \"login_id\""
            );
        }
        if let Some(filter) = &self.user_filter {
            let filter = filter.trim();
            if !filter.starts_with('(') || ldap3::parse_filter(filter).is_err() {
                bail!(
                    "ldap.user_filter '{filter}' is not an LDAP filter: write it in parentheses, such as (objectClass=user)"
                );
            }
        }

        if self.connect_timeout_seconds == 0 || self.timeout_seconds == 0 {
            bail!("ldap.connect_timeout_seconds and ldap.timeout_seconds must be at least 1");
        }
        if let Some(path) = &self.ca_file
            && !path.is_file()
        {
            bail!("ldap.ca_file {} not found", path.display());
        }
        Ok(())
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        let url = &self.url;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            bail!("ldap.url '{url}' has no host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("ldap.url '{url}' contains credentials: put the service account in ldap.bind_dn");
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            bail!(
                "ldap.url '{url}' has a path or query: give only ldaps://host[:port], and the base DN in ldap.base_dn"
            );
        }
        let transport = match (url.scheme(), self.starttls) {
            ("ldaps", false) => Transport::Ldaps,
            ("ldaps", true) => bail!(
                "ldap.starttls is for ldap:// URLs, but ldap.url '{url}' is already ldaps://: remove ldap.starttls"
            ),
            ("ldap", true) => Transport::StartTls,
            ("ldap", false) if is_loopback(url) => Transport::Plain,
            ("ldap", false) => bail!(
                "ldap.url '{url}' would send passwords unencrypted: use ldaps:// or set ldap.starttls = true \
                 (plain ldap:// is accepted only for a loopback IP address)"
            ),
            (scheme, _) => {
                bail!("ldap.url '{url}' must start with ldaps:// or ldap://, not {scheme}://")
            }
        };
        if transport != Transport::Plain && matches!(url.host(), Some(Host::Ipv6(_))) {
            // ldap3 0.12 passes the bracketed host to rustls as the server
            // name, which rustls rejects, so the handshake could never work.
            bail!("ldap.url '{url}' names an IPv6 address: TLS needs the server's host name here");
        }
        Ok(transport)
    }

    fn read_bind_password(&self) -> anyhow::Result<SecretString> {
        if let Some(password) = &self.bind_password {
            if password.expose_secret().is_empty() {
                bail!(
                    "ldap.bind_password is empty: an empty password would make an unauthenticated bind"
                );
            }
            return Ok(password.clone());
        }
        let Some(path) = &self.bind_password_file else {
            bail!(
                "no LDAP service account password: set ldap.bind_password_file or the UNIFIED_LOGIN_LDAP__BIND_PASSWORD variable"
            );
        };
        let text = fs::read_to_string(path).with_context(|| {
            format!("cannot read the LDAP bind password file {}", path.display())
        })?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            bail!("the LDAP bind password file {} is empty", path.display());
        }
        Ok(SecretString::from(password))
    }

    fn port(&self) -> u16 {
        let default = if self.url.scheme() == "ldaps" {
            636
        } else {
            389
        };
        self.url.port().unwrap_or(default)
    }
}

/// Returns whether `name` is an attribute description as RFC 4512 §1.4
/// defines it: a name (a letter, then letters, digits and hyphens) or a
/// numeric OID.
fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if first.is_ascii_alphabetic() {
        return chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
    }
    name.split('.')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        // `ldap` is not a special scheme to the url crate, so it keeps an
        // IPv4 address as an opaque host name.
        Some(Host::Domain(name)) => name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Escapes `value` for use as an assertion value in a search filter, as
/// RFC 4515 §3 requires: `*`, `(`, `)`, `\` and NUL become `\XX` hex
/// escapes, so a value can never add filter syntax.
pub fn escape_filter_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '*' | '(' | ')' | '\\' | '\0' => {
                escaped.push_str(&format!("\\{:02x}", character as u32))
            }
            other => escaped.push(other),
        }
    }
    escaped
}

/// The step of an LDAP sign-in that failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum LdapFailure {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the TLS connection failed: {reason}")]
    Tls { reason: String },
    #[error("the directory did not respond to the {step}: {reason}")]
    NoResponse { step: &'static str, reason: String },
    #[error("the directory rejected the service account {dn}: {reason}")]
    ServiceBind { dn: String, reason: String },
    #[error("the directory rejected the search {filter} under {base}: {reason}")]
    Search {
        filter: String,
        base: String,
        reason: String,
    },
    #[error("the search {filter} under {base} found no entry")]
    NotFound { filter: String, base: String },
    #[error("the search {filter} under {base} found {count} entries, but exactly one must match")]
    Ambiguous {
        filter: String,
        base: String,
        count: usize,
    },
    #[error("the directory rejected the password for {dn}: {reason}")]
    UserBind { dn: String, reason: String },
    #[error("the password is empty, and an empty password would make an unauthenticated bind")]
    EmptyPassword,
}

impl LdapFailure {
    /// Names the step that failed, as `ldap test` prints it.
    pub fn step(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "TLS",
            Self::NoResponse { step, .. } => step,
            Self::ServiceBind { .. } => "service bind",
            Self::Search { .. } | Self::NotFound { .. } | Self::Ambiguous { .. } => "search",
            Self::UserBind { .. } | Self::EmptyPassword => "user bind",
        }
    }

    /// Returns whether the directory could not be reached or stopped
    /// responding, which is what the alarm reports.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Tls { .. } | Self::NoResponse { .. }
        )
    }

    /// Returns whether the directory responded but rejected the service
    /// account or the search, so that no user can sign in.
    fn is_service_rejected(&self) -> bool {
        matches!(self, Self::ServiceBind { .. } | Self::Search { .. })
    }
}

/// Checks passwords against an LDAP directory.
pub struct LdapConnector {
    pub settings: LdapSettings,
    transport: Transport,
    bind_password: SecretString,
    tls: Option<Arc<ClientConfig>>,
    alarms: Arc<AlarmBoard>,
    service_rejected: AtomicBool,
}

impl LdapConnector {
    /// Validates the settings, reads the service account's password and the
    /// CA certificates.
    pub fn new(settings: LdapSettings) -> anyhow::Result<Self> {
        settings.validate()?;
        let transport = settings.transport()?;
        let bind_password = settings.read_bind_password()?;
        let tls = match transport {
            Transport::Plain => None,
            Transport::Ldaps | Transport::StartTls => Some(tls_config(&settings)?),
        };
        Ok(Self {
            settings,
            transport,
            bind_password,
            tls,
            alarms: Arc::new(AlarmBoard::default()),
            service_rejected: AtomicBool::new(false),
        })
    }

    /// Reports reachability to `alarms` instead of a board of its own.
    pub fn with_alarms(mut self, alarms: Arc<AlarmBoard>) -> Self {
        self.alarms = alarms;
        self
    }

    /// Returns the value that the search compares with `user_attribute`.
    pub fn search_value<'a>(&self, user: &'a User) -> &'a str {
        match self.settings.match_on {
            MatchOn::Email => &user.email,
            MatchOn::LoginId => &user.login_id,
        }
    }

    /// Returns the search filter for `value`, escaped and combined with
    /// `user_filter`.
    pub fn search_filter(&self, value: &str) -> String {
        let assertion = format!(
            "({}={})",
            self.settings.user_attribute,
            escape_filter_value(value)
        );
        match &self.settings.user_filter {
            Some(filter) => format!("(&{}{assertion})", filter.trim()),
            None => assertion,
        }
    }

    /// Runs every step of a sign-in for the entry matching `value` and
    /// returns that entry's DN once the password is accepted. Unlike
    /// [`PasswordAuthenticator::authenticate`], it neither changes the alarm
    /// state nor pads the time of a failed search.
    pub async fn check(&self, value: &str, password: &SecretString) -> Result<String, LdapFailure> {
        self.sign_in(value, password, false).await
    }

    async fn sign_in(
        &self,
        value: &str,
        password: &SecretString,
        decoy: bool,
    ) -> Result<String, LdapFailure> {
        if password.expose_secret().is_empty() {
            return Err(LdapFailure::EmptyPassword);
        }
        let mut ldap = self.connect().await?;
        let result = self
            .bind_search_bind(&mut ldap, value, password, decoy)
            .await;
        // Nothing depends on the unbind, and the server may already have
        // closed the connection, so its outcome is ignored.
        let timeout = Duration::from_secs(u64::from(self.settings.timeout_seconds));
        let _ = tokio::time::timeout(timeout, ldap.unbind()).await;
        result
    }

    async fn bind_search_bind(
        &self,
        ldap: &mut Ldap,
        value: &str,
        password: &SecretString,
        decoy: bool,
    ) -> Result<String, LdapFailure> {
        let timeout = Duration::from_secs(u64::from(self.settings.timeout_seconds));
        let bind_dn = self.settings.bind_dn.trim();
        let bound = ldap
            .with_timeout(timeout)
            .simple_bind(bind_dn, self.bind_password.expose_secret())
            .await
            .map_err(|error| no_response("service bind", &error))?;
        if bound.rc != 0 {
            return Err(LdapFailure::ServiceBind {
                dn: bind_dn.to_owned(),
                reason: describe_result(bound.rc, &bound.text),
            });
        }

        let entries = self.search(ldap, value, timeout).await;
        let dn = match entries {
            Ok(mut dns) if dns.len() == 1 => dns.remove(0),
            Ok(dns) => {
                let filter = self.search_filter(value);
                let base = self.settings.base_dn.trim().to_owned();
                if decoy {
                    self.decoy_bind(ldap, timeout).await;
                }
                return Err(if dns.is_empty() {
                    LdapFailure::NotFound { filter, base }
                } else {
                    LdapFailure::Ambiguous {
                        filter,
                        base,
                        count: dns.len(),
                    }
                });
            }
            Err(failure) => return Err(failure),
        };

        let user_bind = ldap
            .with_timeout(timeout)
            .simple_bind(&dn, password.expose_secret())
            .await
            .map_err(|error| no_response("user bind", &error))?;
        if user_bind.rc != 0 {
            return Err(LdapFailure::UserBind {
                dn,
                reason: describe_result(user_bind.rc, &user_bind.text),
            });
        }
        Ok(dn)
    }

    /// Returns the DNs of the entries that match `value`, at most two:
    /// a second one is enough to know that the match is ambiguous.
    async fn search(
        &self,
        ldap: &mut Ldap,
        value: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, LdapFailure> {
        let filter = self.search_filter(value);
        let base = self.settings.base_dn.trim();
        // The attribute list "1.1" requests no attributes (RFC 4511 §4.5.1.8),
        // because only the DN is needed.
        let result = ldap
            .with_timeout(timeout)
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|error| no_response("search", &error))?;
        let ldap3::SearchResult(entries, outcome) = result;
        // 4 is sizeLimitExceeded: more entries matched than the two returned.
        if outcome.rc != 0 && outcome.rc != 4 {
            return Err(LdapFailure::Search {
                filter,
                base: base.to_owned(),
                reason: describe_result(outcome.rc, &outcome.text),
            });
        }
        // Active Directory adds search references (referrals to other
        // partitions); they are not entries.
        Ok(entries
            .into_iter()
            .filter(|entry| !entry.is_ref() && !entry.is_intermediate())
            .map(|entry| SearchEntry::construct(entry).dn)
            .collect())
    }

    /// Sends a bind that must fail, so that a sign-in without a matching
    /// entry costs the same round trips as one with a wrong password. The DN
    /// names no entry, so no account's failure counter moves.
    async fn decoy_bind(&self, ldap: &mut Ldap, timeout: Duration) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dn = format!(
            "cn=unified-login-decoy-{token},{}",
            self.settings.base_dn.trim()
        );
        let _ = ldap.with_timeout(timeout).simple_bind(&dn, &token).await;
    }

    async fn connect(&self) -> Result<Ldap, LdapFailure> {
        let connect_timeout = Duration::from_secs(u64::from(self.settings.connect_timeout_seconds));
        let port = self.settings.port();
        let address = match self.settings.url.host() {
            Some(Host::Ipv6(ip)) => SocketAddr::from((ip, port)).to_string(),
            _ => format!(
                "{}:{port}",
                self.settings.url.host_str().unwrap_or_default()
            ),
        };
        // The TCP connection is made here rather than by ldap3, so that a
        // failure to connect and a failed TLS handshake get different errors.
        let stream =
            tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(&address))
                .await
                .map_err(|_| LdapFailure::Connect {
                    address: address.clone(),
                    reason: format!("timed out after {} s", connect_timeout.as_secs()),
                })?
                .and_then(tokio::net::TcpStream::into_std)
                .map_err(|error| LdapFailure::Connect {
                    address: address.clone(),
                    reason: error.to_string(),
                })?;

        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(connect_timeout)
            .set_std_stream(StdStream::Tcp(stream));
        if let Some(tls) = &self.tls {
            settings = settings
                .set_config(tls.clone())
                .set_starttls(self.transport == Transport::StartTls);
        }
        let (connection, ldap) =
            LdapConnAsync::from_url_with_settings(settings, &self.settings.url)
                .await
                .map_err(|error| LdapFailure::Tls {
                    reason: describe_error(&error),
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.drive().await {
                tracing::debug!(error = %error, "the LDAP connection ended with an error");
            }
        });
        Ok(ldap)
    }

    /// Records the outcome of a sign-in, logging the alarm and the service
    /// account's state once per change rather than once per request.
    fn note_outcome(&self, failure: Option<&LdapFailure>) {
        let url = self.settings.url.as_str();
        let unreachable = failure.is_some_and(LdapFailure::is_unreachable);
        // The alarm is CL_CONNECT_FAILURE because the directory plays the
        // part of the IdP here: it is the one source of authentication, and
        // it cannot be reached. AUTHSERVICE_DOWN would blame the broker
        // itself, and REST_CONNECT_FAILURE a REST service, which LDAP is not.
        let detail = match failure {
            Some(failure) if unreachable => {
                format!("the LDAP directory {url} cannot be reached: {failure}")
            }
            _ => format!("the LDAP directory {url} responds"),
        };
        self.alarms.set(
            Alarm::ClConnectFailure,
            unreachable,
            &detail,
            chrono::Utc::now().timestamp(),
        );
        if unreachable {
            return;
        }

        let rejected = failure.is_some_and(LdapFailure::is_service_rejected);
        let was_rejected = self.service_rejected.swap(rejected, Ordering::SeqCst);
        if rejected && !was_rejected {
            let error = failure.map(ToString::to_string).unwrap_or_default();
            tracing::error!(
                url,
                error,
                "LDAP sign-ins fail: fix the service account or the search in the [ldap] settings"
            );
        } else if !rejected && was_rejected {
            tracing::info!(
                url,
                "LDAP sign-ins work again: the directory accepts the service account and the search"
            );
        }
    }
}

#[async_trait]
impl PasswordAuthenticator for LdapConnector {
    fn id(&self) -> &'static str {
        "ldap"
    }

    async fn authenticate(
        &self,
        user: Option<&User>,
        password: SecretString,
    ) -> Result<bool, CheckUnavailable> {
        if password.expose_secret().is_empty() {
            return Ok(false);
        }
        // An unknown identifier still costs a search and a bind, with a value
        // that no entry has, so its timing matches a wrong password's.
        let absent = format!("unified-login-unknown-{}", uuid::Uuid::new_v4().simple());
        let value = user.map_or(absent.as_str(), |user| self.search_value(user));
        let result = self.sign_in(value, &password, true).await;
        self.note_outcome(result.as_ref().err());

        let user_id = user.map_or("-", |user| user.id.as_str());
        match result {
            Ok(dn) => {
                tracing::debug!(user.id = user_id, dn, "LDAP bind succeeded");
                Ok(user.is_some())
            }
            Err(failure) if failure.is_unreachable() || failure.is_service_rejected() => {
                Err(CheckUnavailable)
            }
            Err(failure @ LdapFailure::Ambiguous { .. }) => {
                tracing::warn!(user.id = user_id, error = %failure, "LDAP sign-in failed: make the directory entry unique");
                Ok(false)
            }
            Err(failure) => {
                tracing::debug!(user.id = user_id, error = %failure, "LDAP sign-in failed");
                Ok(false)
            }
        }
    }
}

/// Builds the TLS client settings: the CA certificates of `ca_file`, or the
/// system's trusted CAs, and rustls's safe protocol versions.
fn tls_config(settings: &LdapSettings) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            let pem = fs::read(path)
                .with_context(|| format!("cannot read ldap.ca_file {}", path.display()))?;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate
                    .with_context(|| format!("ldap.ca_file {} is not valid PEM", path.display()))?;
                roots.add(certificate).with_context(|| {
                    format!(
                        "ldap.ca_file {} contains an invalid certificate",
                        path.display()
                    )
                })?;
            }
            if roots.is_empty() {
                bail!("ldap.ca_file {} contains no certificate", path.display());
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                // A certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                bail!("no trusted CA certificates found on this system: set ldap.ca_file");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn no_response(step: &'static str, error: &LdapError) -> LdapFailure {
    LdapFailure::NoResponse {
        step,
        reason: describe_error(error),
    }
}

/// Returns the error's message with its causes, such as a rustls error's
/// reason for rejecting a certificate.
fn describe_error(error: &LdapError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Formats an LDAP result code with its RFC 4511 name and the server's
/// diagnostic message, which Active Directory uses for the reason a bind
/// failed (`data 52e` wrong password, `533` disabled, `775` locked).
fn describe_result(code: u32, text: &str) -> String {
    let name = match code {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        8 => "strongerAuthRequired",
        10 => "referral",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "",
    };
    let mut description = format!("result code {code}");
    if !name.is_empty() {
        description.push_str(&format!(" ({name})"));
    }
    let text = text.trim();
    if !text.is_empty() {
        description.push_str(&format!(", {text}"));
    }
    description
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> LdapSettings {
        LdapSettings {
            url: Url::parse(url).unwrap(),
            starttls: false,
            ca_file: None,
            bind_dn: "cn=broker,ou=services,dc=example,dc=com".to_owned(),
            bind_password: Some(SecretString::from("service-secret")),
            bind_password_file: None,
            base_dn: "dc=example,dc=com".to_owned(),
            user_attribute: "mail".to_owned(),
            match_on: MatchOn::Email,
            user_filter: None,
            connect_timeout_seconds: 5,
            timeout_seconds: 10,
        }
    }

    fn validation_error(settings: &LdapSettings) -> String {
        settings.validate().unwrap_err().to_string()
    }

    #[test]
    fn escape_covers_rfc4515_specials() {
        assert_eq!(escape_filter_value("jane@example.com"), "jane@example.com");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\\b"), "a\\5cb");
        assert_eq!(escape_filter_value("nul\0"), "nul\\00");
        assert_eq!(escape_filter_value("Zoë (IT)"), "Zoë \\28IT\\29");
    }

    #[test]
    fn escaped_filter_parses_as_one_assertion() {
        let connector = LdapConnector::new(settings("ldap://127.0.0.1:3890")).unwrap();
        let filter = connector.search_filter("*)(uid=*");
        assert_eq!(filter, "(mail=\\2a\\29\\28uid=\\2a)");
        assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
    }

    #[test]
    fn user_filter_is_combined_with_and() {
        let mut with_filter = settings("ldap://127.0.0.1:3890");
        with_filter.user_filter = Some(" (objectClass=user) ".to_owned());
        with_filter.user_attribute = "sAMAccountName".to_owned();
        with_filter.match_on = MatchOn::LoginId;
        let connector = LdapConnector::new(with_filter).unwrap();
        assert_eq!(
            connector.search_filter("jdoe"),
            "(&(objectClass=user)(sAMAccountName=jdoe))"
        );
    }

    #[test]
    fn ldaps_and_starttls_are_accepted() {
        settings("ldaps://dc1.example.com").validate().unwrap();
        let mut starttls = settings("ldap://dc1.example.com:389");
        starttls.starttls = true;
        starttls.validate().unwrap();
        settings("ldap://127.0.0.1:3890").validate().unwrap();
        settings("ldap://[::1]:3890").validate().unwrap();
    }

    #[test]
    fn plain_ldap_to_remote_host_is_rejected() {
        for url in [
            "ldap://dc1.example.com",
            "ldap://10.0.0.5:389",
            "ldap://localhost:389",
        ] {
            let error = validation_error(&settings(url));
            assert!(error.contains("unencrypted"), "{url}: {error}");
        }
    }

    #[test]
    fn starttls_on_ldaps_is_rejected() {
        let mut both = settings("ldaps://dc1.example.com");
        both.starttls = true;
        assert!(validation_error(&both).contains("remove ldap.starttls"));
    }

    #[test]
    fn url_shape_is_checked() {
        let cases = [
            ("http://dc1.example.com", "must start with ldaps://"),
            (
                "ldaps://dc1.example.com/dc=example,dc=com",
                "has a path or query",
            ),
            ("ldaps://admin:pw@dc1.example.com", "contains credentials"),
            ("ldaps://[::1]:636", "IPv6"),
        ];
        for (url, expected) in cases {
            let error = validation_error(&settings(url));
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn bind_password_must_be_given_once() {
        let mut none = settings("ldaps://dc1.example.com");
        none.bind_password = None;
        assert!(validation_error(&none).contains("UNIFIED_LOGIN_LDAP__BIND_PASSWORD"));

        let mut both = settings("ldaps://dc1.example.com");
        both.bind_password_file = Some(PathBuf::from("/etc/unified-login/ldap-password"));
        assert!(validation_error(&both).contains("not both"));

        let mut empty = settings("ldap://127.0.0.1:3890");
        empty.bind_password = Some(SecretString::from(""));
        let error = LdapConnector::new(empty).err().unwrap().to_string();
        assert!(error.contains("unauthenticated bind"), "{error}");
    }

    #[test]
    fn bind_password_file_first_line_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ldap-password");
        fs::write(&path, "pass word \nsecond line\n").unwrap();
        let mut from_file = settings("ldap://127.0.0.1:3890");
        from_file.bind_password = None;
        from_file.bind_password_file = Some(path.clone());
        assert_eq!(
            from_file.read_bind_password().unwrap().expose_secret(),
            "pass word "
        );

        fs::write(&path, "\n").unwrap();
        let error = from_file.read_bind_password().unwrap_err().to_string();
        assert!(error.contains("is empty"), "{error}");
    }

    #[test]
    fn attribute_and_filter_are_checked() {
        let mut attribute = settings("ldaps://dc1.example.com");
        attribute.user_attribute = "mail)(uid=*".to_owned();
        assert!(validation_error(&attribute).contains("not an attribute name"));

        let mut oid = settings("ldaps://dc1.example.com");
        oid.user_attribute = "0.9.2342.19200300.100.1.3".to_owned();
        oid.validate().unwrap();

        let mut sam = settings("ldaps://dc1.example.com");
        sam.user_attribute = "sAMAccountName".to_owned();
        assert!(validation_error(&sam).contains("match_on = \"login_id\""));

        for filter in ["objectClass=user", "(objectClass=user", "(&(a=b)(c=d)"] {
            let mut bad = settings("ldaps://dc1.example.com");
            bad.user_filter = Some(filter.to_owned());
            assert!(
                validation_error(&bad).contains("not an LDAP filter"),
                "{filter}"
            );
        }
    }

    #[test]
    fn zero_timeouts_and_missing_ca_file_are_rejected() {
        let mut zero = settings("ldaps://dc1.example.com");
        zero.timeout_seconds = 0;
        assert!(validation_error(&zero).contains("at least 1"));

        let mut missing = settings("ldaps://dc1.example.com");
        missing.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(validation_error(&missing).contains("not found"));
    }

    #[test]
    fn ca_file_without_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let mut with_ca = settings("ldaps://dc1.example.com");
        with_ca.ca_file = Some(path);
        let error = LdapConnector::new(with_ca).err().unwrap().to_string();
        assert!(error.contains("contains no certificate"), "{error}");
    }

    #[test]
    fn result_codes_are_named() {
        assert_eq!(
            describe_result(49, "80090308: LdapErr: DSID-0C09044E, data 52e "),
            "result code 49 (invalidCredentials), 80090308: LdapErr: DSID-0C09044E, data 52e"
        );
        assert_eq!(describe_result(80, ""), "result code 80");
    }
}
