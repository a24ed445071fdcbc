//! OpenLDAP's `slapd` (Debian's package, 2.5) as the on-premises directory,
//! on two free loopback ports: one for `ldap://` (with StartTLS) and one for
//! `ldaps://`.
//!
//! [`Slapd::start`] writes a test CA and a server certificate for 127.0.0.1,
//! fills `tests/peers/slapd/slapd.conf` in with the run folder, loads
//! `tests/peers/slapd/seed.ldif` into an mdb database with `slapadd`, and runs
//! `slapd -d stats` in the foreground as the current user. [`Slapd::stop`]
//! and [`Slapd::restart`] take the directory away and bring it back on the
//! same ports, for the tests of an unreachable directory.

// Not every test uses every helper of this API.
#![allow(dead_code)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use super::process::missing_peer;
use crate::harness::free_port;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const INSTALL_HINT: &str = "install the Debian packages slapd and ldap-utils";

const CONFIG_TEMPLATE: &str = include_str!("../../peers/slapd/slapd.conf");
const SEED: &str = include_str!("../../peers/slapd/seed.ldif");

/// Where slapd's stdout and stderr go, inside the run folder.
const LOG: &str = "slapd.log";

/// How long slapd may take from its spawn until both ports accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a start is retried when another process took a free port
/// between the port check and slapd's bind.
const START_ATTEMPTS: u32 = 3;

pub const BASE_DN: &str = "dc=example,dc=com";
pub const SERVICE_DN: &str = "cn=broker,ou=services,dc=example,dc=com";
pub const SERVICE_PASSWORD: &str = "broker-service-73-quartz";

/// A directory user of the seed file.
pub struct LdapUser {
    pub uid: &'static str,
    pub mail: &'static str,
    pub password: &'static str,
}

pub const JANE: LdapUser = LdapUser {
    uid: "jane",
    mail: "jane@example.com",
    password: "ldap-jane-46-harbor",
};

/// Both twins have this mail value, so a search for it finds two entries.
pub const TWIN: LdapUser = LdapUser {
    uid: "twin1",
    mail: "twin@example.com",
    password: "ldap-twin-31-meadow",
};

/// Marked `employeeType: disabled`, which the tests' user filter excludes.
pub const GONE: LdapUser = LdapUser {
    uid: "gone",
    mail: "gone@example.com",
    password: "ldap-gone-28-copper",
};

/// A running slapd with its run folder. Dropping it kills the process and
/// deletes the folder.
pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    pub ldap_port: u16,
    pub ldaps_port: u16,
}

/// A start attempt that failed because slapd could not bind a port.
struct PortTaken;

impl Slapd {
    /// Starts slapd with the seed entries. Returns `None` when slapd is not
    /// installed outside CI; `test` names the calling test in that message.
    pub fn start(test: &str) -> Option<Self> {
        for program in [SLAPD, SLAPADD] {
            if !Path::new(program).is_file() {
                return missing_peer(test, &format!("{program} not found; {INSTALL_HINT}"));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("slapd-")
            .tempdir()
            .expect("create a temporary folder for slapd");
        prepare_run_folder(dir.path());

        let mut slapd = Self {
            dir,
            child: None,
            ldap_port: 0,
            ldaps_port: 0,
        };
        for _ in 0..START_ATTEMPTS {
            slapd.ldap_port = free_port();
            slapd.ldaps_port = free_port();
            match slapd.spawn_and_wait() {
                Ok(()) => return Some(slapd),
                Err(PortTaken) => continue,
            }
        }
        panic!("slapd found its ports in use {START_ATTEMPTS} times in a row");
    }

    /// Returns `ldaps://127.0.0.1:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// Returns `ldap://127.0.0.1:PORT`, the port that offers StartTLS.
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// Returns the PEM file of the CA that signed slapd's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns slapd's output, which `-d stats` fills with one line per
    /// connection and operation.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }

    /// Kills slapd and waits until its ports refuse connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.accepts(self.ldaps_port) || self.accepts(self.ldap_port) {
            assert!(
                Instant::now() < deadline,
                "slapd's ports still accept connections after kill"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts slapd again on the same ports and the same database.
    pub fn restart(&mut self) {
        self.stop();
        if self.spawn_and_wait().is_err() {
            panic!(
                "slapd could not bind ports {} and {} again\n{}",
                self.ldap_port,
                self.ldaps_port,
                self.log()
            );
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), PortTaken> {
        let root = self.dir.path();
        let log = fs::File::create(root.join(LOG)).expect("create slapd.log");
        let listeners = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.ldap_port, self.ldaps_port
        );
        // -d keeps slapd in the foreground; "stats" logs connections and
        // operations, which failure messages show.
        let child = Command::new(SLAPD)
            .args(["-d", "stats", "-f"])
            .arg(root.join("slapd.conf"))
            .args(["-h", &listeners])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the slapd.log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {SLAPD}: {error}"));
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), PortTaken> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("slapd was spawned");
            if let Some(status) = child.try_wait().expect("check whether slapd runs") {
                self.child = None;
                if self.log().contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "slapd exited with {status} before it listened\n{}",
                    self.logs()
                );
            }
            if self.accepts(self.ldap_port) && self.accepts(self.ldaps_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "slapd did not listen within {} s\n{}",
            STARTUP_TIMEOUT.as_secs(),
            self.logs()
        );
    }

    fn accepts(&self, port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    /// Returns the run folder and slapd's output, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "run folder: {}\n--- slapd output ---\n{}",
            self.dir.path().display(),
            self.log()
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes the certificates and slapd.conf into `root` and loads the seed
/// entries into a new database there.
fn prepare_run_folder(root: &Path) {
    let (ca_pem, server_pem, server_key_pem) = test_certificates();
    fs::write(root.join("ca.pem"), ca_pem).expect("write ca.pem");
    fs::write(root.join("server.pem"), server_pem).expect("write server.pem");
    fs::write(root.join("server-key.pem"), server_key_pem).expect("write server-key.pem");

    let root_text = root.to_str().expect("the temporary folder's path is UTF-8");
    let config = CONFIG_TEMPLATE.replace("@RUN_DIR@", root_text);
    fs::write(root.join("slapd.conf"), config).expect("write slapd.conf");
    fs::create_dir(root.join("data")).expect("create the database folder");
    fs::write(root.join("seed.ldif"), SEED).expect("write seed.ldif");

    let output = Command::new(SLAPADD)
        .arg("-f")
        .arg(root.join("slapd.conf"))
        .arg("-l")
        .arg(root.join("seed.ldif"))
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {SLAPADD}: {error}"));
    assert!(
        output.status.success(),
        "slapadd failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the PEM of a fresh test CA, and of a server certificate for
/// 127.0.0.1 that it signed, with that certificate's key.
fn test_certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "unified-login test LDAP CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_certificate = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_certificate = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    (
        ca_certificate.pem(),
        server_certificate.pem(),
        server_key.serialize_pem(),
    )
}
