//! Helpers shared by the benchmarks that run the real binary or compare it
//! with other programs: the broker process, CPU accounting from /proc,
//! Entra-shaped SAML responses, latency percentiles and `wrk`.
//!
//! Each benchmark uses only part of this module.
#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod cpu;
pub mod entra;
pub mod stats;
pub mod wrk;

/// The service's allocator, so that a bare Argon2 bound gets the same memory
/// pages as the service's hashing threads: mimalloc's huge pages make a hash
/// about 5% cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns true when Cargo runs the target as a benchmark (`cargo bench`
/// passes `--bench`). `cargo test --all-targets` runs bench targets without
/// it, and then the load benchmarks only check that they compiled.
pub fn bench_mode() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Returns the number of seconds each measurement runs, from
/// `BENCH_SECONDS` or `default`.
pub fn seconds(default: u64) -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&value| value > 0)
        .unwrap_or(default)
}

/// Returns a note for a summary line when two runs of the same measurement
/// differ by more than 10%, which means the machine's other load changed
/// during the run, and an empty string otherwise.
pub fn spread_note(first: f64, second: f64) -> String {
    let spread = (first - second).abs() / first.max(second);
    if spread > 0.1 {
        format!(
            "; the runs of the reference differ by up to {:.0}%, so the machine's other load changed: compare per CPU second",
            spread * 100.0
        )
    } else {
        String::new()
    }
}
