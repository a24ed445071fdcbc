//! Capacity: the broker's resident memory and the identifier step's latency
//! with a large directory and many signed-in sessions, against the same
//! binary on an empty database in the same run.
//!
//! `cargo bench --bench capacity` loads 1,000,000 users and 100,000 active
//! sessions into a SQLite file. Without `--bench` (as `cargo test
//! --all-targets` runs it) it loads 2,000 users and 200 sessions, as a quick
//! check that the path works. The broker runs as its own process, so its
//! memory is measured apart from the load generator's.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use unified_login::db;
use unified_login::db::DbPool;

const BINARY: &str = env!("CARGO_BIN_EXE_unified-login");
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Rows per INSERT statement while loading.
const ROWS_PER_INSERT: usize = 500;

struct Size {
    users: usize,
    sessions: usize,
    requests: usize,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let size = if full {
        Size {
            users: 1_000_000,
            sessions: 100_000,
            requests: 4_000,
        }
    } else {
        Size {
            users: 2_000,
            sessions: 200,
            requests: 200,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(size));
}

async fn run(size: Size) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let database = dir.path().join("capacity.db");
    let url = format!("sqlite://{}", database.display());
    let pool = db::connect_default(&url).await.expect("database");

    let empty = measure(dir.path(), &url, &[], &[]).await;

    let started = Instant::now();
    let emails = load_users(&pool, size.users).await;
    let cookies = load_sessions(&pool, size.sessions).await;
    pool.close().await;
    let load_seconds = started.elapsed().as_secs_f64();
    let file_mib = std::fs::metadata(&database).map_or(0.0, |meta| meta.len() as f64 / 1_048_576.0);

    let sample: Vec<String> = (0..size.requests)
        .map(|_| emails[rand::thread_rng().gen_range(0..emails.len())].clone())
        .collect();
    let cookie_sample: Vec<String> = (0..size.requests.min(cookies.len().max(1)))
        .filter_map(|_| {
            cookies
                .get(rand::thread_rng().gen_range(0..cookies.len().max(1)))
                .cloned()
        })
        .collect();
    let loaded = measure(dir.path(), &url, &sample, &cookie_sample).await;

    println!(
        "summary: loaded {} users and {} sessions in {load_seconds:.1} s; database file {file_mib:.0} MiB",
        size.users, size.sessions
    );
    println!(
        "summary: resident memory {:.1} MiB empty, {:.1} MiB loaded ({:.2}x)",
        empty.rss_mib,
        loaded.rss_mib,
        loaded.rss_mib / empty.rss_mib
    );
    println!(
        "summary: identifier step p50 {:.2} ms, p99 {:.2} ms loaded; p50 {:.2} ms, p99 {:.2} ms empty (p99 {:.2}x)",
        loaded.identify.p50,
        loaded.identify.p99,
        empty.identify.p50,
        empty.identify.p99,
        loaded.identify.p99 / empty.identify.p99
    );
    if let Some(account) = loaded.account {
        println!(
            "summary: signed-in account page with a stored session p50 {:.2} ms, p99 {:.2} ms",
            account.p50, account.p99
        );
    }
}

struct Latency {
    p50: f64,
    p99: f64,
}

struct Measurement {
    rss_mib: f64,
    identify: Latency,
    account: Option<Latency>,
}

/// Starts the broker on `url`, sends the identifier step for each of
/// `identifiers` (or made-up ones when empty) and the account page for each
/// cookie, and reads the broker's resident memory at the end.
async fn measure(
    dir: &std::path::Path,
    url: &str,
    identifiers: &[String],
    cookies: &[String],
) -> Measurement {
    let port = free_port();
    let config = dir.join("capacity.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\n\
             [rate_limit]\nper_ip_per_minute = 10000000\nburst = 10000000\n\
             [log]\nfilter = \"warn\"\n"
        ),
    )
    .expect("config");
    let mut broker = Broker::start(&config, dir, port);
    let base = format!("http://127.0.0.1:{port}");
    let identifiers: Vec<String> = if identifiers.is_empty() {
        (0..200)
            .map(|index| format!("nobody{index}@example.com"))
            .collect()
    } else {
        identifiers.to_vec()
    };
    // One pass to warm the caches, then the measured pass.
    identify_all(&base, &identifiers[..identifiers.len().min(100)]).await;
    let identify = identify_all(&base, &identifiers).await;
    let account = if cookies.is_empty() {
        None
    } else {
        Some(account_pages(&base, cookies).await)
    };
    let rss_mib = broker.rss_mib();
    broker.stop();
    Measurement {
        rss_mib,
        identify,
        account,
    }
}

async fn identify_all(base: &str, identifiers: &[String]) -> Latency {
    let queue = Arc::new(Mutex::new(identifiers.to_vec()));
    let timings = Arc::new(Mutex::new(Vec::with_capacity(identifiers.len())));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let queue = queue.clone();
        let timings = timings.clone();
        let base = base.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(identifier) = queue.lock().await.pop() else {
                    break;
                };
                let client = reqwest::Client::builder()
                    .cookie_store(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("client");
                let page = client
                    .get(format!("{base}/login"))
                    .send()
                    .await
                    .expect("login page");
                let html = page.text().await.expect("login page body");
                let token = csrf_token(&html);
                let started = Instant::now();
                let response = client
                    .post(format!("{base}/login"))
                    .form(&[
                        ("csrf_token", token.as_str()),
                        ("identifier", identifier.as_str()),
                    ])
                    .send()
                    .await
                    .expect("identifier step");
                let elapsed = started.elapsed();
                assert_eq!(
                    response.status(),
                    reqwest::StatusCode::SEE_OTHER,
                    "identifier step failed"
                );
                timings.lock().await.push(elapsed);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let timings = timings.lock().await.clone();
    percentiles(timings)
}

async fn account_pages(base: &str, cookies: &[String]) -> Latency {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut timings = Vec::with_capacity(cookies.len());
    for chunk in cookies.chunks(CONCURRENCY) {
        let mut requests = Vec::new();
        for cookie in chunk {
            let client = client.clone();
            let url = format!("{base}/account");
            let cookie = format!("unified_login_session={cookie}");
            requests.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = client
                    .get(url)
                    .header(reqwest::header::COOKIE, cookie)
                    .send()
                    .await
                    .expect("account page");
                let elapsed = started.elapsed();
                assert_eq!(
                    response.status(),
                    reqwest::StatusCode::OK,
                    "a stored session did not load"
                );
                elapsed
            }));
        }
        for request in requests {
            timings.push(request.await.expect("request"));
        }
    }
    percentiles(timings)
}

fn percentiles(mut timings: Vec<Duration>) -> Latency {
    timings.sort();
    let at = |fraction: f64| {
        let index = ((timings.len() as f64 * fraction).ceil() as usize).clamp(1, timings.len()) - 1;
        timings[index].as_secs_f64() * 1000.0
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// Inserts `count` users with local accounts and returns their emails.
async fn load_users(pool: &DbPool, count: usize) -> Vec<String> {
    let mut emails = Vec::with_capacity(count);
    let mut transaction = pool.begin_with(None).await.expect("transaction");
    for start in (0..count).step_by(ROWS_PER_INSERT) {
        let end = (start + ROWS_PER_INSERT).min(count);
        let mut sql = String::from(
            "INSERT INTO users (id, login_id, login_id_key, email, email_key, first_name, \
             last_name, password_hash, created_at, updated_at) VALUES ",
        );
        for index in start..end {
            if index > start {
                sql.push(',');
            }
            let email = format!("user{index:07}@contoso.example");
            sql.push_str(&format!(
                "('u{index:07}', 'user{index:07}', 'user{index:07}', '{email}', '{email}', \
                 'First{index}', 'Last{index}', NULL, 1764892800, 1764892800)"
            ));
            emails.push(email);
        }
        sqlx::query(&sql)
            .execute(&mut *transaction)
            .await
            .expect("insert users");
    }
    transaction.commit().await.expect("commit users");
    emails
}

/// Inserts `count` signed-in sessions and returns their cookie values.
async fn load_sessions(pool: &DbPool, count: usize) -> Vec<String> {
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(8);
    let mut cookies = Vec::with_capacity(count);
    let mut transaction = pool.begin_with(None).await.expect("transaction");
    for start in (0..count).step_by(ROWS_PER_INSERT) {
        let end = (start + ROWS_PER_INSERT).min(count);
        let mut rows = Vec::new();
        for index in start..end {
            let id = tower_sessions::session::Id(rand::thread_rng().r#gen::<i128>());
            let mut data = std::collections::HashMap::new();
            data.insert(
                "auth.signed_in".to_owned(),
                serde_json::json!({
                    "user_id": format!("u{:07}", index % 1_000_000),
                    "authenticated_at": 1764892800,
                    "methods": ["password"],
                    "session_id": format!("sid-{index}"),
                    "sign_in_id": format!("sign-in-{index}"),
                }),
            );
            data.insert(
                "csrf.token".to_owned(),
                serde_json::json!(format!("token-{index}")),
            );
            let record = tower_sessions::session::Record {
                id,
                data,
                expiry_date: expires,
            };
            let hash = data_encoding::HEXLOWER.encode(&Sha256::digest(id.to_string().as_bytes()));
            rows.push((
                hash,
                serde_json::to_string(&record).expect("session record"),
            ));
            cookies.push(id.to_string());
        }
        let placeholders: Vec<String> = (0..rows.len())
            .map(|row| format!("(${}, ${}, ${})", row * 3 + 1, row * 3 + 2, row * 3 + 3))
            .collect();
        let sql = format!(
            "INSERT INTO browser_sessions (id_hash, record, expires_at) VALUES {}",
            placeholders.join(",")
        );
        let mut query = sqlx::query(&sql);
        for (hash, record) in rows {
            query = query.bind(hash).bind(record).bind(expires.unix_timestamp());
        }
        query
            .execute(&mut *transaction)
            .await
            .expect("insert sessions");
    }
    transaction.commit().await.expect("commit sessions");
    cookies
}

struct Broker {
    child: Child,
}

impl Broker {
    fn start(config: &std::path::Path, dir: &std::path::Path, port: u16) -> Self {
        let log = std::fs::File::create(dir.join("capacity.log")).expect("log");
        let child = Command::new(BINARY)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the broker");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("process status");
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::io::stdout().flush();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}
