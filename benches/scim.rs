//! Provisioning throughput: users created per second through
//! `POST /scim/v2/Users` over real HTTP, against the service on loopback
//! with a SQLite file database, each user with CL Auth enabled.
//!
//! `cargo bench --bench scim` provisions 10,000 users. Without `--bench`
//! (as `cargo test --all-targets` runs it) it provisions 200, as a quick
//! check that the path works.
//!
//! It then times listing pages of 100 users spread over the directory,
//! against the IdP's `userName` probe (one indexed look-up) in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::Semaphore;
use unified_login::config::Config;
use unified_login::directory::AuditEvent;
use unified_login::scim::auth::{generate_token, token_digest};
use unified_login::state::AppState;
use unified_login::{db, session, web};

/// Requests in flight at once, as a provisioning client with a small
/// connection pool sends them.
const CONCURRENCY: usize = 8;

/// Users per listed page.
const PAGE_SIZE: usize = 100;

/// Requests timed for each kind of listing.
const LIST_REQUESTS: usize = 50;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let users = if full { 10_000 } else { 200 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(users));
}

async fn run(users: usize) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        ..Config::default()
    };
    let pool = db::connect_default(&config.database_url)
        .await
        .expect("database");
    let (sessions, _) = session::layer(pool.clone(), &config);
    let state = AppState::new(config, pool).await.expect("state");
    let token = generate_token();
    state
        .scim
        .replace_token(
            &token_digest(token.expose_secret()),
            AuditEvent::default(),
            0,
        )
        .await
        .expect("token");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = web::app(state.clone(), sessions).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let url = format!("http://{address}/scim/v2/Users");
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(users);
    for index in 0..users {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let client = client.clone();
        let url = url.clone();
        let bearer = token.expose_secret().to_owned();
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "externalId": format!("u{index}"),
                "userName": format!("u{index:06}@contoso.example"),
                "active": true,
                "name": {"givenName": "Bench", "familyName": format!("User{index}")},
                "emails": [{"type": "work", "primary": true, "value": format!("u{index:06}@contoso.example")}],
                "phoneNumbers": [{"type": "mobile", "value": "+16135550123"}]
            });
            let response = client
                .post(&url)
                .bearer_auth(bearer)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .expect("POST /Users");
            assert_eq!(response.status(), 201, "user {index}");
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let elapsed = started.elapsed();

    let stored = state.users.list().await.expect("users");
    assert_eq!(stored.len(), users);
    assert!(
        stored.iter().all(|user| user.cl_auth_enabled),
        "CL Auth on for every user"
    );
    println!(
        "scim_provision: {users} users in {:.2} s = {:.0} users/s ({CONCURRENCY} requests in flight, debug={})",
        elapsed.as_secs_f64(),
        users as f64 / elapsed.as_secs_f64(),
        cfg!(debug_assertions)
    );

    let bearer = token.expose_secret().to_owned();
    let page_times = time_gets(
        &client,
        &bearer,
        (0..LIST_REQUESTS).map(|request| {
            let start_index = 1 + request * users / LIST_REQUESTS;
            format!("{url}?startIndex={start_index}&count={PAGE_SIZE}")
        }),
    )
    .await;
    let probe_times = time_gets(
        &client,
        &bearer,
        (0..LIST_REQUESTS).map(|request| {
            let index = request * users / LIST_REQUESTS;
            format!("{url}?filter=userName%20eq%20%22u{index:06}%40contoso.example%22")
        }),
    )
    .await;
    let (page, probe) = (median(page_times), median(probe_times));
    println!(
        "scim_provision: list a page of {PAGE_SIZE} of {users} users, median {:.2} ms = {:.1}x the userName probe ({:.2} ms), {LIST_REQUESTS} requests each",
        page.as_secs_f64() * 1000.0,
        page.as_secs_f64() / probe.as_secs_f64(),
        probe.as_secs_f64() * 1000.0
    );
}

/// Sends each GET in turn and returns the latencies.
async fn time_gets(
    client: &reqwest::Client,
    bearer: &str,
    urls: impl Iterator<Item = String>,
) -> Vec<Duration> {
    let mut times = Vec::new();
    for url in urls {
        let started = Instant::now();
        let response = client
            .get(&url)
            .bearer_auth(bearer)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "GET {url}");
        response.bytes().await.expect("listing body");
        times.push(started.elapsed());
    }
    times
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
