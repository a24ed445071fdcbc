//! Runs the `wrk` HTTP load generator (Debian package `wrk`) and parses its
//! `--latency` report.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `wrk` run started in the background.
pub struct WrkRun {
    child: Child,
    url: String,
}

/// The figures of one `wrk` report.
#[derive(Debug, Clone)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Responses with a status other than 2xx or 3xx.
    pub non_success: u64,
    /// Connect, read, write and timeout errors together.
    pub socket_errors: u64,
}

/// Starts `wrk` with `threads` threads and `connections` open connections
/// against `url` for `seconds` seconds.
pub fn start(url: &str, threads: u32, connections: u32, seconds: u64) -> WrkRun {
    let child = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start wrk: install the Debian package wrk");
    WrkRun {
        child,
        url: url.to_owned(),
    }
}

impl WrkRun {
    /// Waits for `wrk` to finish and returns its report.
    pub fn finish(self) -> WrkReport {
        let output = self.child.wait_with_output().expect("wait for wrk");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "wrk against {} failed with {}: {}{}",
            self.url,
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        parse(&stdout).unwrap_or_else(|| panic!("cannot parse the wrk report:\n{stdout}"))
    }
}

/// Parses a `wrk --latency` report.
pub fn parse(report: &str) -> Option<WrkReport> {
    let mut requests = None;
    let mut requests_per_second = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_success = 0;
    let mut socket_errors = 0;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = parse_duration(value),
            ["99%", value] => p99 = parse_duration(value),
            [count, "requests", "in", ..] => requests = count.parse().ok(),
            ["Requests/sec:", value] => requests_per_second = value.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", count] => non_success = count.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                socket_errors = rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    Some(WrkReport {
        requests: requests?,
        requests_per_second: requests_per_second?,
        p50: p50?,
        p99: p99?,
        non_success,
        socket_errors,
    })
}

/// Parses a wrk duration such as `812.00us`, `1.23ms` or `2.01s`.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit_seconds) = if let Some(number) = text.strip_suffix("us") {
        (number, 1e-6)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * unit_seconds))
}
