//! An aiosmtpd SMTP server on a free loopback port that stores every
//! message it accepts in a Maildir folder.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::missing_peer;
use crate::harness::free_port;

const INSTALL_HINT: &str = "run `python3 -m pip install -r tests/peers/smtp/requirements.txt`";

pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

/// One message as the server stored it.
pub struct ReceivedEmail {
    pub raw: String,
}

impl ReceivedEmail {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.raw
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim())
    }

    /// Returns the body with quoted-printable soft line breaks and `=3D` undone,
    /// which is all the broker's plain-text emails use.
    pub fn body(&self) -> String {
        let body = self
            .raw
            .split_once("\r\n\r\n")
            .or_else(|| self.raw.split_once("\n\n"))
            .map_or("", |(_, body)| body);
        body.replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=")
    }
}

impl SmtpServer {
    /// Starts the server, with STARTTLS required when `starttls` is true.
    /// Returns `None` after printing why when aiosmtpd is missing, unless
    /// `CI` is set, in which case it panics.
    pub fn start(starttls: bool) -> Option<Self> {
        Self::start_at(free_port(), starttls)
    }

    /// Like [`SmtpServer::start`], on a port the caller chose.
    pub fn start_at(port: u16, starttls: bool) -> Option<Self> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            return missing_peer(
                "SMTP test",
                &format!("python3 cannot import aiosmtpd; {INSTALL_HINT}"),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("smtp-")
            .tempdir()
            .expect("temporary folder");
        let mut command = Command::new("python3");
        command.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if starttls {
            let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
                .expect("certificate");
            let cert = dir.path().join("smtp.pem");
            let key = dir.path().join("smtp-key.pem");
            std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
            std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
            command
                .arg("--tlscert")
                .arg(&cert)
                .arg("--tlskey")
                .arg(&key);
        } else {
            command.arg("--no-requiretls");
        }
        let maildir = dir.path().join("maildir");
        command
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        let log = std::fs::File::create(dir.path().join("smtp.log")).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start python3 -m aiosmtpd");
        let mut server = Self { port, dir, child };
        server.wait_for_banner();
        Some(server)
    }

    fn wait_for_banner(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("check aiosmtpd") {
                panic!("aiosmtpd exited with {status}:\n{}", self.log());
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut banner = String::new();
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                if BufReader::new(stream).read_line(&mut banner).is_ok()
                    && banner.starts_with("220")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "aiosmtpd did not greet on port {} within 30 s:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtp.log")).unwrap_or_default()
    }

    pub fn certificate_path(&self) -> PathBuf {
        self.dir.path().join("smtp.pem")
    }

    fn maildir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the server has stored `count` messages and returns them all.
    pub fn wait_for(&self, count: usize) -> Vec<ReceivedEmail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() > deadline {
                panic!(
                    "the SMTP server received {} of {count} emails within 20 s:\n{}",
                    messages.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn messages(&self) -> Vec<ReceivedEmail> {
        let new = self.maildir().join("maildir").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .map(|raw| ReceivedEmail { raw })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
