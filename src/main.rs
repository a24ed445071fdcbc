use std::process::ExitCode;

use clap::Parser;
use unified_login::cli::{self, Cli};

// mimalloc took 16% off the instructions of a password login
// (bench/login-instructions), and it backs each hashing thread's Argon2
// memory with transparent huge pages, which makes a hash about 5% faster.
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
