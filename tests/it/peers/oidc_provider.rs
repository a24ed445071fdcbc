//! An OpenID Connect provider (OP) built on the npm package oidc-provider, on
//! a free loopback port, for the tests of the broker's relying party.
//!
//! [`OidcProvider::start`] writes the client and the users [`JANE`] and
//! [`OMAR`] to `config.json` in a fresh temporary folder and runs
//! `tests/peers/oidc-provider/provider.mjs` with Node.js. The OP has one
//! confidential client, which must use PKCE with S256 and authenticates with
//! `client_secret_basic` or `client_secret_post`. ID tokens are signed with
//! RS256 and carry the claims `email`, `email_verified`, `name`,
//! `given_name`, `family_name`, `preferred_username` and `upn` of the granted
//! scopes. The login form shows the `login_hint` of the authorization request
//! in its email field, as on Microsoft Entra ID, and consent needs no page.
//!
//! [`OidcProvider::set_mode`] breaks the next ID token or authorization
//! response on purpose, and [`OidcProvider::rotate_keys`] replaces the signing
//! key. `tests/peers/oidc-provider/README.md` describes the OP in full.

// The relying-party tests that use this OP come later, and not every test
// uses every helper.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::process::{LogFile, Peer, PeerProcess, PortInUse, missing_peer};
use super::{json_string, read_login_hints};

const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc-provider");
const PROVIDER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/oidc-provider/provider.mjs"
);

const INSTALL_HINT: &str = "install Node.js 20.18 or later with npm, \
     and run `npm ci --no-audit --no-fund` in tests/peers/oidc-provider";

/// Where the OP writes its stdout and stderr.
const PROVIDER_LOG: &str = "provider.log";

const PEER: Peer = Peer {
    name: "the oidc-provider OP",
    dir_prefix: "oidc-provider-",
    ready_path: "/.well-known/openid-configuration",
    logs: &[LogFile {
        heading: "oidc-provider OP log",
        path: PROVIDER_LOG,
    }],
    // `provider.mjs` exits with status 3 when its port is already in use.
    port_in_use: PortInUse::ExitCode(3),
};

pub const CLIENT_ID: &str = "unified-login-test";
pub const CLIENT_SECRET: &str = "unified-login-test-client-secret";

/// Names of the fields of the OP's login form, the same as on Entra ID's
/// sign-in page.
pub const EMAIL_FIELD: &str = "loginfmt";
pub const PASSWORD_FIELD: &str = "passwd";

/// The text that the login form shows after a wrong email or password.
pub const LOGIN_FAILED_MESSAGE: &str = "Your account or password is incorrect.";

/// The `aud` claim of the ID token after [`Mode::WrongAudience`].
pub const WRONG_AUDIENCE: &str = "other-client";
/// The `iss` claim of the ID token after [`Mode::WrongIssuer`].
pub const WRONG_ISSUER: &str = "http://127.0.0.1:1/wrong-issuer";

/// A user of the OP.
#[derive(Clone, Copy, Debug)]
pub struct OidcUser {
    /// The subject identifier, the `sub` claim: an opaque ID, not the email
    /// address.
    pub sub: &'static str,
    /// The login name and the `email` claim.
    pub email: &'static str,
    pub password: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub preferred_username: &'static str,
    /// The user principal name, the `upn` claim.
    pub upn: &'static str,
}

impl OidcUser {
    /// Returns the `name` claim: the given name and the family name.
    pub fn name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
    }
}

pub const JANE: OidcUser = OidcUser {
    sub: "3c1f9a7e-52d4-4b8e-a0f6-9e2d7c4b1a58",
    email: "jane@example.com",
    password: "jane-oidc-password",
    given_name: "Jane",
    family_name: "Doe",
    preferred_username: "jane@example.com",
    upn: "jane@example.com",
};

pub const OMAR: OidcUser = OidcUser {
    sub: "8b6e2d41-c9a3-4f70-b5d8-1e7a3c9f6b24",
    email: "omar@example.com",
    password: "omar-oidc-password",
    given_name: "Omar",
    family_name: "Haddad",
    preferred_username: "omar@example.com",
    upn: "omar@example.com",
};

pub const USERS: [OidcUser; 2] = [JANE, OMAR];

/// A test switch of the OP. Each mode other than [`Mode::Normal`] applies
/// once, to the next ID token or the next authorization, and then turns
/// itself off. An ID token mode and an authorization mode can be pending at
/// the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Turns off every pending mode.
    Normal,
    /// The next ID token has the `aud` claim [`WRONG_AUDIENCE`].
    WrongAudience,
    /// The next ID token was issued 15 minutes ago and expired 10 minutes
    /// ago.
    Expired,
    /// The next ID token has the `nonce` of the authorization request that
    /// the OP received before the request that led to this token. The token
    /// endpoint returns 500 when there was no such request.
    ReplayedNonce,
    /// The next ID token has the `iss` claim [`WRONG_ISSUER`].
    WrongIssuer,
    /// The next ID token is signed by a key that the JWKS does not contain,
    /// under the `kid` of the published key.
    BadSignature,
    /// The next authorization redirects to the client with
    /// `error=access_denied`.
    AccessDenied,
    /// The next authorization redirects to the client with
    /// `error=login_required`.
    LoginRequired,
}

impl Mode {
    /// Returns the mode's name in the OP's `POST /__test/mode` request.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::WrongAudience => "wrong-audience",
            Mode::Expired => "expired",
            Mode::ReplayedNonce => "replayed-nonce",
            Mode::WrongIssuer => "wrong-issuer",
            Mode::BadSignature => "bad-signature",
            Mode::AccessDenied => "access_denied",
            Mode::LoginRequired => "login_required",
        }
    }
}

/// A running oidc-provider OP. Dropping it kills Node.js and deletes the run
/// folder.
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The only redirect URI that the client may use.
    pub redirect_uri: String,
    process: PeerProcess,
}

impl OidcProvider {
    /// Starts an OP whose client has the single redirect URI `redirect_uri`.
    ///
    /// Runs `npm ci` in `tests/peers/oidc-provider` first when oidc-provider
    /// is not installed there, or not at the version that `package.json`
    /// pins. Returns `None`, after printing why, when Node.js, npm or the
    /// package is missing, unless the environment variable `CI` is `true` or
    /// `1`. Then it panics, so that CI cannot pass without running the OIDC
    /// tests. It also panics when three starts in a row do not serve the
    /// discovery document within 30 s each.
    pub fn start(redirect_uri: &str) -> Option<Self> {
        if let Err(reason) = installation() {
            return missing_peer(
                "OIDC peer test",
                &format!("{reason}; {INSTALL_HINT} to run it"),
            );
        }

        let process = PeerProcess::start(&PEER, |root, port| {
            provider_command(root, port, redirect_uri)
        });
        Some(Self {
            issuer: process.base_url(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            process,
        })
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Returns every `login_hint` query parameter that reached the
    /// authorization endpoint, oldest first. The OP records each hint before
    /// it checks the request, so hints of rejected requests are here too.
    pub fn login_hints(&self) -> Vec<String> {
        // provider.mjs writes each hint through encodeURIComponent, one per line.
        read_login_hints(&self.process.run_dir().join("login-hints.txt"))
    }

    /// Replaces the signing key with a new RSA key under a new `kid` and
    /// returns that `kid`. The JWKS then contains only the new key. Sessions
    /// and issued codes stay valid.
    pub async fn rotate_keys(&self) -> String {
        let body = self
            .post_control("/__test/rotate-keys", String::new())
            .await;
        // The OP returns {"kid":"...","previous_kid":"..."}, and no key id
        // contains a quote or a backslash.
        let start = body
            .find("\"kid\":\"")
            .unwrap_or_else(|| panic!("no kid in the rotate-keys response {body}"))
            + "\"kid\":\"".len();
        let length = body[start..]
            .find('"')
            .unwrap_or_else(|| panic!("unterminated kid in the rotate-keys response {body}"));
        body[start..start + length].to_owned()
    }

    /// Sets the test switch `mode`. See [`Mode`] for what each one does.
    pub async fn set_mode(&self, mode: Mode) {
        let body = format!("{{\"mode\":\"{}\"}}", mode.as_str());
        self.post_control("/__test/mode", body).await;
    }

    /// Sends `POST path` with a JSON body to a test control endpoint and
    /// returns the response body. Panics unless the OP returns 200 OK.
    async fn post_control(&self, path: &str, body: String) -> String {
        let url = format!("{}{path}", self.issuer);
        // Loopback traffic must not go through a proxy from the environment.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("build an HTTP client");
        let response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {url} failed: {error}\n{}", self.logs()));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("read the body of POST {url}: {error}"));
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "POST {url} returned {text}\n{}",
            self.logs()
        );
        text
    }

    /// Returns the OP's log: one line for each HTTP request, each login,
    /// consent and test switch, and every error that oidc-provider reports.
    pub fn log(&self) -> String {
        self.process.read_log(PROVIDER_LOG)
    }

    /// Returns the run folder, which contains `config.json`, `provider.log`
    /// and `login-hints.txt`.
    pub fn run_dir(&self) -> &Path {
        self.process.run_dir()
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// Writes `config.json` into the run folder `root` and builds the command
/// that runs `provider.mjs` on `port`.
fn provider_command(root: &Path, port: u16, redirect_uri: &str) -> Command {
    let config_path = root.join("config.json");
    let login_hints_path = root.join("login-hints.txt");
    let config = config_json(redirect_uri, &login_hints_path.to_string_lossy(), &USERS);
    fs::write(&config_path, config)
        .unwrap_or_else(|error| panic!("write {}: {error}", config_path.display()));

    let mut command = Command::new("node");
    command
        .arg(PROVIDER_SCRIPT)
        .arg("--port")
        .arg(port.to_string())
        .arg("--config")
        .arg(&config_path);
    command
}

/// Returns the outcome of [`check_installation`], which runs once per test
/// process, so that parallel tests wait for one `npm ci` instead of running
/// several.
///
/// NOTE: two test processes (as under cargo-nextest) that both find the
/// package missing still run `npm ci` at the same time. CI runs it before
/// the tests.
fn installation() -> Result<(), String> {
    static INSTALLATION: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLATION.get_or_init(check_installation).clone()
}

/// Checks that Node.js is recent enough and that oidc-provider is installed
/// at the pinned version, and runs `npm ci` once when it is not.
fn check_installation() -> Result<(), String> {
    match probe_installation()? {
        Probe::Ready => return Ok(()),
        Probe::PackageMissing => eprintln!(
            "oidc-provider is not installed in {PEER_DIR}; running npm ci --no-audit --no-fund"
        ),
        Probe::VersionMismatch => eprintln!(
            "oidc-provider in {PEER_DIR}/node_modules is not the version that package.json pins; \
             running npm ci --no-audit --no-fund"
        ),
    }
    run_npm_ci()?;
    match probe_installation()? {
        Probe::Ready => Ok(()),
        Probe::PackageMissing => Err("oidc-provider is still missing after npm ci".to_owned()),
        Probe::VersionMismatch => {
            Err("oidc-provider is still not the pinned version after npm ci".to_owned())
        }
    }
}

enum Probe {
    Ready,
    PackageMissing,
    VersionMismatch,
}

/// Runs a Node.js one-liner in the peer folder that checks the Node.js
/// version and compares the installed oidc-provider version with the pin in
/// `package.json`.
fn probe_installation() -> Result<Probe, String> {
    // URL.parse, which oidc-provider 9 calls, came with Node.js 20.18.
    const PROBE: &str = "\
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 18)) process.exit(5);
const pinned = require('./package.json').dependencies['oidc-provider'];
let installed;
try { installed = require('oidc-provider/package.json').version; } catch { process.exit(3); }
process.exit(installed === pinned ? 0 : 4);
";
    let output = Command::new("node")
        .args(["-e", PROBE])
        .current_dir(PEER_DIR)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("node not found on PATH: {error}"))?;
    match output.status.code() {
        Some(0) => Ok(Probe::Ready),
        Some(3) => Ok(Probe::PackageMissing),
        Some(4) => Ok(Probe::VersionMismatch),
        Some(5) => Err(format!(
            "Node.js {} is too old, oidc-provider needs 20.18 or later",
            node_version()
        )),
        _ => Err(format!(
            "the Node.js installation check exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|error| format!("(version unknown: {error})"))
}

fn run_npm_ci() -> Result<(), String> {
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(PEER_DIR)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("npm not found on PATH: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "npm ci in {PEER_DIR} exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Renders the config file that `provider.mjs --config` reads.
fn config_json(redirect_uri: &str, login_hints_file: &str, users: &[OidcUser]) -> String {
    let users: Vec<String> = users
        .iter()
        .map(|user| {
            format!(
                "{{\"sub\": {}, \"email\": {}, \"password\": {}, \"given_name\": {}, \
                 \"family_name\": {}, \"preferred_username\": {}, \"upn\": {}}}",
                json_string(user.sub),
                json_string(user.email),
                json_string(user.password),
                json_string(user.given_name),
                json_string(user.family_name),
                json_string(user.preferred_username),
                json_string(user.upn),
            )
        })
        .collect();
    format!(
        "{{\n  \"client\": {{\"client_id\": {}, \"client_secret\": {}, \"redirect_uris\": [{}]}},\n  \
         \"users\": [\n    {}\n  ],\n  \"login_hints_file\": {}\n}}\n",
        json_string(CLIENT_ID),
        json_string(CLIENT_SECRET),
        json_string(redirect_uri),
        users.join(",\n    "),
        json_string(login_hints_file),
    )
}

#[cfg(test)]
mod tests {
    //! Checks of the OP itself, driven by hand-built authorization requests
    //! with a cookie-keeping HTTP client in place of a browser.

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use data_encoding::BASE64URL_NOPAD;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::Verifier;
    use reqwest::redirect::Policy;
    use reqwest::{StatusCode, Url};
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::*;

    /// Nothing listens here: the tests stop at the redirect to it.
    const REDIRECT_URI: &str = "http://127.0.0.1:9/oidc/callback";

    /// Returns a client that keeps cookies and does not follow redirects,
    /// so that each test can check every step of the flow.
    fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .no_proxy()
            .build()
            .expect("build an HTTP client")
    }

    /// The `state`, `nonce` and PKCE code verifier of one authorization
    /// request.
    struct Request {
        state: String,
        nonce: String,
        verifier: String,
    }

    impl Request {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let number = COUNTER.fetch_add(1, Ordering::Relaxed);
            Self {
                state: format!("state-{number}"),
                nonce: format!("nonce-{number}"),
                // RFC 7636 requires 43 to 128 unreserved characters.
                verifier: format!("verifier-{number}-{}", "v".repeat(40)),
            }
        }

        /// Returns the S256 code challenge: BASE64URL(SHA-256(verifier)).
        fn challenge(&self) -> String {
            BASE64URL_NOPAD.encode(&Sha256::digest(self.verifier.as_bytes()))
        }
    }

    /// Sends an authorization request for the scopes `openid email profile`
    /// with PKCE, plus the `extra` query parameters.
    async fn authorize(
        client: &reqwest::Client,
        op: &OidcProvider,
        request: &Request,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let challenge = request.challenge();
        let mut query = vec![
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", "openid email profile"),
            ("redirect_uri", REDIRECT_URI),
            ("state", request.state.as_str()),
            ("nonce", request.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        query.extend_from_slice(extra);
        client
            .get(op.authorization_endpoint())
            .query(&query)
            .send()
            .await
            .expect("GET authorization endpoint")
    }

    /// Returns the absolute target of a redirect response.
    fn location(op: &OidcProvider, response: &reqwest::Response) -> String {
        assert!(
            response.status().is_redirection(),
            "{} returned {}, expected a redirect\n{}",
            response.url(),
            response.status(),
            op.log()
        );
        let target = response
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location header")
            .to_str()
            .expect("Location header is ASCII");
        Url::parse(&op.issuer)
            .and_then(|issuer| issuer.join(target))
            .expect("valid Location URL")
            .to_string()
    }

    /// Follows redirects from `url` and returns the first URL on the
    /// redirect URI.
    async fn follow_to_client(client: &reqwest::Client, op: &OidcProvider, url: String) -> String {
        let mut url = url;
        for _ in 0..10 {
            if url.starts_with(REDIRECT_URI) {
                return url;
            }
            let response = client.get(&url).send().await.expect("follow redirect");
            url = location(op, &response);
        }
        panic!(
            "no redirect to {REDIRECT_URI} after 10 steps, last {url}\n{}",
            op.log()
        );
    }

    fn query_param(url: &str, name: &str) -> Option<String> {
        Url::parse(url)
            .ok()?
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Returns the unescaped `value` of the first `<input>` whose `name` is
    /// `name`.
    fn input_value(html: &str, name: &str) -> Option<String> {
        let name_attribute = format!(" name=\"{name}\"");
        html.split("<input")
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
            .find(|tag| tag.contains(&name_attribute))
            .and_then(|tag| {
                let start = tag.find(" value=\"")? + " value=\"".len();
                let end = start + tag[start..].find('"')?;
                Some(unescape_html(&tag[start..end]))
            })
    }

    /// Undoes the escaping of `escapeHtml` in provider.mjs.
    fn unescape_html(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// Starts an authorization with `hint` as `login_hint`, checks that the
    /// login form shows the hint, logs `user` in and returns the URL that
    /// the OP redirects to on the client.
    async fn log_in(
        client: &reqwest::Client,
        op: &OidcProvider,
        request: &Request,
        user: OidcUser,
        hint: &str,
    ) -> String {
        let response = authorize(client, op, request, &[("login_hint", hint)]).await;
        let interaction = location(op, &response);
        let page = client
            .get(&interaction)
            .send()
            .await
            .expect("GET login page");
        assert_eq!(page.status(), StatusCode::OK, "login page\n{}", op.log());
        let html = page.text().await.expect("login page body");
        assert_eq!(
            input_value(&html, EMAIL_FIELD).as_deref(),
            Some(hint),
            "email field of the login form:\n{html}"
        );

        let response = client
            .post(format!("{interaction}/login"))
            .form(&[(EMAIL_FIELD, user.email), (PASSWORD_FIELD, user.password)])
            .send()
            .await
            .expect("POST login form");
        let next = location(op, &response);
        follow_to_client(client, op, next).await
    }

    /// Redeems `code` at the token endpoint with `client_secret_basic`.
    async fn redeem(op: &OidcProvider, code: &str, verifier: &str) -> reqwest::Response {
        browser()
            .post(op.token_endpoint())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .expect("POST token endpoint")
    }

    /// Logs `user` in with a new client and returns the ID token of the
    /// token response.
    async fn id_token_for(op: &OidcProvider, request: &Request, user: OidcUser) -> String {
        let callback = log_in(&browser(), op, request, user, user.email).await;
        let code = query_param(&callback, "code")
            .unwrap_or_else(|| panic!("no code in {callback}\n{}", op.log()));
        let response = redeem(op, &code, &request.verifier).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "token response\n{}",
            op.log()
        );
        let body: Value = response.json().await.expect("token response is JSON");
        body["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no id_token in {body}"))
            .to_owned()
    }

    /// Decodes part `index` of a compact JWT: 0 is the header, 1 the
    /// payload.
    fn jwt_part(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).expect("JWT part");
        let json = BASE64URL_NOPAD
            .decode(part.as_bytes())
            .expect("JWT part is base64url");
        serde_json::from_slice(&json).expect("JWT part is JSON")
    }

    async fn jwks(op: &OidcProvider) -> Value {
        browser()
            .get(op.jwks_uri())
            .send()
            .await
            .expect("GET jwks_uri")
            .json()
            .await
            .expect("JWKS is JSON")
    }

    fn key_ids(jwks: &Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .expect("JWKS keys")
            .iter()
            .map(|key| key["kid"].as_str().expect("kid").to_owned())
            .collect()
    }

    /// Returns whether the RS256 signature of `token` verifies with the key
    /// of `jwks` that has the token's `kid`. A `kid` that the JWKS lacks
    /// does not verify.
    fn verifies_rs256(token: &str, jwks: &Value) -> bool {
        let header = jwt_part(token, 0);
        assert_eq!(header["alg"], "RS256", "JWT header {header}");
        let Some(key) = jwks["keys"]
            .as_array()
            .expect("JWKS keys")
            .iter()
            .find(|key| key["kid"] == header["kid"])
        else {
            return false;
        };
        let component = |name: &str| {
            let encoded = key[name].as_str().expect("RSA key component");
            let bytes = BASE64URL_NOPAD
                .decode(encoded.as_bytes())
                .expect("base64url");
            BigNum::from_slice(&bytes).expect("big number")
        };
        let rsa = Rsa::from_public_components(component("n"), component("e")).expect("RSA key");
        let public_key = PKey::from_rsa(rsa).expect("public key");

        let (signing_input, signature) = token.rsplit_once('.').expect("JWT signature");
        let signature = BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .expect("signature is base64url");
        let mut verifier = Verifier::new(MessageDigest::sha256(), &public_key).expect("verifier");
        verifier
            .update(signing_input.as_bytes())
            .expect("hash the signing input");
        verifier.verify(&signature).unwrap_or(false)
    }

    fn unix_now() -> i64 {
        let elapsed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        i64::try_from(elapsed.as_secs()).expect("time fits in i64")
    }

    #[tokio::test]
    async fn discovery_matches_client_settings() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };

        let document: Value = browser()
            .get(op.discovery_url())
            .send()
            .await
            .expect("GET discovery document")
            .json()
            .await
            .expect("discovery document is JSON");

        assert_eq!(document["issuer"], op.issuer.as_str());
        assert_eq!(
            document["authorization_endpoint"],
            op.authorization_endpoint()
        );
        assert_eq!(document["token_endpoint"], op.token_endpoint());
        assert_eq!(document["jwks_uri"], op.jwks_uri());
        assert_eq!(
            document["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(
            document["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(
            document["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
        assert_eq!(
            document["scopes_supported"],
            serde_json::json!(["openid", "email", "profile"])
        );
        assert_eq!(
            document["response_types_supported"],
            serde_json::json!(["code"])
        );
        assert_eq!(
            document["authorization_response_iss_parameter_supported"],
            true
        );
    }

    #[tokio::test]
    async fn login_returns_signed_id_token() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let request = Request::new();

        let callback = log_in(&browser(), &op, &request, JANE, JANE.email).await;

        assert_eq!(
            query_param(&callback, "state").as_deref(),
            Some(request.state.as_str())
        );
        assert_eq!(
            query_param(&callback, "iss").as_deref(),
            Some(op.issuer.as_str())
        );
        let code = query_param(&callback, "code").expect("code in the redirect");
        let response = redeem(&op, &code, &request.verifier).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "token response\n{}",
            op.log()
        );
        let body: Value = response.json().await.expect("token response is JSON");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "openid email profile");
        let id_token = body["id_token"].as_str().expect("id_token");
        let claims = jwt_part(id_token, 1);
        for (claim, expected) in [
            ("iss", op.issuer.as_str()),
            ("aud", CLIENT_ID),
            ("sub", JANE.sub),
            ("nonce", request.nonce.as_str()),
            ("email", JANE.email),
            ("name", JANE.name().as_str()),
            ("given_name", JANE.given_name),
            ("family_name", JANE.family_name),
            ("preferred_username", JANE.preferred_username),
            ("upn", JANE.upn),
        ] {
            assert_eq!(claims[claim], expected, "claim {claim} in {claims}");
        }
        assert_eq!(claims["email_verified"], true, "claims {claims}");
        let expires_in = claims["exp"].as_i64().expect("exp") - unix_now();
        assert!(
            (3500..=3600).contains(&expires_in),
            "the ID token expires in {expires_in} s"
        );
        assert!(
            verifies_rs256(id_token, &jwks(&op).await),
            "ID token signature\n{}",
            op.log()
        );
        assert_eq!(op.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn token_endpoint_checks_client_and_pkce() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let request = Request::new();
        let callback = log_in(&browser(), &op, &request, OMAR, "").await;
        let code = query_param(&callback, "code").expect("code in the redirect");
        let token_request = |secret: &'static str, verifier: String| {
            let code = code.clone();
            let url = op.token_endpoint();
            async move {
                browser()
                    .post(url)
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", REDIRECT_URI),
                        ("code_verifier", verifier.as_str()),
                        ("client_id", CLIENT_ID),
                        ("client_secret", secret),
                    ])
                    .send()
                    .await
                    .expect("POST token endpoint")
            }
        };

        let wrong_secret = token_request("wrong-secret", request.verifier.clone()).await;
        let wrong_verifier = token_request(CLIENT_SECRET, format!("{}x", request.verifier)).await;
        let posted_secret = token_request(CLIENT_SECRET, request.verifier.clone()).await;
        let reused_code = token_request(CLIENT_SECRET, request.verifier.clone()).await;

        assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
        let wrong_secret: Value = wrong_secret.json().await.expect("error is JSON");
        assert_eq!(wrong_secret["error"], "invalid_client");
        assert_eq!(wrong_verifier.status(), StatusCode::BAD_REQUEST);
        let wrong_verifier: Value = wrong_verifier.json().await.expect("error is JSON");
        assert_eq!(wrong_verifier["error"], "invalid_grant");
        // The failed attempts above did not use up the code.
        assert_eq!(posted_secret.status(), StatusCode::OK, "{}", op.log());
        let posted_secret: Value = posted_secret.json().await.expect("token response is JSON");
        assert_eq!(
            jwt_part(posted_secret["id_token"].as_str().expect("id_token"), 1)["sub"],
            OMAR.sub
        );
        assert_eq!(reused_code.status(), StatusCode::BAD_REQUEST);
        assert_eq!(op.login_hints(), vec![String::new()]);
    }

    #[tokio::test]
    async fn authorization_without_pkce_is_rejected() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };

        let response = browser()
            .get(op.authorization_endpoint())
            .query(&[
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("scope", "openid"),
                ("redirect_uri", REDIRECT_URI),
                ("state", "no-pkce"),
            ])
            .send()
            .await
            .expect("GET authorization endpoint");

        let callback = location(&op, &response);
        assert!(callback.starts_with(REDIRECT_URI), "redirect {callback}");
        assert_eq!(
            query_param(&callback, "error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(query_param(&callback, "state").as_deref(), Some("no-pkce"));
    }

    #[tokio::test]
    async fn wrong_password_shows_form_again() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let client = browser();
        let request = Request::new();
        let response = authorize(&client, &op, &request, &[("login_hint", JANE.email)]).await;
        let interaction = location(&op, &response);
        let post_login = |email: &'static str, password: &'static str| {
            client
                .post(format!("{interaction}/login"))
                .form(&[(EMAIL_FIELD, email), (PASSWORD_FIELD, password)])
                .send()
        };

        let retry = post_login(JANE.email, OMAR.password)
            .await
            .expect("POST login form");
        assert_eq!(retry.status(), StatusCode::OK);
        let retry_html = retry.text().await.expect("login page body");
        // Email addresses match without regard to case.
        let success = post_login("Jane@Example.COM", JANE.password)
            .await
            .expect("POST login form");

        assert!(
            retry_html.contains(LOGIN_FAILED_MESSAGE),
            "error message:\n{retry_html}"
        );
        assert_eq!(
            input_value(&retry_html, EMAIL_FIELD).as_deref(),
            Some(JANE.email)
        );
        let callback = follow_to_client(&client, &op, location(&op, &success)).await;
        assert!(
            query_param(&callback, "code").is_some(),
            "redirect {callback}"
        );
    }

    #[tokio::test]
    async fn id_token_modes_change_one_token() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };

        for mode in [
            Mode::WrongAudience,
            Mode::Expired,
            Mode::WrongIssuer,
            Mode::BadSignature,
        ] {
            op.set_mode(mode).await;
            let broken = id_token_for(&op, &Request::new(), JANE).await;
            let normal = id_token_for(&op, &Request::new(), JANE).await;
            let jwks = jwks(&op).await;
            let claims = jwt_part(&broken, 1);

            match mode {
                Mode::WrongAudience => assert_eq!(claims["aud"], WRONG_AUDIENCE),
                Mode::Expired => {
                    let expired_ago = unix_now() - claims["exp"].as_i64().expect("exp");
                    assert!(
                        (600..=660).contains(&expired_ago),
                        "expired {expired_ago} s ago"
                    );
                }
                Mode::WrongIssuer => assert_eq!(claims["iss"], WRONG_ISSUER),
                Mode::BadSignature => assert!(
                    !verifies_rs256(&broken, &jwks),
                    "{mode:?}: the signature still verifies"
                ),
                _ => unreachable!("not an ID token mode: {mode:?}"),
            }
            if mode != Mode::BadSignature {
                assert!(verifies_rs256(&broken, &jwks), "{mode:?}: signature");
            }
            let normal_claims = jwt_part(&normal, 1);
            assert_eq!(normal_claims["aud"], CLIENT_ID, "{mode:?}: next token");
            assert_eq!(
                normal_claims["iss"],
                op.issuer.as_str(),
                "{mode:?}: next token"
            );
            assert!(
                normal_claims["exp"].as_i64().expect("exp") > unix_now(),
                "{mode:?}: next token expired"
            );
            assert!(
                verifies_rs256(&normal, &jwks),
                "{mode:?}: next token signature"
            );
        }
    }

    #[tokio::test]
    async fn replayed_nonce_repeats_previous_nonce() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let first = Request::new();
        let second = Request::new();

        let first_token = id_token_for(&op, &first, OMAR).await;
        op.set_mode(Mode::ReplayedNonce).await;
        let second_token = id_token_for(&op, &second, OMAR).await;

        assert_eq!(jwt_part(&first_token, 1)["nonce"], first.nonce.as_str());
        assert_eq!(jwt_part(&second_token, 1)["nonce"], first.nonce.as_str());
        assert!(verifies_rs256(&second_token, &jwks(&op).await));
    }

    #[tokio::test]
    async fn authorization_modes_return_errors() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };

        for (mode, error, prompt) in [
            (Mode::AccessDenied, "access_denied", None),
            (Mode::LoginRequired, "login_required", None),
            (Mode::AccessDenied, "access_denied", Some("none")),
            (Mode::LoginRequired, "login_required", Some("none")),
        ] {
            let client = browser();
            let request = Request::new();
            let mut extra = vec![("login_hint", JANE.email)];
            extra.extend(prompt.map(|prompt| ("prompt", prompt)));
            op.set_mode(mode).await;

            let response = authorize(&client, &op, &request, &extra).await;
            let callback = follow_to_client(&client, &op, location(&op, &response)).await;

            assert_eq!(
                query_param(&callback, "error").as_deref(),
                Some(error),
                "{mode:?} with prompt {prompt:?}: {callback}"
            );
            assert_eq!(
                query_param(&callback, "state").as_deref(),
                Some(request.state.as_str())
            );
            assert_eq!(query_param(&callback, "code"), None);
        }
        // The modes are used up, so the next authorization shows the login form.
        let response = authorize(&browser(), &op, &Request::new(), &[]).await;
        assert!(
            location(&op, &response).starts_with(&format!("{}/interaction/", op.issuer)),
            "{}",
            op.log()
        );
    }

    #[tokio::test]
    async fn rotate_keys_replaces_jwks_key() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let client = browser();
        let request = Request::new();
        let old_token = id_token_for(&op, &request, JANE).await;
        let old_kid = jwt_part(&old_token, 0)["kid"]
            .as_str()
            .expect("kid")
            .to_owned();
        assert_eq!(key_ids(&jwks(&op).await), vec![old_kid.clone()]);
        // A login session that starts before the rotation must survive it.
        let callback = log_in(&client, &op, &Request::new(), JANE, JANE.email).await;
        assert!(
            query_param(&callback, "code").is_some(),
            "redirect {callback}"
        );

        let new_kid = op.rotate_keys().await;
        let jwks = jwks(&op).await;
        let new_token = id_token_for(&op, &Request::new(), JANE).await;
        let single_sign_on = authorize(&client, &op, &Request::new(), &[]).await;

        assert_ne!(new_kid, old_kid);
        assert_eq!(key_ids(&jwks), vec![new_kid.clone()]);
        assert_eq!(jwt_part(&new_token, 0)["kid"], new_kid.as_str());
        assert!(verifies_rs256(&new_token, &jwks), "new token signature");
        assert!(
            !verifies_rs256(&old_token, &jwks),
            "the old key is still in the JWKS"
        );
        let single_sign_on = location(&op, &single_sign_on);
        assert!(
            single_sign_on.starts_with(REDIRECT_URI),
            "the session did not survive the rotation: {single_sign_on}\n{}",
            op.log()
        );
    }

    #[tokio::test]
    async fn login_hints_keep_special_characters() {
        let Some(op) = OidcProvider::start(REDIRECT_URI) else {
            return;
        };
        let client = browser();
        let hints = [
            "jane@example.com",
            "two\nlines & 100% \"quoted\"",
            "",
            "zoë@example.com",
        ];

        // Without a client_id the OP rejects each request, but it has
        // recorded the hint before that.
        for hint in hints {
            let response = client
                .get(op.authorization_endpoint())
                .query(&[("login_hint", hint)])
                .send()
                .await
                .expect("GET authorization endpoint");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        client
            .get(op.authorization_endpoint())
            .send()
            .await
            .expect("GET authorization endpoint");

        assert_eq!(op.login_hints(), hints.map(str::to_owned).to_vec());
    }
}
