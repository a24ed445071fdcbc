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
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc-provider");
const PROVIDER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/oidc-provider/provider.mjs"
);

const INSTALL_HINT: &str = "install Node.js 20.18 or later with npm, \
     and run `npm ci --no-audit --no-fund` in tests/peers/oidc-provider";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a start is retried when another process took the free port
/// between the port check and the OP's bind.
const START_ATTEMPTS: u32 = 3;

/// Exit status of `provider.mjs` when its port is already in use.
const EXIT_PORT_IN_USE: i32 = 3;

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
    /// The subject identifier, the `sub` claim. Entra ID puts an opaque ID
    /// there too, never the email address.
    pub sub: &'static str,
    /// The login name and the `email` claim.
    pub email: &'static str,
    pub password: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub preferred_username: &'static str,
    /// The user principal name, as Entra ID's optional `upn` claim carries
    /// it.
    pub upn: &'static str,
}

impl OidcUser {
    /// The `name` claim.
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
    /// the OP received before the one that the token answers. The token
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
    /// The mode's name in the OP's `POST /__test/mode` request.
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
    port: u16,
    dir: TempDir,
    child: Child,
}

/// A start attempt that failed because the OP could not bind its port.
struct PortInUse;

impl OidcProvider {
    /// Starts an OP whose client has the single redirect URI `redirect_uri`.
    ///
    /// Runs `npm ci` in `tests/peers/oidc-provider` first when oidc-provider
    /// is not installed there, or not at the version that `package.json`
    /// pins. Returns `None`, after printing why, when Node.js, npm or the
    /// package is missing, unless the environment variable `CI` is `true` or
    /// `1`. Then it panics, so that CI cannot pass without running the OIDC
    /// tests. It also panics when the OP does not serve its discovery
    /// document within 30 s.
    pub fn start(redirect_uri: &str) -> Option<Self> {
        if let Err(reason) = installation() {
            if running_in_ci() {
                panic!("cannot start the oidc-provider OP: {reason}; {INSTALL_HINT}");
            }
            eprintln!("OIDC peer test did not run: {reason}; {INSTALL_HINT} to run it");
            return None;
        }

        for _ in 0..START_ATTEMPTS {
            let mut provider = Self::spawn(redirect_uri);
            match provider.wait_until_ready() {
                Ok(()) => return Some(provider),
                Err(PortInUse) => continue,
            }
        }
        panic!("the oidc-provider OP found its port in use {START_ATTEMPTS} times in a row");
    }

    /// Writes `config.json` into a fresh run folder and starts
    /// `provider.mjs` on a free port.
    fn spawn(redirect_uri: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("oidc-provider-")
            .tempdir()
            .expect("create a temporary folder for the oidc-provider OP");
        let root = dir.path();
        let config_path = root.join("config.json");
        let login_hints_path = root.join("login-hints.txt");
        let config = config_json(
            redirect_uri,
            &login_hints_path.to_string_lossy(),
            &USERS,
        );
        fs::write(&config_path, config)
            .unwrap_or_else(|error| panic!("write {}: {error}", config_path.display()));

        let port = free_port();
        let log_file = fs::File::create(root.join("provider.log")).expect("create provider.log");
        let child = Command::new("node")
            .arg(PROVIDER_SCRIPT)
            .arg("--port")
            .arg(port.to_string())
            .arg("--config")
            .arg(&config_path)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone provider.log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start node tests/peers/oidc-provider/provider.mjs");

        Self {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            port,
            dir,
            child,
        }
    }

    /// Polls the discovery document until it returns 200 OK.
    ///
    /// Returns `Err(PortInUse)` when the OP exits because its port was
    /// taken, and panics with the log on any other failure.
    fn wait_until_ready(&mut self) -> Result<(), PortInUse> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("check the node process") {
                if status.code() == Some(EXIT_PORT_IN_USE) {
                    return Err(PortInUse);
                }
                panic!(
                    "the oidc-provider OP exited with {status} before it served its discovery document\n{}",
                    self.logs()
                );
            }
            match http_get(self.port, "/.well-known/openid-configuration") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => panic!(
                    "GET {} returned HTTP status {status}, expected 200\n{body}\n{}",
                    self.discovery_url(),
                    self.logs()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        panic!(
            "the oidc-provider OP did not serve {} within {} s\n{}",
            self.discovery_url(),
            STARTUP_TIMEOUT.as_secs(),
            self.logs()
        );
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
        let path = self.dir.path().join("login-hints.txt");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(error) => panic!("read {}: {error}", path.display()),
        };
        // provider.mjs writes each hint through encodeURIComponent, one per line.
        text.lines().map(percent_decode).collect()
    }

    /// Replaces the signing key with a new RSA key under a new `kid` and
    /// returns that `kid`. The JWKS then contains only the new key. Sessions
    /// and issued codes stay valid.
    pub async fn rotate_keys(&self) -> String {
        let body = self.post_control("/__test/rotate-keys", String::new()).await;
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
        fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }

    /// Returns the run folder, which contains `config.json`, `provider.log`
    /// and `login-hints.txt`.
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    fn logs(&self) -> String {
        format!(
            "run folder: {}\n--- oidc-provider OP log ---\n{}",
            self.dir.path().display(),
            self.log()
        )
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("no free loopback port")
}

/// Sends `GET path` over HTTP/1.0 and returns the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;

    let invalid = |message: String| std::io::Error::new(ErrorKind::InvalidData, message);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid(format!("HTTP response without a blank line: {response:?}")))?;
    // The status line reads "HTTP/1.x 200 OK".
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("invalid HTTP status line in {head:?}")))?;
    Ok((status, body.to_owned()))
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

/// Quotes `value` as a JSON string.
fn json_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            character if u32::from(character) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

/// Decodes `%XX` escapes, as JavaScript's `encodeURIComponent` writes them.
/// Bytes that do not form UTF-8 become U+FFFD.
fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
