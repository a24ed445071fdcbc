//! The broker's cost of a password login besides the hash. Runs the same
//! four requests as `password_login` against a broker whose Argon2id is set
//! as cheap as it goes (8 KiB, one pass), so that the requests, sessions
//! and SQL statements make up nearly all of the broker's CPU time. That
//! time per login is set against the CPU time of one bare Argon2id
//! verification at the service's default parameters, measured in the same
//! run: the share it adds is part of what keeps `password_login` under
//! the bound.
//!
//! With an idle CPU beside it, work that would wait for a busy hashing
//! thread in `password_login` runs at once, so the figure here is a floor
//! of that bench's "on the others". It moves much less between runs than
//! the rates do, which makes it the figure to compare when changing the
//! request path. Each of the three requests that can repeat without
//! signing in is also measured alone.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::task::JoinSet;

use support::broker::{Argon2Settings, Broker, CookieJar, http_client, steps};
use support::cpu::{clock_ticks_per_second, process_ticks, thread_ticks};

const USERS: usize = 16;
const VIRTUAL_USERS: usize = 8;
const PASSWORD: &str = "lantern-orbit-57-cobalt";
const WARM_UP: Duration = Duration::from_secs(1);
const ROUNDS: usize = 3;

fn main() {
    if !support::bench_mode() {
        println!("login_overhead: not run outside `cargo bench`");
        return;
    }
    let seconds = support::seconds(5);
    let cheapest = Argon2Settings {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    let mut broker = Broker::prepare(cheapest);
    broker.add_numbered_users(USERS, PASSWORD);
    broker.serve();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let verification = bare_verification_cpu(seconds);
    let mut per_login = Vec::new();
    for round in 1..=ROUNDS {
        let run = runtime.block_on(measure(&broker, seconds, Load::Logins));
        println!(
            "login_overhead: round {round}: {:.0} logins/s, broker CPU time per login {:.0} µs \
             ({:.0} µs on the SQLite threads, {:.0} µs on the others), \
             {:.1} context switches per login",
            run.per_second,
            run.cpu_micros,
            run.sqlite_micros,
            run.cpu_micros - run.sqlite_micros,
            run.switches
        );
        per_login.push(run.cpu_micros);
    }
    for (load, label) in [
        (Load::LoginPage, "GET /login"),
        (Load::Identify, "POST /login"),
        (Load::PasswordPage, "GET /login/password"),
    ] {
        let run = runtime.block_on(measure(&broker, seconds, load));
        println!(
            "login_overhead: {label} alone: {:.0}/s, broker CPU time per request {:.0} µs \
             ({:.0} µs on the SQLite threads)",
            run.per_second, run.cpu_micros, run.sqlite_micros
        );
    }
    per_login.sort_by(f64::total_cmp);
    let median = per_login[per_login.len() / 2];
    println!(
        "summary: broker CPU time per password login outside the hash {median:.0} µs \
         (median of {ROUNDS} rounds) = {:.1}% of a bare Argon2id verification at the \
         service's defaults ({:.2} ms)",
        100.0 * median / verification,
        verification / 1000.0
    );
}

/// Returns the CPU time of one Argon2id verification with the service's
/// default parameters, in µs, on one thread of this process.
fn bare_verification_cpu(seconds: u64) -> f64 {
    let settings = Argon2Settings::service_default();
    let params = Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .expect("Argon2 parameters");
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut memory = vec![Block::default(); params.block_count()];
    let mut output = [0_u8; 32];
    let ticks = process_ticks(std::process::id());
    let started = Instant::now();
    let mut count = 0_u32;
    while started.elapsed() < Duration::from_secs(seconds) {
        argon2
            .hash_password_into_with_memory(
                PASSWORD.as_bytes(),
                b"bound-salt-0001",
                &mut output,
                &mut memory,
            )
            .expect("hash");
        count += 1;
    }
    let cpu = (process_ticks(std::process::id()) - ticks) as f64 / clock_ticks_per_second();
    1e6 * cpu / f64::from(count)
}

#[derive(Clone, Copy)]
enum Load {
    /// Whole password logins.
    Logins,
    /// The login page for a new visitor.
    LoginPage,
    /// The identifier form, posted again and again in one sign-in.
    Identify,
    /// The password page of one sign-in, requested again and again.
    PasswordPage,
}

struct Run {
    per_second: f64,
    cpu_micros: f64,
    sqlite_micros: f64,
    switches: f64,
}

/// Runs `load` with `VIRTUAL_USERS` virtual users and measures the broker's
/// CPU time over `seconds` after the warm-up.
async fn measure(broker: &Broker, seconds: u64, load: Load) -> Run {
    let http = http_client(VIRTUAL_USERS);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..VIRTUAL_USERS {
        let (http, base_url) = (http.clone(), broker.base_url.clone());
        let (stop, done) = (stop.clone(), done.clone());
        workers.spawn(async move {
            let login_id = format!("user{:03}", worker % USERS);
            // One sign-in that stays at the password step, for the loads
            // that repeat a request of that step.
            let mut jar = CookieJar::default();
            let mut token = String::new();
            if matches!(load, Load::Identify | Load::PasswordPage) {
                token = steps::login_page(&http, &base_url, &mut jar).await;
                steps::identify(&http, &base_url, &mut jar, &token, &login_id).await;
            }
            let mut user = worker;
            while !stop.load(Ordering::Relaxed) {
                match load {
                    Load::Logins => {
                        let login_id = format!("user{:03}", user % USERS);
                        steps::password_login(&http, &base_url, &login_id, PASSWORD).await;
                    }
                    Load::LoginPage => {
                        steps::login_page(&http, &base_url, &mut CookieJar::default()).await;
                    }
                    Load::Identify => {
                        steps::identify(&http, &base_url, &mut jar, &token, &login_id).await;
                    }
                    Load::PasswordPage => {
                        steps::password_page(&http, &base_url, &mut jar).await;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                user += VIRTUAL_USERS;
            }
        });
    }

    tokio::time::sleep(WARM_UP).await;
    let pid = broker.pid();
    let count_before = done.load(Ordering::Relaxed);
    let (total, sqlite) = thread_groups(pid);
    let switches = context_switches(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = (done.load(Ordering::Relaxed) - count_before) as f64;
    let elapsed = started.elapsed().as_secs_f64();
    let (total_after, sqlite_after) = thread_groups(pid);
    let switches = (context_switches(pid) - switches) as f64 / count;

    stop.store(true, Ordering::Relaxed);
    while let Some(worker) = workers.join_next().await {
        worker.expect("virtual user");
    }
    let micros = |ticks: u64| 1e6 * ticks as f64 / clock_ticks_per_second() / count;
    Run {
        per_second: count / elapsed,
        cpu_micros: micros(total_after - total),
        sqlite_micros: micros(sqlite_after - sqlite),
        switches,
    }
}

/// CPU ticks of the whole broker and of sqlx's SQLite worker threads.
/// The runtime's threads are not counted by name, because its blocking
/// threads carry the same name and come and go.
fn thread_groups(pid: u32) -> (u64, u64) {
    (process_ticks(pid), thread_ticks(pid, "sqlx-sqlite-wor"))
}

/// Voluntary and involuntary context switches of all the broker's threads.
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("broker threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split(':').nth(1)?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
