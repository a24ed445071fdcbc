//! CL Auth through OpenID Connect: the broker as a relying party.
//!
//! Authorization code flow with PKCE (S256), `state` and `nonce` kept in the
//! browser's server-side session, and the typed email sent as `login_hint`.
//! Discovery is cached and fetched again when an ID token names a signing key
//! the broker does not know, so a key rollover at the IdP needs no restart.
//! Microsoft Entra ID's multi-tenant discovery document names its issuer as
//! a template (`https://login.microsoftonline.com/{tenantid}/v2.0`); such an
//! issuer is checked against the token's `tid` claim.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use data_encoding::BASE64URL_NOPAD;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, JsonWebKeySet,
    LoginHint, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::alarms::{Alarm, AlarmBoard};

/// The claim names accepted as the user's identity.
pub const IDENTITY_CLAIMS: &[&str] = &["email", "preferred_username", "upn"];
const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The `[oidc]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// Name shown to users, such as "Contoso (Microsoft Entra ID)".
    pub name: String,
    /// Issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: Url,
    pub client_id: String,
    /// The client secret itself; better given as the environment variable
    /// UNIFIED_LOGIN_OIDC__CLIENT_SECRET or in `client_secret_file`.
    #[serde(default, skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// File whose first line is the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// `email`, `preferred_username` or `upn` (Entra's user principal name).
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    /// Offer "Mitel credentials" (a separate password) next to the IdP.
    #[serde(default)]
    pub mitel_credentials: bool,
    /// Minutes a fetched discovery document and key set are reused.
    #[serde(default = "default_refresh")]
    pub discovery_refresh_minutes: u32,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_identity_claim() -> String {
    "email".into()
}

fn default_refresh() -> u32 {
    60
}

impl OidcSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.name.trim().is_empty() {
            anyhow::bail!("oidc.name is empty: enter the name users should see");
        }
        if self.client_id.trim().is_empty() {
            anyhow::bail!("oidc.client_id is empty: copy it from the IdP's app registration");
        }
        if !IDENTITY_CLAIMS.contains(&self.identity_claim.as_str()) {
            anyhow::bail!(
                "oidc.identity_claim '{}' is not one of {}",
                self.identity_claim,
                IDENTITY_CLAIMS.join(", ")
            );
        }
        if !matches!(self.issuer.scheme(), "https" | "http") {
            anyhow::bail!("oidc.issuer '{}' must start with https://", self.issuer);
        }
        if self.client_secret.is_some() && self.client_secret_file.is_some() {
            anyhow::bail!("set oidc.client_secret or oidc.client_secret_file, not both");
        }
        Ok(())
    }

    fn secret(&self) -> anyhow::Result<SecretString> {
        if let Some(secret) = &self.client_secret {
            return Ok(secret.clone());
        }
        let Some(path) = &self.client_secret_file else {
            anyhow::bail!(
                "no OIDC client secret: set oidc.client_secret_file or the UNIFIED_LOGIN_OIDC__CLIENT_SECRET variable"
            );
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the OIDC client secret file {}", path.display())
        })?;
        let secret = text.lines().next().unwrap_or_default().trim().to_owned();
        if secret.is_empty() {
            anyhow::bail!("the OIDC client secret file {} is empty", path.display());
        }
        Ok(SecretString::from(secret))
    }
}

/// Values the browser's session keeps between the redirect and the callback.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingOidc {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingOidc { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider's discovery document is invalid: {0}")]
    Discovery(String),
    #[error("the token endpoint rejected the authorization code: {0}")]
    TokenRejected(String),
    #[error("the token response has no ID token")]
    MissingIdToken,
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    #[error("the ID token has no '{0}' claim")]
    MissingClaim(String),
}

struct CachedMetadata {
    fetched_at: Instant,
    metadata: CoreProviderMetadata,
    /// The issuer as a template when the IdP is Entra's multi-tenant endpoint.
    issuer_template: Option<String>,
}

pub struct OidcConnector {
    pub settings: OidcSettings,
    secret: SecretString,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    cache: RwLock<Option<CachedMetadata>>,
    alarms: Arc<AlarmBoard>,
}

impl OidcConnector {
    pub fn new(settings: OidcSettings, public_url: &Url) -> anyhow::Result<Self> {
        settings.validate()?;
        let secret = settings.secret()?;
        let redirect_uri = RedirectUrl::new(public_url.join("oidc/callback")?.to_string())?;
        // Redirects stay off: following them from the token endpoint could
        // send the client secret elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            settings,
            secret,
            redirect_uri,
            http,
            cache: RwLock::new(None),
            alarms: Arc::new(AlarmBoard::default()),
        })
    }

    /// Reports reachability to `alarms` instead of a board of its own.
    pub fn with_alarms(mut self, alarms: Arc<AlarmBoard>) -> Self {
        self.alarms = alarms;
        self
    }

    /// Fetches the discovery document and keys again, which raises or clears
    /// CL_CONNECT_FAILURE.
    pub async fn probe(&self) {
        if let Err(error) = self.provider(true).await {
            tracing::debug!(%error, "OpenID Connect health probe failed");
        }
    }

    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// Origins that the sign-in pages may post on to (the authorization endpoint's).
    pub fn form_action_origins(&self) -> Vec<String> {
        let mut origins = vec![self.settings.issuer.origin().ascii_serialization()];
        if let Ok(guard) = self.cache.read()
            && let Some(cached) = guard.as_ref()
        {
            let origin = cached
                .metadata
                .authorization_endpoint()
                .url()
                .origin()
                .ascii_serialization();
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        origins
    }

    /// Records whether the IdP responded, logging the CL_CONNECT_FAILURE
    /// alarm once when it is raised and once when it clears.
    fn note_reachable(&self, reachable: bool) {
        let detail = if reachable {
            format!("the identity provider {} responds", self.settings.issuer)
        } else {
            format!(
                "the identity provider {} cannot be reached",
                self.settings.issuer
            )
        };
        let now = chrono::Utc::now().timestamp();
        self.alarms
            .set(Alarm::ClConnectFailure, !reachable, &detail, now);
    }

    pub fn connect_failure(&self) -> bool {
        self.alarms.is_raised(Alarm::ClConnectFailure)
    }

    async fn provider(
        &self,
        force: bool,
    ) -> Result<(CoreProviderMetadata, Option<String>), OidcError> {
        let max_age = Duration::from_secs(u64::from(self.settings.discovery_refresh_minutes) * 60);
        if !force
            && let Ok(guard) = self.cache.read()
            && let Some(cached) = guard
                .as_ref()
                .filter(|cached| cached.fetched_at.elapsed() < max_age)
        {
            return Ok((cached.metadata.clone(), cached.issuer_template.clone()));
        }
        let result = self.discover().await;
        self.note_reachable(!matches!(result, Err(OidcError::Unreachable(_))));
        let (metadata, template) = result?;
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some(CachedMetadata {
                fetched_at: Instant::now(),
                metadata: metadata.clone(),
                issuer_template: template.clone(),
            });
        }
        Ok((metadata, template))
    }

    async fn discover(&self) -> Result<(CoreProviderMetadata, Option<String>), OidcError> {
        let base = self.settings.issuer.as_str().trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let body = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| OidcError::Unreachable(format!("{url}: {error}")))?
            .bytes()
            .await
            .map_err(|error| OidcError::Unreachable(format!("{url}: {error}")))?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|error| OidcError::Discovery(error.to_string()))?;

        let announced = metadata.issuer().as_str().trim_end_matches('/').to_owned();
        let template = if announced.contains(TENANT_PLACEHOLDER) {
            Some(announced)
        } else if announced == base {
            None
        } else {
            return Err(OidcError::Discovery(format!(
                "issuer '{announced}' is not the configured issuer '{base}'"
            )));
        };

        let jwks: JsonWebKeySet<_> = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|error| {
                OidcError::Unreachable(format!("JWKS {}: {error}", metadata.jwks_uri().as_str()))
            })?;
        Ok((metadata.set_jwks(jwks), template))
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.secret.expose_secret().to_owned())),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    /// Returns the authorization URL and what the session must keep for the callback.
    pub async fn authorization_url(
        &self,
        login_hint: &str,
        force_login: bool,
    ) -> Result<(Url, PendingOidc), OidcError> {
        let (metadata, _) = self.provider(false).await?;
        let client = self.client(metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .set_login_hint(LoginHint::new(login_hint.to_owned()));
        for scope in self
            .settings
            .scopes
            .iter()
            .filter(|scope| scope.as_str() != "openid")
        {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if force_login {
            request = request.add_prompt(CoreAuthPrompt::Login);
        }
        let (url, state, nonce) = request.url();
        let pending = PendingOidc {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        };
        Ok((url, pending))
    }

    /// Exchanges the code and returns the verified identity claim.
    pub async fn exchange(&self, code: &str, pending: &PendingOidc) -> Result<String, OidcError> {
        let (metadata, template) = self.provider(false).await?;
        let client = self.client(metadata);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|error| OidcError::Discovery(error.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        let response = match request.request_async(&self.http).await {
            Ok(response) => {
                self.note_reachable(true);
                response
            }
            Err(openidconnect::RequestTokenError::ServerResponse(error)) => {
                return Err(OidcError::TokenRejected(error.to_string()));
            }
            Err(error) => {
                self.note_reachable(false);
                return Err(OidcError::Unreachable(format!("token endpoint: {error}")));
            }
        };
        let id_token = response
            .id_token()
            .ok_or(OidcError::MissingIdToken)?
            .clone();
        let nonce = Nonce::new(pending.nonce.clone());

        let verified = {
            let verifier = client
                .id_token_verifier()
                .require_issuer_match(template.is_none());
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verified {
            Ok(claims) => claims,
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                // Perhaps the IdP rolled its signing key: fetch the key set once more.
                let (metadata, _) = self.provider(true).await?;
                let client = self.client(metadata);
                let verifier = client
                    .id_token_verifier()
                    .require_issuer_match(template.is_none());
                id_token
                    .claims(&verifier, &nonce)
                    .map_err(|error| OidcError::InvalidIdToken(error.to_string()))?
                    .clone()
            }
            Err(error) => return Err(OidcError::InvalidIdToken(error.to_string())),
        };

        let payload = unverified_payload(&id_token.to_string())?;
        if let Some(template) = &template {
            let tenant = payload
                .get("tid")
                .and_then(|value| value.as_str())
                .unwrap_or_default();
            check_tenant_issuer(template, claims.issuer().as_str(), tenant)?;
        }

        let claim = self.settings.identity_claim.as_str();
        let value = match claim {
            "email" => claims.email().map(|email| email.as_str().to_owned()),
            "preferred_username" => claims
                .preferred_username()
                .map(|name| name.as_str().to_owned()),
            // The signature of this payload was verified above.
            _ => payload
                .get(claim)
                .and_then(|value| value.as_str())
                .map(str::to_owned),
        };
        value
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| OidcError::MissingClaim(claim.to_owned()))
    }
}

/// Checks a token from a multi-tenant issuer: its `iss` must be the
/// discovery document's issuer template filled in with the token's `tid`.
fn check_tenant_issuer(template: &str, issuer: &str, tenant: &str) -> Result<(), OidcError> {
    let issuer = issuer.trim_end_matches('/');
    let valid_tenant = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid_tenant && issuer == template.replace(TENANT_PLACEHOLDER, tenant) {
        return Ok(());
    }
    Err(OidcError::InvalidIdToken(format!(
        "issuer '{issuer}' does not match '{template}' for tenant '{tenant}'"
    )))
}

/// Decodes the payload of a JWT whose signature the caller verified.
fn unverified_payload(jwt: &str) -> Result<serde_json::Value, OidcError> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| OidcError::InvalidIdToken("not a JWT".into()))?;
    let bytes = BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .map_err(|error| OidcError::InvalidIdToken(error.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|error| OidcError::InvalidIdToken(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
    const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    #[test]
    fn tenant_issuer_matches_its_tid() {
        let issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        assert!(check_tenant_issuer(TEMPLATE, &issuer, TENANT).is_ok());
    }

    #[test]
    fn tenant_issuer_rejects_other_tenant() {
        let issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        let other = "00000000-0000-4000-8000-000000000000";
        assert!(check_tenant_issuer(TEMPLATE, &issuer, other).is_err());
        assert!(check_tenant_issuer(TEMPLATE, &issuer, "").is_err());
        assert!(check_tenant_issuer(TEMPLATE, "https://evil.example/x/v2.0", "x").is_err());
        // A tid that smuggles a path cannot make the template match another host.
        let smuggled = "x/v2.0@evil.example";
        let forged = TEMPLATE.replace(TENANT_PLACEHOLDER, smuggled);
        assert!(check_tenant_issuer(TEMPLATE, &forged, smuggled).is_err());
    }

    #[test]
    fn payload_decodes_claims() {
        let payload = BASE64URL_NOPAD.encode(br#"{"tid":"t1","upn":"jane@example.com"}"#);
        let value = unverified_payload(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(value["upn"], "jane@example.com");
        assert!(unverified_payload("not-a-jwt").is_err());
    }

    #[test]
    fn settings_reject_unknown_claim() {
        let settings = OidcSettings {
            name: "Contoso".into(),
            issuer: Url::parse("https://idp.example").unwrap(),
            client_id: "id".into(),
            client_secret: Some(SecretString::from("s")),
            client_secret_file: None,
            scopes: default_scopes(),
            identity_claim: "sub".into(),
            mitel_credentials: false,
            discovery_refresh_minutes: 60,
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("identity_claim 'sub'"), "{error}");
    }
}
