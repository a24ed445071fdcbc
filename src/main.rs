use std::process::ExitCode;

use clap::Parser;
use unified_login::cli::{self, Cli};

// mimalloc took 16% off a password login's instructions, and its huge pages
// make an Argon2 hash about 5% cheaper (BENCHMARKS.md, 2026-12-06).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the cause chain joined, as scripts read the first line.
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
