//! The identity provider's settings as the administrator enters them, and
//! import from the IdP's metadata XML.

use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};
use serde::{Deserialize, Serialize};
use url::Url;

use super::certs::{CertificateError, SigningCertificate, parse_certificates, to_pem};

/// Entra ID's claim that carries the user principal name.
pub const ENTRA_UPN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
pub const DEFAULT_CLOCK_SKEW_SECONDS: u32 = 120;

/// Settings of the one SAML identity provider, stored in the database (set
/// with `unified-login saml set` or `saml import-metadata`) or given in the
/// `[saml.idp]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdpSettings {
    /// Name shown to users on buttons, such as "Contoso (Microsoft Entra ID)".
    pub name: String,
    /// The IdP's Sign-in URL (SingleSignOnService, HTTP-Redirect binding).
    pub sso_url: Url,
    pub entity_id: String,
    /// One or more signing certificates in PEM, one after the other.
    pub certificates_pem: String,
    /// Offer "Mitel credentials" (a separate password) next to the IdP.
    #[serde(default)]
    pub mitel_credentials: bool,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u32,
    /// Accept responses to no request of ours (IdP-initiated login).
    #[serde(default)]
    pub allow_unsolicited: bool,
    /// Send the typed email as the AuthnRequest's Subject. Entra ID rejects
    /// requests with a Subject, so this stays off unless an IdP needs it.
    #[serde(default)]
    pub send_subject: bool,
    /// Attribute that carries the user's email; `None` uses the NameID.
    #[serde(default)]
    pub identity_attribute: Option<String>,
    /// Audiences accepted besides the SP entity ID, such as Entra's
    /// `spn:<application id>`.
    #[serde(default)]
    pub extra_audiences: Vec<String>,
    /// Accept RSA-SHA1 and other legacy signature algorithms. Off by default
    /// because SHA-1 signatures can be forged.
    #[serde(default)]
    pub insecure_allow_sha1: bool,
    /// Metadata URL re-fetched on a schedule and when a response is signed
    /// by a key not configured yet.
    #[serde(default)]
    pub metadata_url: Option<Url>,
}

fn default_skew() -> u32 {
    DEFAULT_CLOCK_SKEW_SECONDS
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the IdP name is empty: enter the name users should see")]
    EmptyName,
    #[error("the IdP entity ID is empty: copy it from the IdP's setup page")]
    EmptyEntityId,
    #[error("the Sign-in URL '{0}' must start with https:// or http://")]
    SsoUrlScheme(String),
    #[error("invalid signing certificates")]
    Certificates(#[from] CertificateError),
    #[error("the clock skew of {0} seconds is too large: use at most 600")]
    SkewTooLarge(u32),
    #[error("the metadata is not valid SAML metadata XML: {0}")]
    MetadataXml(String),
    #[error("the metadata has no IDPSSODescriptor: is this the IdP's metadata, not the SP's?")]
    MetadataNotIdp,
    #[error("the metadata has no entityID")]
    MetadataNoEntityId,
    #[error("the metadata has no SingleSignOnService with the HTTP-Redirect binding")]
    MetadataNoRedirectSso,
    #[error("the metadata has no signing certificate")]
    MetadataNoCertificate,
}

impl IdpSettings {
    /// Creates settings with the given IdP values and every switch at its default.
    pub fn new(name: &str, sso_url: Url, entity_id: &str, certificates_pem: &str) -> Self {
        Self {
            name: name.to_owned(),
            sso_url,
            entity_id: entity_id.to_owned(),
            certificates_pem: certificates_pem.to_owned(),
            mitel_credentials: false,
            clock_skew_seconds: DEFAULT_CLOCK_SKEW_SECONDS,
            allow_unsolicited: false,
            send_subject: false,
            identity_attribute: None,
            extra_audiences: Vec::new(),
            insecure_allow_sha1: false,
            metadata_url: None,
        }
    }

    /// Checks every field, returning the parsed signing certificates. A
    /// configuration without a certificate is an error, never "verify nothing".
    pub fn validate(&self) -> Result<Vec<SigningCertificate>, SettingsError> {
        if self.name.trim().is_empty() {
            return Err(SettingsError::EmptyName);
        }
        if self.entity_id.trim().is_empty() {
            return Err(SettingsError::EmptyEntityId);
        }
        if !matches!(self.sso_url.scheme(), "https" | "http") {
            return Err(SettingsError::SsoUrlScheme(self.sso_url.to_string()));
        }
        if self.clock_skew_seconds > 600 {
            return Err(SettingsError::SkewTooLarge(self.clock_skew_seconds));
        }
        Ok(parse_certificates(&self.certificates_pem)?)
    }

    /// Builds settings from IdP metadata XML. Settings that metadata does not
    /// carry (name, switches) come from `base` when given.
    pub fn from_metadata(
        xml: &str,
        name: &str,
        base: Option<&IdpSettings>,
    ) -> Result<Self, SettingsError> {
        let imported = ImportedMetadata::parse(xml)?;
        let mut settings = base.cloned().unwrap_or_else(|| {
            IdpSettings::new(name, imported.sso_url.clone(), &imported.entity_id, "")
        });
        if !name.is_empty() {
            settings.name = name.to_owned();
        }
        settings.sso_url = imported.sso_url;
        settings.entity_id = imported.entity_id;
        settings.certificates_pem = imported.certificates_pem;
        settings.validate()?;
        Ok(settings)
    }
}

/// The settings the broker takes from IdP metadata.
pub struct ImportedMetadata {
    pub entity_id: String,
    pub sso_url: Url,
    pub certificates_pem: String,
}

impl ImportedMetadata {
    pub fn parse(xml: &str) -> Result<Self, SettingsError> {
        // Metadata comes from outside; a DOCTYPE could declare entities.
        if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
            return Err(SettingsError::MetadataXml(
                "DOCTYPE declarations are not allowed".into(),
            ));
        }
        let descriptor = xml
            .parse::<EntityDescriptor>()
            .map_err(|error| SettingsError::MetadataXml(error.to_string()))?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .ok_or(SettingsError::MetadataNoEntityId)?;
        let idp = descriptor
            .idp_sso_descriptors
            .as_ref()
            .and_then(|list| list.first())
            .ok_or(SettingsError::MetadataNotIdp)?;

        let sso_url = idp
            .single_sign_on_services
            .iter()
            .find(|service| service.binding == HTTP_REDIRECT_BINDING)
            .and_then(|service| Url::parse(&service.location).ok())
            .ok_or(SettingsError::MetadataNoRedirectSso)?;

        let mut certificates_pem = String::new();
        for key in &idp.key_descriptors {
            let signing = key
                .key_use
                .as_deref()
                .is_none_or(|key_use| key_use.is_empty() || key_use == "signing");
            let Some(data) = key.key_info.x509_data.as_ref().filter(|_| signing) else {
                continue;
            };
            for certificate in &data.certificates {
                let parsed = parse_certificates(certificate)?;
                for cert in parsed {
                    let pem = to_pem(cert.der.der_data());
                    if !certificates_pem.contains(&pem) {
                        certificates_pem.push_str(&pem);
                    }
                }
            }
        }
        if certificates_pem.is_empty() {
            return Err(SettingsError::MetadataNoCertificate);
        }
        Ok(Self {
            entity_id,
            sso_url,
            certificates_pem,
        })
    }
}
