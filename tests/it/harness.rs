//! Starts the real binary with a private data folder and config, and offers
//! helpers to drive it.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::database::Database;

pub const BINARY: &str = env!("CARGO_BIN_EXE_unified-login");
pub const PASSWORD: &str = "lantern-orbit-57-cobalt";
/// What `serve` logs once it has bound its port.
const LISTENING: &str = "unified-login is listening";

/// Settings a test may change; the rest of the config is fixed.
#[derive(Clone)]
pub struct Options {
    pub lockout_threshold: u32,
    pub lockout_base_seconds: u32,
    pub per_ip_per_minute: u32,
    pub burst: u32,
    /// Argon2id memory in KiB; small by default to keep tests quick.
    pub argon2_memory_kib: u32,
    pub public_url: Option<String>,
    /// Serve HTTPS with a fresh self-signed certificate for 127.0.0.1.
    pub tls: bool,
    /// A `database_url` to use in place of the harness's own database.
    pub database_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            lockout_base_seconds: 60,
            per_ip_per_minute: 10_000,
            burst: 10_000,
            argon2_memory_kib: 1024,
            public_url: None,
            tls: false,
            database_url: None,
        }
    }
}

pub struct Broker {
    pub base_url: String,
    port: u16,
    /// PEM of the self-signed certificate when the broker serves HTTPS.
    pub certificate_pem: Option<String>,
    pub config_path: PathBuf,
    dir: TempDir,
    database: Database,
    child: Option<Child>,
}

/// Returns a command that runs the broker's binary.
pub fn broker_command() -> Command {
    Command::new(BINARY)
}

/// Returns a loopback port that was free a moment ago and that this process
/// has not handed out before.
///
/// The ports come from just below the kernel's ephemeral range. Ports in
/// that range are also given to outgoing connections and to other
/// processes' `bind(0)`, any of which could take a port between this call
/// and the server's bind, and then a test would talk to the wrong server.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = port_range();
    let span = high - low;
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id() % span));
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(low + offset).expect("port below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

/// Returns the ports that `free_port` hands out: up to 12,000 ports below
/// the kernel's ephemeral range, and above the privileged ones.
fn port_range() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.clamp(2_048, 65_535);
    let low = high.saturating_sub(12_000).max(1_024);
    (low, high)
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let mut broker = Self::prepare(options);
        broker.serve();
        broker
    }

    /// Writes the config and data folder without starting the service, so a
    /// test can run commands (such as `saml set`) first; `serve` starts it.
    pub fn prepare(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let scheme = if options.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://127.0.0.1:{port}");
        let public_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone());
        let mut tls_section = String::new();
        let mut certificate_pem = None;
        if options.tls {
            let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
                .expect("certificate");
            let cert_path = dir.path().join("server.pem");
            let key_path = dir.path().join("server-key.pem");
            std::fs::write(&cert_path, certified.cert.pem()).expect("write certificate");
            std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
            tls_section = format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert_path.display(),
                key_path.display()
            );
            certificate_pem = Some(certified.cert.pem());
        }
        let database = Database::create(dir.path());
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
public_url = "{public_url}"
database_url = "{database_url}"

[lockout]
threshold = {threshold}
base_seconds = {base}
max_seconds = 3600

[rate_limit]
per_ip_per_minute = {per_minute}
burst = {burst}

[password]
memory_kib = {memory}
iterations = 2
parallelism = 1

[log]
filter = "info,unified_login=debug"

{tls_section}"#,
            database_url = options
                .database_url
                .clone()
                .unwrap_or_else(|| database.url()),
            threshold = options.lockout_threshold,
            base = options.lockout_base_seconds,
            per_minute = options.per_ip_per_minute,
            burst = options.burst,
            memory = options.argon2_memory_kib,
        );
        let config_path = dir.path().join("unified-login.toml");
        std::fs::write(&config_path, config).expect("write config");

        Self {
            base_url,
            port,
            certificate_pem,
            config_path,
            dir,
            database,
            child: None,
        }
    }

    /// Writes the config of a second instance of `first`'s service, without
    /// starting it: a new folder and port, but the same database, public URL
    /// and every other setting. Call it once `first`'s config is complete,
    /// because later changes to it do not reach the copy.
    ///
    /// The sibling gets no SAML SP key files: it loads the key pair from the
    /// shared database, as an instance in production does.
    pub fn prepare_sibling(first: &Broker) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let config = std::fs::read_to_string(&first.config_path).expect("read config");
        let first_listen = format!("listen = \"127.0.0.1:{}\"\n", first.port);
        assert!(
            config.starts_with(&first_listen),
            "the config of the first broker does not start with {first_listen:?}"
        );
        let config = config.replacen(
            &first_listen,
            &format!("listen = \"127.0.0.1:{port}\"\n"),
            1,
        );
        let config_path = dir.path().join("unified-login.toml");
        std::fs::write(&config_path, config).expect("write config");

        let scheme = first.base_url.split_once("://").expect("scheme").0;
        Self {
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            certificate_pem: first.certificate_pem.clone(),
            config_path,
            dir,
            database: first.database.clone(),
            child: None,
        }
    }

    /// Starts `unified-login serve` and waits until it listens. After
    /// `stop`, it starts the service again on the same port and database, and
    /// the log continues in the same file.
    pub fn serve(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let starts_before = self.log().matches(LISTENING).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log file");
        let child = broker_command()
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .current_dir(self.dir.path())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start unified-login serve");
        self.child = Some(child);
        self.wait_until_ready(self.port, starts_before);
    }

    /// Kills the service process and waits until it has exited. The folder,
    /// config and database stay, so `serve` can start it again.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the broker is not running");
        child.kill().expect("kill unified-login serve");
        child.wait().expect("wait for unified-login serve");
    }

    /// Waits until this broker's log contains its listening line and the
    /// port accepts connections. Checking the port alone could reach
    /// another process that holds it after this broker failed to bind.
    fn wait_until_ready(&mut self, port: u16, starts_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let listening = self.log().matches(LISTENING).count() > starts_before;
            if listening && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "broker exited with {status} before listening; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "broker did not listen on port {port} within 30 s; log:\n{}",
            self.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the broker's database, which siblings share.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Adds TOML to the end of the config file; call it before `serve`.
    pub fn append_config(&self, toml: &str) {
        let mut config = std::fs::read_to_string(&self.config_path).expect("read config");
        config.push('\n');
        config.push_str(toml);
        std::fs::write(&self.config_path, config).expect("write config");
    }

    /// Runs a command-line subcommand against this broker's config.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.config_path, self.dir.path(), args, stdin)
    }

    /// Adds a user with `PASSWORD` and returns nothing; panics on failure.
    pub fn add_user(&self, login_id: &str, email: &str) {
        let output = self.cli(
            &[
                "user",
                "add",
                "--login-id",
                login_id,
                "--email",
                email,
                "--first-name",
                "Test",
                "--last-name",
                "User",
            ],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            output.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Enrols TOTP for `login_id` and returns the base32 secret and the
    /// recovery codes the command printed.
    pub fn enroll_totp(&self, login_id: &str) -> (String, Vec<String>) {
        let output = self.cli(&["user", "totp", "enroll", login_id], "");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "totp enroll failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let secret = stdout
            .lines()
            .find_map(|line| line.strip_prefix("secret: "))
            .expect("secret line")
            .to_owned();
        let codes = stdout
            .lines()
            .filter(|line| line.starts_with("  "))
            .map(|line| line.trim().to_owned())
            .collect();
        (secret, codes)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run_cli(config: &Path, dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = broker_command()
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unified-login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for unified-login")
}

/// Returns the TOTP code for `secret` at the current time.
pub fn totp_now(secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    unified_login::credentials::totp::code_at(secret, now).expect("valid secret")
}

/// Returns the value of the hidden `csrf_token` field in `html`.
pub fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("page has a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// True when the environment requires every test peer to be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}
