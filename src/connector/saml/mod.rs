//! CL Auth through SAML 2.0: the broker as a service provider.
//!
//! The broker sends an AuthnRequest over the HTTP-Redirect binding with the
//! typed email as `login_hint`, and the IdP responds over the HTTP-POST
//! binding at the ACS. IdP-initiated (unsolicited) responses are accepted
//! only when the settings allow them. Pending requests, the
//! replay cache and the IdP settings live in the database so that several
//! broker instances can share them.

pub mod certs;
pub mod dsig;
pub mod metadata;
pub mod request;
pub mod response;
pub mod settings;
pub mod sp_keys;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use url::Url;

use self::certs::SigningCertificate;
use self::request::AuthnRequestParams;
use self::response::{ResponseError, ValidationContext, VerifiedAssertion};
use self::settings::{IdpSettings, ImportedMetadata};
use self::sp_keys::SpKeyPair;
use crate::config::{SamlConfig, SpKeyLocation};
use crate::directory::SamlStore;

/// How long the IdP settings read from the database are reused before the
/// next read, so that `saml set` on another instance takes effect quickly.
const SETTINGS_CACHE: Duration = Duration::from_secs(5);
/// Minimum time between two metadata fetches triggered by unknown keys, so a
/// flood of forged responses cannot turn the broker against the IdP.
const MIN_METADATA_REFETCH: Duration = Duration::from_secs(60);

/// The IdP settings in force, with their certificates parsed.
#[derive(Debug)]
pub struct ActiveIdp {
    pub settings: IdpSettings,
    pub certificates: Vec<SigningCertificate>,
    /// `config file` or `database`.
    pub source: &'static str,
}

struct CachedIdp {
    loaded_at: Instant,
    idp: Option<Arc<ActiveIdp>>,
}

pub struct SamlBroker {
    entity_id: String,
    acs_url: String,
    keys: SpKeyPair,
    key_location: SpKeyLocation,
    sign_requests: bool,
    config_idp: Option<IdpSettings>,
    store: Arc<dyn SamlStore>,
    cache: RwLock<Option<CachedIdp>>,
    last_metadata_fetch: Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl SamlBroker {
    /// Builds the SAML side of the broker and loads the SP key pair,
    /// creating it at first start. `now` is the Unix time in seconds.
    pub async fn new(
        config: &SamlConfig,
        public_url: &Url,
        store: Arc<dyn SamlStore>,
        now: i64,
    ) -> anyhow::Result<Self> {
        let entity_id = match &config.sp_entity_id {
            Some(entity_id) => entity_id.clone(),
            None => public_url.join("saml/metadata")?.to_string(),
        };
        let acs_url = public_url.join("saml/acs")?.to_string();
        let common_name = public_url.host_str().unwrap_or("unified-login");
        let key_location = config.sp_key_location();
        let keys = sp_keys::load(&key_location, store.as_ref(), common_name, now).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            entity_id,
            acs_url,
            keys,
            key_location,
            sign_requests: config.sign_authn_requests,
            config_idp: config.idp.clone(),
            store,
            cache: RwLock::new(None),
            last_metadata_fetch: Mutex::new(None),
            http,
        })
    }

    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    pub fn acs_url(&self) -> &str {
        &self.acs_url
    }

    /// Returns the hex SHA-256 fingerprint of the SP certificate.
    pub fn sp_certificate_fingerprint(&self) -> anyhow::Result<String> {
        self.keys.fingerprint()
    }

    /// Returns where the SP key pair is kept.
    pub fn sp_key_location(&self) -> &SpKeyLocation {
        &self.key_location
    }

    pub fn metadata_xml(&self) -> anyhow::Result<String> {
        let der = self.keys.certificate.to_der()?;
        metadata::sp_metadata_xml(&self.entity_id, &self.acs_url, &der, self.sign_requests)
    }

    /// Returns the IdP in force, or `None` when no IdP is configured. Invalid
    /// stored settings are an error, so a broken configuration never means
    /// "verify nothing".
    pub async fn active_idp(&self) -> anyhow::Result<Option<Arc<ActiveIdp>>> {
        if let Ok(guard) = self.cache.read()
            && let Some(cached) = guard
                .as_ref()
                .filter(|cached| cached.loaded_at.elapsed() < SETTINGS_CACHE)
        {
            return Ok(cached.idp.clone());
        }
        let idp = self.load_idp().await?.map(Arc::new);
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some(CachedIdp {
                loaded_at: Instant::now(),
                idp: idp.clone(),
            });
        }
        Ok(idp)
    }

    async fn load_idp(&self) -> anyhow::Result<Option<ActiveIdp>> {
        let (settings, source) = match &self.config_idp {
            Some(settings) => (settings.clone(), "config file"),
            None => match self.store.load_idp_settings().await? {
                Some(json) => (
                    serde_json::from_str::<IdpSettings>(&json)
                        .context("stored SAML IdP settings are unreadable")?,
                    "database",
                ),
                None => return Ok(None),
            },
        };
        let certificates = settings
            .validate()
            .with_context(|| format!("SAML IdP settings from the {source} are invalid"))?;
        Ok(Some(ActiveIdp {
            settings,
            certificates,
            source,
        }))
    }

    fn forget_cached_idp(&self) {
        if let Ok(mut guard) = self.cache.write() {
            *guard = None;
        }
    }

    /// Returns the origin of the IdP's Sign-in URL as last loaded, for the
    /// Content-Security-Policy `form-action` of the sign-in pages: browsers
    /// check a form's whole redirect chain against it.
    pub fn cached_sso_origin(&self) -> Option<String> {
        let guard = self.cache.read().ok()?;
        let idp = guard.as_ref()?.idp.as_ref()?;
        Some(idp.settings.sso_url.origin().ascii_serialization())
    }

    /// Returns the URL that sends the browser to the IdP with a new AuthnRequest.
    pub fn authn_redirect(
        &self,
        idp: &ActiveIdp,
        request_id: &str,
        relay_key: &str,
        login_hint: &str,
        force_authn: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Url> {
        let params = AuthnRequestParams {
            request_id,
            sp_entity_id: &self.entity_id,
            acs_url: &self.acs_url,
            sso_url: &idp.settings.sso_url,
            relay_state: relay_key,
            login_hint,
            force_authn,
            subject: idp.settings.send_subject.then_some(login_hint),
            issue_instant: now,
        };
        request::redirect_url(&params, self.sign_requests.then_some(&self.keys.key))
    }

    /// Validates a response. When its signature matches no configured key and
    /// a metadata URL is set, the metadata is fetched once more and the
    /// response checked again, so an IdP certificate rollover needs no restart.
    pub async fn validate(
        &self,
        idp: &ActiveIdp,
        xml: &str,
        expected_request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedAssertion, ResponseError> {
        let first = self.validate_with(idp, xml, expected_request_id, now);
        if first != Err(ResponseError::Signature) || idp.settings.metadata_url.is_none() {
            return first;
        }
        match self.refresh_metadata(true).await {
            Ok(true) => {}
            Ok(false) => return first,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "SAML metadata refresh failed");
                return first;
            }
        }
        match self.active_idp().await {
            Ok(Some(refreshed)) => self.validate_with(&refreshed, xml, expected_request_id, now),
            _ => first,
        }
    }

    fn validate_with(
        &self,
        idp: &ActiveIdp,
        xml: &str,
        expected_request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedAssertion, ResponseError> {
        let mut audiences = vec![self.entity_id.clone()];
        audiences.extend(idp.settings.extra_audiences.iter().cloned());
        let context = ValidationContext {
            certificates: &idp.certificates,
            idp_entity_id: &idp.settings.entity_id,
            acs_url: &self.acs_url,
            audiences: &audiences,
            expected_request_id,
            allow_unsolicited: idp.settings.allow_unsolicited,
            clock_skew: chrono::Duration::seconds(i64::from(idp.settings.clock_skew_seconds)),
            allow_sha1: idp.settings.insecure_allow_sha1,
            identity_attribute: idp.settings.identity_attribute.as_deref(),
            now,
        };
        response::validate(xml, &context)
    }

    /// Fetches the IdP metadata and stores changed certificates. Returns
    /// whether anything changed. With `on_demand`, at most one fetch per
    /// minute is made.
    /// Fetches the IdP's metadata URL without importing it, as a health
    /// check; returns `None` when no metadata URL is configured.
    pub async fn probe_metadata(&self) -> Option<anyhow::Result<()>> {
        let idp = match self.active_idp().await {
            Ok(idp) => idp?,
            Err(error) => return Some(Err(error)),
        };
        let url = idp.settings.metadata_url.clone()?;
        let result = self
            .http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(drop)
            .with_context(|| format!("cannot fetch SAML metadata from {url}"));
        Some(result)
    }

    pub async fn refresh_metadata(&self, on_demand: bool) -> anyhow::Result<bool> {
        let Some(idp) = self.active_idp().await? else {
            return Ok(false);
        };
        let Some(url) = idp.settings.metadata_url.clone() else {
            return Ok(false);
        };
        if on_demand && !self.may_fetch_metadata() {
            return Ok(false);
        }
        let xml = self
            .http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch SAML metadata from {url}"))?
            .text()
            .await?;
        let imported =
            ImportedMetadata::parse(&xml).with_context(|| format!("metadata at {url}"))?;
        if imported.entity_id != idp.settings.entity_id {
            anyhow::bail!(
                "metadata at {url} is for entity '{}', not the configured '{}'",
                imported.entity_id,
                idp.settings.entity_id
            );
        }
        if imported.certificates_pem == idp.settings.certificates_pem
            && imported.sso_url == idp.settings.sso_url
        {
            return Ok(false);
        }
        if idp.source != "database" {
            tracing::warn!(%url, "IdP metadata changed, but the IdP settings come from the config file; update it");
            return Ok(false);
        }
        let mut settings = idp.settings.clone();
        settings.certificates_pem = imported.certificates_pem;
        settings.sso_url = imported.sso_url;
        settings.validate()?;
        self.store
            .save_idp_settings(&serde_json::to_string(&settings)?, Utc::now().timestamp())
            .await?;
        self.forget_cached_idp();
        tracing::info!(%url, "IdP metadata changed: stored the new signing certificates");
        Ok(true)
    }

    fn may_fetch_metadata(&self) -> bool {
        let Ok(mut last) = self.last_metadata_fetch.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < MIN_METADATA_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}
