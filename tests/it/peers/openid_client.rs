//! An OpenID Connect relying party (RP) built on the npm package
//! openid-client, on a free loopback port, for the end-to-end tests of the
//! broker's OAuth 2.0 / OpenID Connect provider.
//!
//! [`OpenidClientRp::start`] writes the issuer and the clients to
//! `config.json` in a fresh temporary folder and runs
//! `tests/peers/openid-client/rp.mjs` with Node.js. For each client `NAME`
//! the RP serves `/NAME/start`, `/NAME/callback`, `/NAME/logout` and
//! `/NAME/signed-out`, and shows the outcome of a flow as JSON in
//! `<pre id="result">`. `tests/peers/openid-client/README.md` describes the
//! RP in full.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::json_string;
use super::process::{LogFile, Peer, PeerProcess, PortInUse, missing_peer};

const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/openid-client");
const RP_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/openid-client/rp.mjs"
);

/// The package that `package.json` pins.
const PACKAGE: &str = "openid-client";

/// openid-client 6 needs Node.js 20 or later, according to its README.
const MIN_NODE_MAJOR: u32 = 20;

const INSTALL_HINT: &str = "install Node.js 20 or later with npm, \
     and run `npm ci --no-audit --no-fund` in tests/peers/openid-client";

/// Where the RP writes its stdout and stderr.
const RP_LOG: &str = "rp.log";

const PEER: Peer = Peer {
    name: "the openid-client RP",
    dir_prefix: "openid-client-",
    ready_path: "/healthz",
    logs: &[LogFile {
        heading: "openid-client RP log",
        path: RP_LOG,
    }],
    // `rp.mjs` exits with status 3 when its port is already in use.
    port_in_use: PortInUse::ExitCode(3),
};

/// How a client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic authentication with the client secret.
    SecretBasic,
    /// The client secret in the form body.
    SecretPost,
    /// A public client: only `client_id`, no secret.
    None,
}

impl ClientAuth {
    /// Returns the `token_endpoint_auth_method` value of RFC 7591.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::SecretBasic => "client_secret_basic",
            ClientAuth::SecretPost => "client_secret_post",
            ClientAuth::None => "none",
        }
    }
}

/// One client that the RP serves under `/NAME/`.
#[derive(Clone, Debug)]
pub struct RpClient {
    /// The first path segment of the client's pages: lowercase letters,
    /// digits and hyphens.
    pub name: &'static str,
    pub client_id: &'static str,
    /// `None` for a public client.
    pub client_secret: Option<&'static str>,
    pub auth: ClientAuth,
    /// The space-separated `scope` of the authorization request.
    pub scope: &'static str,
}

/// A running openid-client RP. Dropping it kills Node.js and deletes the run
/// folder.
pub struct OpenidClientRp {
    process: PeerProcess,
}

impl OpenidClientRp {
    /// Starts an RP for `issuer` that serves `clients`. The RP runs discovery
    /// on the first `/NAME/start` of each client, so the issuer need not
    /// listen yet.
    ///
    /// Runs `npm ci` in `tests/peers/openid-client` first when openid-client
    /// is not installed there, or not at the version that `package.json`
    /// pins. Returns `None`, after printing why, when Node.js, npm or the
    /// package is missing, unless `harness::in_ci` reports CI. Then it
    /// panics, so that CI cannot pass without running the provider tests. It
    /// also panics when three starts in a row do not serve `/healthz` within
    /// 30 s each.
    pub fn start(issuer: &str, clients: &[RpClient]) -> Option<Self> {
        if let Err(reason) = installation() {
            return missing_peer(
                "openid-client peer test",
                &format!("{reason}; {INSTALL_HINT} to run it"),
            );
        }

        let process =
            PeerProcess::start(&PEER, |root, port| rp_command(root, port, issuer, clients));
        Some(Self { process })
    }

    /// Returns the URL of the page `page` (such as `start` or `logout`) of
    /// the client `name`.
    pub fn url(&self, name: &str, page: &str) -> String {
        self.process.url(&format!("/{name}/{page}"))
    }

    /// Returns the URL of `/NAME/start` with `query` (such as `prompt`,
    /// `login_hint` or `max_age`), which the RP passes on to the
    /// authorization request.
    pub fn start_url(&self, name: &str, query: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&self.url(name, "start")).expect("RP start URL");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.into()
    }

    /// Returns the redirect URI that the RP sends for the client `name`.
    pub fn redirect_uri(&self, name: &str) -> String {
        self.url(name, "callback")
    }

    /// Returns the `post_logout_redirect_uri` that the RP sends for the
    /// client `name`.
    pub fn post_logout_redirect_uri(&self, name: &str) -> String {
        self.url(name, "signed-out")
    }

    /// Returns the run folder and the RP's log, for failure messages. The
    /// log has one line for each HTTP request (the path only), discovery,
    /// sign-in and logout, and every error.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

fn redirect_uri(port: u16, name: &str) -> String {
    format!("http://127.0.0.1:{port}/{name}/callback")
}

fn post_logout_redirect_uri(port: u16, name: &str) -> String {
    format!("http://127.0.0.1:{port}/{name}/signed-out")
}

/// Writes `config.json` into the run folder `root` and builds the command
/// that runs `rp.mjs` on `port`.
fn rp_command(root: &Path, port: u16, issuer: &str, clients: &[RpClient]) -> Command {
    let config_path = root.join("config.json");
    fs::write(&config_path, config_json(port, issuer, clients))
        .unwrap_or_else(|error| panic!("write {}: {error}", config_path.display()));

    let mut command = Command::new("node");
    command
        .arg(RP_SCRIPT)
        .arg("--port")
        .arg(port.to_string())
        .arg("--config")
        .arg(&config_path);
    command
}

/// Renders the config file that `rp.mjs --config` reads.
fn config_json(port: u16, issuer: &str, clients: &[RpClient]) -> String {
    let clients: Vec<String> = clients
        .iter()
        .map(|client| {
            let secret = client
                .client_secret
                .map(|secret| format!(", \"client_secret\": {}", json_string(secret)))
                .unwrap_or_default();
            format!(
                "{{\"name\": {}, \"client_id\": {}{secret}, \"token_endpoint_auth_method\": {}, \
                 \"redirect_uri\": {}, \"post_logout_redirect_uri\": {}, \"scope\": {}}}",
                json_string(client.name),
                json_string(client.client_id),
                json_string(client.auth.as_str()),
                json_string(&redirect_uri(port, client.name)),
                json_string(&post_logout_redirect_uri(port, client.name)),
                json_string(client.scope),
            )
        })
        .collect();
    format!(
        "{{\n  \"issuer\": {},\n  \"clients\": [\n    {}\n  ]\n}}\n",
        json_string(issuer),
        clients.join(",\n    "),
    )
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

/// Checks that Node.js is recent enough and that openid-client is installed
/// at the pinned version, and runs `npm ci` once when it is not.
fn check_installation() -> Result<(), String> {
    check_node_version()?;
    match installed_version()? {
        Some(version) if version == pinned_version()? => return Ok(()),
        Some(version) => eprintln!(
            "{PACKAGE} {version} in {PEER_DIR}/node_modules is not the version that \
             package.json pins; running npm ci --no-audit --no-fund"
        ),
        None => eprintln!(
            "{PACKAGE} is not installed in {PEER_DIR}; running npm ci --no-audit --no-fund"
        ),
    }
    run_npm_ci()?;
    match installed_version()? {
        Some(version) if version == pinned_version()? => Ok(()),
        Some(version) => Err(format!(
            "{PACKAGE} is still {version}, not the pinned version, after npm ci"
        )),
        None => Err(format!("{PACKAGE} is still missing after npm ci")),
    }
}

fn check_node_version() -> Result<(), String> {
    let output = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("node not found on PATH: {error}"))?;
    // Node.js prints its version as "v20.20.2".
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major = version
        .strip_prefix('v')
        .and_then(|rest| rest.split('.').next())
        .and_then(|major| major.parse::<u32>().ok())
        .ok_or_else(|| {
            format!("node --version printed {version:?}, expected vMAJOR.MINOR.PATCH")
        })?;
    if major < MIN_NODE_MAJOR {
        return Err(format!(
            "Node.js {version} is too old, {PACKAGE} needs {MIN_NODE_MAJOR} or later"
        ));
    }
    Ok(())
}

/// Returns the `version` field of the JSON file at `path`, or `None` when
/// the file does not exist.
fn package_version(path: &Path) -> Result<Option<String>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("read {}: {error}", path.display())),
    };
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not valid JSON: {error}", path.display()))?;
    Ok(manifest["version"].as_str().map(str::to_owned))
}

fn installed_version() -> Result<Option<String>, String> {
    package_version(&Path::new(PEER_DIR).join(format!("node_modules/{PACKAGE}/package.json")))
}

/// Returns the version of openid-client that `package.json` pins exactly.
fn pinned_version() -> Result<String, String> {
    let path = Path::new(PEER_DIR).join("package.json");
    let text =
        fs::read_to_string(&path).map_err(|error| format!("read {}: {error}", path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not valid JSON: {error}", path.display()))?;
    manifest["dependencies"][PACKAGE]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no dependency {PACKAGE}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_client() {
        let clients = [
            RpClient {
                name: "web",
                client_id: "uc-web",
                client_secret: Some("se\"cret"),
                auth: ClientAuth::SecretBasic,
                scope: "openid email",
            },
            RpClient {
                name: "native",
                client_id: "uc-native",
                client_secret: None,
                auth: ClientAuth::None,
                scope: "openid",
            },
        ];

        let config: serde_json::Value =
            serde_json::from_str(&config_json(4000, "http://127.0.0.1:5000", &clients))
                .expect("config is JSON");

        assert_eq!(config["issuer"], "http://127.0.0.1:5000");
        let web = &config["clients"][0];
        assert_eq!(web["client_secret"], "se\"cret");
        assert_eq!(web["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(web["redirect_uri"], "http://127.0.0.1:4000/web/callback");
        assert_eq!(
            web["post_logout_redirect_uri"],
            "http://127.0.0.1:4000/web/signed-out"
        );
        let native = &config["clients"][1];
        assert_eq!(native["client_secret"], serde_json::Value::Null);
        assert_eq!(native["token_endpoint_auth_method"], "none");
        assert_eq!(native["scope"], "openid");
    }
}
