//! CPU time of processes and of the whole machine, read from /proc (Linux
//! only). Shares are fractions of the machine: 1.0 means every core was busy
//! for the whole interval.

use std::process::Command;
use std::time::Instant;

/// Returns the kernel's clock ticks per second (`getconf CLK_TCK`), which
/// /proc reports CPU times in. Falls back to 100, the Linux default.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Returns the user plus system CPU time of process `pid` (all its threads),
/// in clock ticks.
pub fn process_ticks(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {path}: {error}"));
    stat_ticks(&stat)
}

/// Returns the CPU time of the threads of process `pid` whose names start
/// with `prefix`, in clock ticks. Threads that ended meanwhile are missed.
pub fn thread_ticks(pid: u32, prefix: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|error| panic!("cannot list the threads of {pid}: {error}"));
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            name.starts_with(prefix)
                .then(|| std::fs::read_to_string(path.join("stat")).ok())
                .flatten()
        })
        .map(|stat| stat_ticks(&stat))
        .sum()
}

/// Returns utime plus stime from the text of a `stat` file.
fn stat_ticks(stat: &str) -> u64 {
    // The command name (field 2) may contain spaces, so fields are counted
    // from the closing parenthesis: utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("comm field in a stat file") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Returns the busy and total clock ticks of all CPUs together, from the
/// first line of /proc/stat. Idle and I/O wait count as not busy.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let line = stat.lines().next().expect("cpu line in /proc/stat");
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values[4];
    (total - idle, total)
}

/// Returns the number of CPUs listed in /proc/stat, which, unlike the
/// standard library's parallelism, ignores this process's CPU affinity.
pub fn machine_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .expect("read /proc/stat")
        .lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .count()
}

/// CPU counters taken at one instant.
#[derive(Clone, Copy)]
pub struct Snapshot {
    pub at: Instant,
    broker: u64,
    driver: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl Snapshot {
    /// Reads the counters of the broker process `broker_pid`, of this
    /// process (the load driver) and of the machine.
    pub fn take(broker_pid: u32) -> Self {
        let (machine_busy, machine_total) = machine_ticks();
        Self {
            at: Instant::now(),
            broker: process_ticks(broker_pid),
            driver: process_ticks(std::process::id()),
            machine_busy,
            machine_total,
        }
    }
}

/// CPU use between two snapshots, as shares of the whole machine.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub seconds: f64,
    pub broker: f64,
    pub driver: f64,
    pub machine: f64,
}

impl Usage {
    pub fn between(start: &Snapshot, end: &Snapshot) -> Self {
        let seconds = end.at.duration_since(start.at).as_secs_f64();
        let capacity = seconds * clock_ticks_per_second() * machine_cpus() as f64;
        let machine_total = (end.machine_total - start.machine_total).max(1) as f64;
        Self {
            seconds,
            broker: (end.broker - start.broker) as f64 / capacity,
            driver: (end.driver - start.driver) as f64 / capacity,
            machine: (end.machine_busy - start.machine_busy) as f64 / machine_total,
        }
    }

    /// Returns the CPU use over both intervals together, as if they were one.
    pub fn combine(&self, other: &Usage) -> Usage {
        let seconds = self.seconds + other.seconds;
        let weigh = |a: f64, b: f64| (a * self.seconds + b * other.seconds) / seconds;
        Usage {
            seconds,
            broker: weigh(self.broker, other.broker),
            driver: weigh(self.driver, other.driver),
            machine: weigh(self.machine, other.machine),
        }
    }

    /// Formats the broker's and the whole machine's shares as percentages.
    pub fn describe(&self) -> String {
        format!(
            "broker CPU {:.0}% of the machine ({} CPUs), whole machine busy {:.0}%",
            self.broker * 100.0,
            machine_cpus(),
            self.machine * 100.0
        )
    }
}
