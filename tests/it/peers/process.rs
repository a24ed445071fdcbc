//! The process handling that every peer launcher shares.
//!
//! [`PeerProcess::start`] creates a fresh run folder, picks a free loopback
//! port, lets the launcher write its files and build the command, and runs
//! it with stdout and stderr in a log file of the run folder. It then polls
//! an HTTP path until it returns 200 OK. It starts the peer again on a new
//! port when the peer lost its port to another process, and when the peer
//! stalled before it served the path, as the Node.js peer has done on a
//! loaded machine. Dropping the [`PeerProcess`]
//! kills the process and deletes the run folder.
//!
//! [`missing_peer`] applies the rule for a peer that is not installed: CI
//! fails, and a developer's run skips the test with a message.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::free_port;

/// How long a peer may take from its spawn to its first 200 OK.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many starts are tried when another process took the free port
/// between the port check and the peer's bind, or when the peer stalled.
const START_ATTEMPTS: u32 = 3;

/// How long one readiness request may wait for the response.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause between two readiness requests.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The signal by which a peer process shows that its port was already in
/// use when it tried to bind.
pub(crate) enum PortInUse {
    /// The process exits with this status code.
    ExitCode(i32),
    /// The process exits and its stdout or stderr contains this text.
    Output(&'static str),
}

/// A log file in the run folder, with the heading that introduces it in
/// failure messages.
pub(crate) struct LogFile {
    pub heading: &'static str,
    /// The path inside the run folder.
    pub path: &'static str,
}

/// The fixed facts about one kind of peer that [`PeerProcess::start`] needs.
pub(crate) struct Peer {
    /// The peer in messages, such as `the pysaml2 IdP`.
    pub name: &'static str,
    /// The start of the run folder's name.
    pub dir_prefix: &'static str,
    /// The path whose `GET` returns 200 OK once the peer is ready.
    pub ready_path: &'static str,
    /// The log files that failure messages show. The process's stdout and
    /// stderr go to the first one, so the list must not be empty.
    pub logs: &'static [LogFile],
    pub port_in_use: PortInUse,
}

/// A running peer process with its run folder. Dropping it kills the
/// process and deletes the folder.
pub(crate) struct PeerProcess {
    peer: &'static Peer,
    port: u16,
    dir: TempDir,
    child: Child,
}

/// Why a start attempt failed in a way that another attempt may mend.
enum StartFailure {
    /// The peer could not bind its port.
    PortTaken,
    /// The peer did not serve its ready path in time. The text describes
    /// the process's threads and its logs.
    Stalled(String),
}

impl PeerProcess {
    /// Starts `peer` and waits until it is ready.
    ///
    /// `command` receives the run folder and the port. It writes the files
    /// that the peer reads and returns the command to run. This function
    /// sets the command's working folder to the run folder, its stdin to
    /// null and its stdout and stderr to the first log file.
    ///
    /// Panics when the peer exits or returns a status other than 200 before
    /// it is ready, and when every attempt found its port in use or was not
    /// ready within 30 s.
    pub(crate) fn start(peer: &'static Peer, command: impl FnMut(&Path, u16) -> Command) -> Self {
        Self::start_within(peer, STARTUP_TIMEOUT, command)
    }

    /// Starts `peer` as [`PeerProcess::start`] does, with `timeout` in
    /// place of 30 s for each attempt.
    fn start_within(
        peer: &'static Peer,
        timeout: Duration,
        mut command: impl FnMut(&Path, u16) -> Command,
    ) -> Self {
        let mut stalls = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut process = Self::spawn(peer, &mut command);
            match process.wait_ready(timeout) {
                Ok(()) => return process,
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Stalled(report)) => {
                    // Shown in the test's output even when a later attempt
                    // succeeds, so that a stall is not silently forgotten.
                    eprintln!("{report}\nstarting {} again", peer.name);
                    stalls.push(report);
                }
            }
        }
        panic!(
            "{} did not start in {START_ATTEMPTS} attempts: {} found the port in use, \
             {} stalled\n{}",
            peer.name,
            START_ATTEMPTS as usize - stalls.len(),
            stalls.len(),
            stalls.join("\n")
        );
    }

    /// Creates a run folder, picks a free port and spawns the command that
    /// `command` builds.
    fn spawn(peer: &'static Peer, command: &mut impl FnMut(&Path, u16) -> Command) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(peer.dir_prefix)
            .tempdir()
            .unwrap_or_else(|error| panic!("create a temporary folder for {}: {error}", peer.name));
        let root = dir.path();
        let port = free_port();
        let mut command = command(root, port);

        let log_path = root.join(peer.logs[0].path);
        let log_file = fs::File::create(&log_path)
            .unwrap_or_else(|error| panic!("create {}: {error}", log_path.display()));
        let stdout = log_file
            .try_clone()
            .unwrap_or_else(|error| panic!("clone the handle of {}: {error}", log_path.display()));
        let child = command
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "start {} with {}: {error}",
                    peer.name,
                    command.get_program().to_string_lossy()
                )
            });

        Self {
            peer,
            port,
            dir,
            child,
        }
    }

    /// Polls the peer's ready path until it returns 200 OK.
    ///
    /// Returns an error when the process exits because its port was taken
    /// or when it is not ready within `timeout`, and panics with the logs on any
    /// other failure.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        let url = self.url(self.peer.ready_path);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let exit_status = self.child.try_wait().unwrap_or_else(|error| {
                panic!("check whether {} is running: {error}", self.peer.name)
            });
            if let Some(status) = exit_status {
                if self.lost_port(status) {
                    return Err(StartFailure::PortTaken);
                }
                panic!(
                    "{} exited with {status} before it served {url}\n{}",
                    self.peer.name,
                    self.logs()
                );
            }

            match self.http_get(self.peer.ready_path) {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => panic!(
                    "GET {url} returned HTTP status {status}, expected 200\n{body}\n{}",
                    self.logs()
                ),
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
        Err(StartFailure::Stalled(format!(
            "{} did not serve {url} within {} s\n{}\n{}",
            self.peer.name,
            timeout.as_secs_f64(),
            self.thread_states(),
            self.logs()
        )))
    }

    /// Returns the state and wait channel of each thread of the process,
    /// which tell a process that waits on the kernel from one that computes.
    fn thread_states(&self) -> String {
        let task_dir = format!("/proc/{}/task", self.child.id());
        let Ok(tasks) = fs::read_dir(&task_dir) else {
            return format!("{task_dir} cannot be read");
        };
        let mut lines = vec![format!("threads of process {}:", self.child.id())];
        for task in tasks.flatten() {
            let path = task.path();
            let read = |file: &str| fs::read_to_string(path.join(file)).unwrap_or_default();
            // The state is the field after the name in parentheses, and the
            // name may contain spaces, so the split is at the last `) `.
            let stat = read("stat");
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or("?")
                .to_owned();
            lines.push(format!(
                "  {} {}: state {state}, waiting in {:?}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan")
            ));
        }
        lines.join("\n")
    }

    /// Returns whether the process, which exited with `status`, did so
    /// because its port was in use.
    fn lost_port(&self, status: ExitStatus) -> bool {
        match self.peer.port_in_use {
            PortInUse::ExitCode(code) => status.code() == Some(code),
            PortInUse::Output(text) => self.read_log(self.peer.logs[0].path).contains(text),
        }
    }

    /// Returns `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns the peer's URL for `path`, which starts with a slash.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub(crate) fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the file at `path` inside the run folder, or an empty string
    /// when it cannot be read, for example because the peer has not written
    /// it yet.
    pub(crate) fn read_log(&self, path: &str) -> String {
        fs::read_to_string(self.dir.path().join(path)).unwrap_or_default()
    }

    /// Returns the run folder and every log file under its heading, for
    /// failure messages.
    pub(crate) fn logs(&self) -> String {
        let mut text = format!("run folder: {}", self.dir.path().display());
        for log in self.peer.logs {
            text.push_str(&format!(
                "\n--- {} ---\n{}",
                log.heading,
                self.read_log(log.path)
            ));
        }
        text
    }

    /// Sends `GET path` to the peer over HTTP/1.0 and returns the status
    /// code and the body. The request blocks the calling thread for at most
    /// 5 s while it waits for the response.
    pub(crate) fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let port = self.port;
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
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
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Handles a peer that cannot run because of `reason`, which names what is
/// missing and how to install it. `test` names the test that needs the peer.
///
/// Panics when `harness::in_ci` reports CI (`CI` set to anything but
/// empty, `0` or `false`), so that CI cannot pass without running the peer
/// tests. Otherwise it
/// prints `<test> did not run: <reason>` to stderr and returns `None`, which
/// the launcher returns so that the test can skip itself.
pub(crate) fn missing_peer<T>(test: &str, reason: &str) -> Option<T> {
    if crate::harness::in_ci() {
        panic!("{test} cannot run: {reason}. CI is set, so a missing peer fails the test");
    }
    eprintln!("{test} did not run: {reason}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that never listens. Its command is `sleep`, which behaves like
    /// a process that stalled before it served its ready path.
    static SILENT: Peer = Peer {
        name: "the silent peer",
        dir_prefix: "silent-peer-",
        ready_path: "/ready",
        logs: &[LogFile {
            heading: "silent peer log",
            path: "peer.log",
        }],
        port_in_use: PortInUse::ExitCode(3),
    };

    #[test]
    fn stalled_peer_started_again() {
        let mut starts = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            PeerProcess::start_within(&SILENT, Duration::from_millis(300), |_, _| {
                starts += 1;
                let mut command = Command::new("sleep");
                command.arg("30");
                command
            })
        }));
        let message = *outcome
            .err()
            .expect("a peer that never listens must not start")
            .downcast::<String>()
            .expect("panic message");
        assert_eq!(starts, START_ATTEMPTS);
        assert!(message.contains("3 stalled"), "{message}");
        assert!(message.contains("waiting in"), "{message}");
        assert!(message.contains("--- silent peer log ---"), "{message}");
    }
}
