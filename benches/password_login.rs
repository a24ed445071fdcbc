//! Local password logins per second over HTTP against the bound that
//! Argon2id alone sets, and the login page's latency while password
//! verification keeps the hashing pool busy. All in one run, against the
//! release binary as a separate process with the default Argon2id
//! parameters and one hashing worker per core.
//!
//! 1. Bound: `argon2` verifications in this process, one thread per CPU,
//!    with the broker idle.
//! 2. Password logins, 8 virtual users: `GET /login`, `POST /login` with
//!    the login ID, `GET /login/password`, `POST /login/password`, which
//!    ends in a redirect to `/account`. Each virtual user keeps one
//!    connection and starts each login without cookies
//!    (`support::browser`).
//!
//!    Steps 1 and 2 take turns, `ROUNDS` times, and the bound runs once
//!    more at the end. The speed of a shared machine drifts by a tenth
//!    or more within a minute, so each round of logins is set against the
//!    mean of the bound runs just before and after it.
//! 3. The same logins while a probe in this process requests `GET /login`
//!    50 times a second (open loop, a new visitor each time), as people
//!    arrive while others sign in. The page's p99 latency should stay
//!    under 50 ms.
//! 4. The same logins while `wrk` (1 thread, 4 connections) requests
//!    `GET /login` as fast as it can, a second saturating load on top.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use reqwest::StatusCode;
use tokio::task::JoinSet;

use support::broker::{Argon2Settings, Broker, http_client};
use support::browser::Browser;
use support::cpu::{Snapshot, Usage};
use support::stats::{Latencies, millis};
use support::wrk;

const USERS: usize = 16;
const VIRTUAL_USERS: usize = 8;
/// Name prefix of the broker's password hashing threads.
const HASHING_THREADS: &str = "argon2-";
/// Time the virtual users run before a measurement starts.
const WARM_UP: Duration = Duration::from_secs(1);
/// Rounds of password logins, each between two runs of the bound.
const ROUNDS: usize = 3;
const PASSWORD: &str = "lantern-orbit-57-cobalt";
/// Goal for password logins, as a share of the Argon2id bound.
const GOAL_SHARE: f64 = 0.9;
/// Goal for the login page's p99 latency while the pool is busy.
const GOAL_PAGE_P99: Duration = Duration::from_millis(50);
/// Time between two page requests of the probe: 50 per second.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

fn main() {
    if !support::bench_mode() {
        println!("password_login: not run outside `cargo bench`");
        return;
    }
    let seconds = support::seconds(10);
    let settings = Argon2Settings::service_default();
    let mut broker = Broker::prepare(settings);
    broker.add_numbered_users(USERS, PASSWORD);
    broker.serve();
    let cpus = support::cpu::machine_cpus();
    println!(
        "password_login: Argon2id m={} KiB, t={}, p={}; {cpus} CPUs; {seconds} s per measurement",
        settings.memory_kib, settings.iterations, settings.parallelism
    );

    // The load driver shares the machine with the broker, so it runs on one
    // thread, which wakes less often than a pool of threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut bounds = vec![argon2_bound(settings, cpus, seconds)];
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let run = runtime.block_on(password_logins(&broker, seconds, PageLoad::None));
        report(&format!("password logins, round {round}"), &run);
        bounds.push(argon2_bound(settings, cpus, seconds));
        rounds.push(run);
    }
    let bound_rates: Vec<f64> = bounds.iter().map(|bound| bound.per_second).collect();
    let bound = bound_rates.iter().sum::<f64>() / bound_rates.len() as f64;
    println!(
        "password_login: bound, bare argon2 on {cpus} threads: {bound:.1} verifications/s (runs {})",
        bound_rates
            .iter()
            .map(|rate| format!("{rate:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let round_shares: Vec<f64> = rounds
        .iter()
        .enumerate()
        .map(|(index, run)| run.per_second / ((bound_rates[index] + bound_rates[index + 1]) / 2.0))
        .collect();
    println!(
        "password_login: each round against the bound runs beside it: {}",
        round_shares
            .iter()
            .map(|share| format!("{:.1}%", share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let alone = LoginRun::combine(rounds);
    report("password logins, all rounds", &alone);
    // CPU time per login against CPU time per hash does not depend on
    // what else the machine runs meanwhile, unlike the rates.
    let hash_cpu = bounds
        .iter()
        .map(|bound| bound.cpu_seconds_each)
        .sum::<f64>()
        / bounds.len() as f64;
    let login_cpu =
        alone.cpu.broker * alone.cpu.seconds * cpus as f64 / alone.latencies.count() as f64;
    let hashing_cpu = alone.hashing_ticks as f64
        / support::cpu::clock_ticks_per_second()
        / alone.latencies.count() as f64;
    println!(
        "password_login: CPU time per verification {}, broker CPU time per password login {} ({:.0}% of it the hash): {} on the hashing threads, {} on the others",
        millis(Duration::from_secs_f64(hash_cpu)),
        millis(Duration::from_secs_f64(login_cpu)),
        100.0 * hash_cpu / login_cpu,
        millis(Duration::from_secs_f64(hashing_cpu)),
        millis(Duration::from_secs_f64(login_cpu - hashing_cpu)),
    );

    let probed = runtime.block_on(password_logins(&broker, seconds, PageLoad::Probe));
    report("password logins with the page probe", &probed);
    let probe = probed.probe.as_ref().expect("probe latencies");
    println!(
        "password_login: GET /login probe alongside, {} requests, p50 {}, p99 {}",
        probe.count(),
        millis(probe.percentile(50.0)),
        millis(probe.percentile(99.0))
    );

    let page_load = wrk::start(&broker.url("/login"), 1, 4, seconds + WARM_UP.as_secs());
    let loaded = runtime.block_on(password_logins(&broker, seconds, PageLoad::Wrk(page_load)));
    report("password logins with wrk on the page", &loaded);
    let page = loaded.page.as_ref().expect("wrk report");
    assert_eq!(page.non_success, 0, "GET /login failed under load");
    println!(
        "password_login: GET /login alongside {:.0} req/s, p50 {}, p99 {}",
        page.requests_per_second,
        millis(page.p50),
        millis(page.p99)
    );

    let share = alone.per_second / bound;
    println!(
        "summary: password logins {:.1}/s = {:.0}% of the argon2id bound {bound:.1}/s ({cpus} threads; goal {:.0}% {}); by CPU time per login {:.0}%; p50 {}, p99 {}; {}, load driver {:.1}%{}",
        alone.per_second,
        share * 100.0,
        GOAL_SHARE * 100.0,
        if share >= GOAL_SHARE { "met" } else { "missed" },
        100.0 * hash_cpu / login_cpu,
        millis(alone.latencies.percentile(50.0)),
        millis(alone.latencies.percentile(99.0)),
        alone.cpu.describe(),
        alone.cpu.driver * 100.0,
        support::spread_note(
            bound_rates.iter().copied().fold(f64::MAX, f64::min),
            bound_rates.iter().copied().fold(0.0, f64::max)
        )
    );
    let verdict = |p99: Duration| if p99 < GOAL_PAGE_P99 { "met" } else { "missed" };
    println!(
        "summary: login page while passwords saturate the pool, 50 req/s probe: p99 {} (goal < {} {}), p50 {}; logins meanwhile {:.1}/s",
        millis(probe.percentile(99.0)),
        millis(GOAL_PAGE_P99),
        verdict(probe.percentile(99.0)),
        millis(probe.percentile(50.0)),
        probed.per_second
    );
    println!(
        "summary: login page while passwords saturate the pool, wrk at full speed: p99 {} (goal < {} {}), p50 {}, {:.0} req/s; logins meanwhile {:.1}/s",
        millis(page.p99),
        millis(GOAL_PAGE_P99),
        verdict(page.p99),
        millis(page.p50),
        page.requests_per_second,
        loaded.per_second
    );
}

/// Argon2id verifications per second on all threads, and the CPU time
/// that one verification takes.
struct Bound {
    per_second: f64,
    cpu_seconds_each: f64,
}

/// Measures Argon2id verifications with `settings` on `threads` threads at
/// once: the maximum rate of password checks on these cores. Each thread
/// keeps one block of Argon2 memory for all its verifications, as the
/// fastest verifier would. A new block per verification would add page
/// faults, whose cost varies with the allocator's state.
fn argon2_bound(settings: Argon2Settings, threads: usize, seconds: u64) -> Bound {
    let params = Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .expect("Argon2 parameters");
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = b"bound-salt-0001";
    let mut expected = [0_u8; 32];
    argon2
        .hash_password_into(PASSWORD.as_bytes(), salt, &mut expected)
        .expect("hash");
    let deadline = Duration::from_secs(seconds);
    let ticks_started = support::cpu::process_ticks(std::process::id());
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let argon2 = argon2.clone();
                let mut memory = vec![Block::default(); params.block_count()];
                scope.spawn(move || {
                    let mut count = 0;
                    let mut output = [0_u8; 32];
                    while started.elapsed() < deadline {
                        argon2
                            .hash_password_into_with_memory(
                                PASSWORD.as_bytes(),
                                salt,
                                &mut output,
                                &mut memory,
                            )
                            .expect("hash");
                        assert_eq!(output, expected, "Argon2id result changed");
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    let verifications = counts.iter().sum::<u64>() as f64;
    let ticks = support::cpu::process_ticks(std::process::id()) - ticks_started;
    Bound {
        per_second: verifications / started.elapsed().as_secs_f64(),
        cpu_seconds_each: ticks as f64 / support::cpu::clock_ticks_per_second() / verifications,
    }
}

/// Page requests sent alongside the password logins.
enum PageLoad {
    None,
    Probe,
    Wrk(wrk::WrkRun),
}

struct LoginRun {
    per_second: f64,
    latencies: Latencies,
    cpu: Usage,
    /// CPU time of the broker's hashing threads, in clock ticks.
    hashing_ticks: u64,
    probe: Option<Latencies>,
    page: Option<wrk::WrkReport>,
}

impl LoginRun {
    /// Joins rounds without a page load into one run, as if they had run
    /// back to back.
    fn combine(runs: Vec<LoginRun>) -> LoginRun {
        let mut latencies = Vec::new();
        let mut cpu: Option<Usage> = None;
        let mut hashing_ticks = 0;
        for run in runs {
            hashing_ticks += run.hashing_ticks;
            latencies.extend(run.latencies.into_samples());
            cpu = Some(match cpu {
                Some(sum) => sum.combine(&run.cpu),
                None => run.cpu,
            });
        }
        let cpu = cpu.expect("at least one round");
        LoginRun {
            per_second: latencies.len() as f64 / cpu.seconds,
            latencies: Latencies::new(latencies),
            cpu,
            hashing_ticks,
            probe: None,
            page: None,
        }
    }
}

fn report(label: &str, run: &LoginRun) {
    println!(
        "password_login: {label} {:.1}/s ({} logins), p50 {}, p99 {}; {}, load driver {:.1}%",
        run.per_second,
        run.latencies.count(),
        millis(run.latencies.percentile(50.0)),
        millis(run.latencies.percentile(99.0)),
        run.cpu.describe(),
        run.cpu.driver * 100.0
    );
}

/// Runs password logins with `VIRTUAL_USERS` virtual users, with
/// `page_load` alongside, and measures the `seconds` after `WARM_UP`. Only
/// logins that end within that window count. At the start no login has
/// reached its password yet, and at the end the last logins finish with
/// fewer users, so counting those would dilute the rate.
async fn password_logins(broker: &Broker, seconds: u64, page_load: PageLoad) -> LoginRun {
    let http = http_client(VIRTUAL_USERS);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for worker in 0..VIRTUAL_USERS {
        let (address, stop) = (broker.address(), stop.clone());
        workers.spawn(async move {
            let mut browser = Browser::connect(address).await;
            let mut logins = Vec::new();
            let mut user = worker;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                browser
                    .password_login(&format!("user{:03}", user % USERS), PASSWORD)
                    .await;
                logins.push((Instant::now(), started.elapsed()));
                user += VIRTUAL_USERS;
            }
            logins
        });
    }
    let (probe_task, wrk_run) = match page_load {
        PageLoad::None => (None, None),
        PageLoad::Probe => {
            let (http, base_url, stop) = (http.clone(), broker.base_url.clone(), stop.clone());
            (
                Some(tokio::spawn(probe_login_page(http, base_url, stop))),
                None,
            )
        }
        PageLoad::Wrk(run) => (None, Some(run)),
    };
    tokio::time::sleep(WARM_UP).await;
    let start = Snapshot::take(broker.pid());
    let hashing_start = support::cpu::thread_ticks(broker.pid(), HASHING_THREADS);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end = Snapshot::take(broker.pid());
    let hashing_ticks = support::cpu::thread_ticks(broker.pid(), HASHING_THREADS) - hashing_start;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(
            done.expect("virtual user")
                .into_iter()
                .filter(|(ended, _)| (start.at..end.at).contains(ended))
                .map(|(_, latency)| latency),
        );
    }
    let probe = match probe_task {
        Some(task) => Some(Latencies::new(task.await.expect("page probe"))),
        None => None,
    };
    let page = match wrk_run {
        Some(run) => Some(
            tokio::task::spawn_blocking(move || run.finish())
                .await
                .expect("wrk report"),
        ),
        None => None,
    };
    let cpu = Usage::between(&start, &end);
    LoginRun {
        per_second: latencies.len() as f64 / cpu.seconds,
        latencies: Latencies::new(latencies),
        cpu,
        hashing_ticks,
        probe,
        page,
    }
}

/// Requests the login page every `PROBE_INTERVAL` without cookies until
/// `stop` is set, each request in its own task so that a slow response does
/// not delay the next, and returns the latencies.
async fn probe_login_page(
    http: reqwest::Client,
    base_url: String,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let (http, url) = (http.clone(), format!("{base_url}/login"));
        requests.spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.expect("GET /login");
            assert_eq!(response.status(), StatusCode::OK, "GET /login");
            response.bytes().await.expect("login page");
            started.elapsed()
        });
    }
    let mut latencies = Vec::new();
    while let Some(latency) = requests.join_next().await {
        latencies.push(latency.expect("probe request"));
    }
    latencies
}
