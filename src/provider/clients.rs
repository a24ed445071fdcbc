//! The broker's own clients (web client, native clients, meetings
//! application), registered in the config file, and the two checks every
//! endpoint makes on them: redirect URI matching and client authentication.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::{Host, Url};

/// Scopes the broker supports. `offline_access` requests a refresh token.
pub const SUPPORTED_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// The `[oauth2]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuth2Config {
    /// Lifetime of access tokens and ID tokens, in minutes.
    pub access_token_minutes: u32,
    /// Lifetime of a refresh-token family from the first sign-in, in days.
    /// Rotation does not extend it.
    pub refresh_token_days: u32,
    /// Lifetime of an authorization code, in seconds.
    pub code_seconds: u32,
    pub clients: Vec<ClientSettings>,
}

impl Default for OAuth2Config {
    fn default() -> Self {
        Self {
            access_token_minutes: 10,
            refresh_token_days: 30,
            code_seconds: 60,
            clients: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Runs on a server and can keep a secret (`client_secret_basic` or
    /// `client_secret_post`).
    Confidential,
    /// Runs on the user's device and cannot keep a secret, so PKCE (S256)
    /// is mandatory instead.
    Public,
}

/// One `[[oauth2.clients]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub id: String,
    /// Name shown to users, such as "MiCollab web client".
    #[serde(default)]
    pub name: Option<String>,
    pub kind: ClientKind,
    /// Secret of a confidential client; better given in `secret_file` or the
    /// environment than in the file itself.
    #[serde(default, skip_serializing)]
    pub secret: Option<SecretString>,
    /// File whose first line is the client secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Redirect URIs, matched exactly. An `http` URI on a loopback address
    /// registered without a port matches any port (RFC 8252, section 7.3).
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    SUPPORTED_SCOPES
        .iter()
        .map(|scope| (*scope).to_owned())
        .collect()
}

/// A registered client, checked and ready for requests.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub kind: ClientKind,
    secret_digest: Option<[u8; 32]>,
    redirect_uris: Vec<Url>,
    post_logout_redirect_uris: Vec<Url>,
    pub scopes: Vec<String>,
}

/// The reason client authentication failed. The token endpoint returns
/// `invalid_client` for all of them, and the variants exist for the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientAuthError {
    #[error("unknown client_id")]
    UnknownClient,
    #[error("a confidential client sent no secret")]
    MissingSecret,
    #[error("the client secret is wrong")]
    WrongSecret,
    #[error("a public client sent a secret")]
    UnexpectedSecret,
}

impl Client {
    pub fn from_settings(settings: &ClientSettings) -> anyhow::Result<Self> {
        let id = settings.id.trim();
        if id.is_empty() || id != settings.id || id.len() > 200 {
            bail!("oauth2.clients: a client id is empty, too long or has spaces around it");
        }
        let context = || format!("oauth2.clients '{id}'");
        let secret = settings.secret().with_context(context)?;
        let secret_digest = match (settings.kind, secret) {
            (ClientKind::Confidential, Some(secret)) => {
                if secret.expose_secret().len() < 32 {
                    bail!(
                        "oauth2.clients '{id}': the secret has fewer than 32 characters; \
                         generate one with `openssl rand -base64 32`"
                    );
                }
                Some(digest(secret.expose_secret()))
            }
            (ClientKind::Confidential, None) => bail!(
                "oauth2.clients '{id}' is confidential but has no secret: set secret or secret_file, \
                 or make it kind = \"public\""
            ),
            (ClientKind::Public, Some(_)) => bail!(
                "oauth2.clients '{id}' is public but has a secret: a public client cannot keep one, \
                 so remove it or make the client kind = \"confidential\""
            ),
            (ClientKind::Public, None) => None,
        };
        if settings.redirect_uris.is_empty() {
            bail!("oauth2.clients '{id}' has no redirect_uris");
        }
        let redirect_uris =
            parse_uris(&settings.redirect_uris, "redirect_uris").with_context(context)?;
        let post_logout_redirect_uris = parse_uris(
            &settings.post_logout_redirect_uris,
            "post_logout_redirect_uris",
        )
        .with_context(context)?;
        for scope in &settings.scopes {
            if !SUPPORTED_SCOPES.contains(&scope.as_str()) {
                bail!(
                    "oauth2.clients '{id}': unknown scope '{scope}'; supported scopes are {}",
                    SUPPORTED_SCOPES.join(", ")
                );
            }
        }
        Ok(Self {
            id: id.to_owned(),
            name: settings.name.clone().unwrap_or_else(|| id.to_owned()),
            kind: settings.kind,
            secret_digest,
            redirect_uris,
            post_logout_redirect_uris,
            scopes: settings.scopes.clone(),
        })
    }

    /// Returns the registered redirect URI that `requested` matches.
    pub fn redirect_uri(&self, requested: &str) -> Option<Url> {
        let requested_url = Url::parse(requested).ok()?;
        self.redirect_uris
            .iter()
            .any(|registered| redirect_matches(registered, requested, &requested_url))
            .then_some(requested_url)
    }

    pub fn post_logout_redirect_uri(&self, requested: &str) -> Option<Url> {
        let requested_url = Url::parse(requested).ok()?;
        self.post_logout_redirect_uris
            .iter()
            .any(|registered| redirect_matches(registered, requested, &requested_url))
            .then_some(requested_url)
    }

    /// Checks the secret a client presented, in constant time.
    pub fn authenticate(&self, secret: Option<&str>) -> Result<(), ClientAuthError> {
        match (&self.secret_digest, secret) {
            (Some(expected), Some(secret)) => {
                // Digests of equal length make the comparison independent of
                // the secret's length as well as its content.
                if bool::from(digest(secret).ct_eq(expected)) {
                    Ok(())
                } else {
                    Err(ClientAuthError::WrongSecret)
                }
            }
            (Some(_), None) => Err(ClientAuthError::MissingSecret),
            (None, Some(_)) => Err(ClientAuthError::UnexpectedSecret),
            (None, None) => Ok(()),
        }
    }

    /// Origins and schemes that a browser is redirected to after a form post
    /// on the broker's pages, for the `form-action` directive of the CSP.
    pub fn form_action_sources(&self) -> impl Iterator<Item = String> + '_ {
        self.redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
            .map(|uri| {
                if is_any_port_loopback(uri) {
                    format!(
                        "{}://{}:*",
                        uri.scheme(),
                        uri.host_str().unwrap_or_default()
                    )
                } else if uri.has_host() {
                    uri.origin().ascii_serialization()
                } else {
                    format!("{}:", uri.scheme())
                }
            })
    }
}

impl ClientSettings {
    fn secret(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => bail!("set secret or secret_file, not both"),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the client secret file {}", path.display())
                })?;
                let secret = text.lines().next().unwrap_or_default().trim().to_owned();
                if secret.is_empty() {
                    bail!("the client secret file {} is empty", path.display());
                }
                Ok(Some(SecretString::from(secret)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// All registered clients, by id.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistry {
    clients: Vec<Client>,
    /// The clients' redirect targets for the CSP's `form-action`, each
    /// preceded by a space. Clients change only with the config, so the list
    /// is built once rather than on every response.
    form_action_sources: String,
}

impl ClientRegistry {
    pub fn from_config(config: &OAuth2Config) -> anyhow::Result<Self> {
        let mut seen = HashSet::new();
        let mut clients = Vec::with_capacity(config.clients.len());
        for settings in &config.clients {
            let client = Client::from_settings(settings)?;
            if !seen.insert(client.id.clone()) {
                bail!(
                    "oauth2.clients: the client id '{}' is registered twice",
                    client.id
                );
            }
            clients.push(client);
        }
        let mut sources: Vec<String> = clients
            .iter()
            .flat_map(Client::form_action_sources)
            .collect();
        sources.sort();
        sources.dedup();
        let form_action_sources = sources.iter().map(|source| format!(" {source}")).collect();
        Ok(Self {
            clients,
            form_action_sources,
        })
    }

    /// Returns the sources to append to `form-action 'self'`.
    pub fn form_action_sources(&self) -> &str {
        &self.form_action_sources
    }

    pub fn get(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|client| client.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn parse_uris(raw: &[String], field: &str) -> anyhow::Result<Vec<Url>> {
    raw.iter()
        .map(|uri| {
            let url = Url::parse(uri)
                .with_context(|| format!("{field}: '{uri}' is not an absolute URI"))?;
            if url.fragment().is_some() {
                bail!("{field}: '{uri}' has a fragment, which redirect URIs must not have");
            }
            if url.scheme() == "http" && !is_loopback(&url) {
                bail!(
                    "{field}: '{uri}' uses plain http on a host other than a loopback address; use https"
                );
            }
            if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
                bail!("{field}: '{uri}' uses a scheme that cannot be a redirect target");
            }
            Ok(url)
        })
        .collect()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => address.is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Returns whether `url` is a loopback `http` URI registered without a port,
/// because native apps listen on whatever port the system gives them.
fn is_any_port_loopback(url: &Url) -> bool {
    url.scheme() == "http" && url.port().is_none() && is_loopback(url)
}

fn redirect_matches(registered: &Url, requested: &str, requested_url: &Url) -> bool {
    if registered.as_str() == requested {
        return true;
    }
    if !is_any_port_loopback(registered) {
        return false;
    }
    // The requested URI, exactly as sent, must be the registered one with a
    // port added. Comparing parsed URLs would accept spellings such as
    // `127.1` or `Http:` that the token request then does not repeat.
    let Some(port) = requested_url.port().filter(|port| *port != 0) else {
        return false;
    };
    let mut with_port = registered.clone();
    if with_port.set_port(Some(port)).is_err() {
        return false;
    }
    with_port.as_str() == requested
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(
        kind: ClientKind,
        secret: Option<&str>,
        redirect_uris: &[&str],
    ) -> anyhow::Result<Client> {
        Client::from_settings(&ClientSettings {
            id: "app".into(),
            name: None,
            kind,
            secret: secret.map(|secret| SecretString::from(secret.to_owned())),
            secret_file: None,
            redirect_uris: redirect_uris.iter().map(|uri| (*uri).to_owned()).collect(),
            post_logout_redirect_uris: Vec::new(),
            scopes: default_scopes(),
        })
    }

    #[test]
    fn redirect_uri_matches_exactly() {
        let client = client(
            ClientKind::Public,
            None,
            &["https://uc.example.com/cb", "com.example.uc:/oauth"],
        )
        .unwrap();
        assert!(client.redirect_uri("https://uc.example.com/cb").is_some());
        assert!(client.redirect_uri("com.example.uc:/oauth").is_some());
        for other in [
            "https://uc.example.com/cb/",
            "https://uc.example.com/cb?x=1",
            "https://uc.example.com:8443/cb",
            "https://UC.example.com/cb#",
            "https://uc.example.com.evil.example/cb",
            "com.example.uc:/oauth/other",
            "not a uri",
        ] {
            assert!(client.redirect_uri(other).is_none(), "{other}");
        }
    }

    #[test]
    fn loopback_redirect_accepts_any_port() {
        let client = client(
            ClientKind::Public,
            None,
            &["http://127.0.0.1/callback", "http://[::1]/callback"],
        )
        .unwrap();
        assert!(
            client
                .redirect_uri("http://127.0.0.1:51234/callback")
                .is_some()
        );
        assert!(client.redirect_uri("http://127.0.0.1/callback").is_some());
        assert!(client.redirect_uri("http://[::1]:40000/callback").is_some());
        assert!(
            client
                .redirect_uri("http://127.0.0.1:51234/other")
                .is_none()
        );
        assert!(
            client
                .redirect_uri("http://127.0.0.2:51234/callback")
                .is_none()
        );
        assert!(
            client
                .redirect_uri("https://127.0.0.1:51234/callback")
                .is_none()
        );
        for spelling in [
            "http://127.1:5555/callback",
            "http://127.0.0.1:05555/callback",
            "http://127.0.0.1.:5555/callback",
            "Http://127.0.0.1:5555/callback",
            "http://127.0.0.1:5555/x/../callback",
            "http://127.0.0.1:5555/%63allback",
            "http://127.0.0.1:80/callback",
            "http://127.0.0.1:/callback",
            "http://127.0.0.1:0/callback",
        ] {
            assert!(client.redirect_uri(spelling).is_none(), "{spelling}");
        }
    }

    #[test]
    fn loopback_with_registered_port_is_exact() {
        let client = client(
            ClientKind::Public,
            None,
            &["http://127.0.0.1:9000/callback"],
        )
        .unwrap();
        assert!(
            client
                .redirect_uri("http://127.0.0.1:9000/callback")
                .is_some()
        );
        assert!(
            client
                .redirect_uri("http://127.0.0.1:9001/callback")
                .is_none()
        );
    }

    #[test]
    fn registration_rejects_unsafe_uris() {
        for uri in [
            "http://uc.example.com/cb",
            "https://uc.example.com/cb#x",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(client(ClientKind::Public, None, &[uri]).is_err(), "{uri}");
        }
    }

    #[test]
    fn secrets_follow_the_client_kind() {
        let long = "s".repeat(40);
        assert!(client(ClientKind::Confidential, None, &["https://a.example/cb"]).is_err());
        assert!(
            client(
                ClientKind::Confidential,
                Some("short"),
                &["https://a.example/cb"]
            )
            .is_err()
        );
        assert!(client(ClientKind::Public, Some(&long), &["https://a.example/cb"]).is_err());

        let confidential = client(
            ClientKind::Confidential,
            Some(&long),
            &["https://a.example/cb"],
        )
        .unwrap();
        assert_eq!(confidential.authenticate(Some(&long)), Ok(()));
        assert_eq!(
            confidential.authenticate(Some("wrong")),
            Err(ClientAuthError::WrongSecret)
        );
        assert_eq!(
            confidential.authenticate(None),
            Err(ClientAuthError::MissingSecret)
        );

        let public = client(ClientKind::Public, None, &["https://a.example/cb"]).unwrap();
        assert_eq!(public.authenticate(None), Ok(()));
        assert_eq!(
            public.authenticate(Some("x")),
            Err(ClientAuthError::UnexpectedSecret)
        );
    }

    #[test]
    fn form_action_sources_cover_each_kind() {
        let client = client(
            ClientKind::Public,
            None,
            &[
                "http://127.0.0.1/callback",
                "com.example.uc:/oauth",
                "https://uc.example.com/cb",
            ],
        )
        .unwrap();
        let sources: Vec<String> = client.form_action_sources().collect();
        assert_eq!(
            sources,
            [
                "http://127.0.0.1:*",
                "com.example.uc:",
                "https://uc.example.com"
            ]
        );
    }
}
