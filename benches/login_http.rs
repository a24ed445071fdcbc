//! The sign-in pages under concurrent load over HTTP on loopback, against
//! the release binary as a separate process with a SQLite file database.
//!
//! 1. `GET /healthz` and `GET /login` with `wrk` (1 thread, 32 connections,
//!    no cookies, so every page view starts a session). `/healthz` is the
//!    bound: the HTTP stack without any sign-in work.
//! 2. The full SP-initiated SAML login with 32 virtual users in this
//!    process: `GET /login`, `POST /login` with the email (the broker signs
//!    an AuthnRequest and redirects to the IdP), then `POST /saml/acs` with
//!    an Entra-shaped response signed for that AuthnRequest's ID, and the
//!    `GET /saml/complete` that turns it into a signed-in session.
//!
//! A real IdP signs its responses on its own machine, so the driver signs
//! them between two timed phases: first every login's leg up to the
//! redirect, then every login's leg from the ACS on. Logins per second are
//! the number of logins over the two phases' time together, and a login's
//! latency is the sum of its two legs.

mod support;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use data_encoding::BASE64;
use flate2::read::DeflateDecoder;
use reqwest::StatusCode;
use tokio::task::JoinSet;
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use support::broker::{Argon2Settings, Broker, CookieJar, csrf_token, http_client, send};
use support::cpu::{Snapshot, Usage};
use support::entra::{self, IdpKey, ResponseFields};
use support::stats::{Latencies, millis};
use support::wrk;

/// Users enabled for CL Auth; login `i` signs in user `i % USERS`.
const USERS: usize = 64;
const VIRTUAL_USERS: usize = 32;
const WRK_CONNECTIONS: u32 = 32;
/// The IdP's Sign-in URL. Nothing listens there, because the driver reads
/// the AuthnRequest from the redirect and responds in place of the IdP.
const IDP_SSO_URL: &str = "http://127.0.0.1:9/placeholder-idp/saml2";
const PASSWORD: &str = "lantern-orbit-57-cobalt";

/// A pending login and its signed SAML response, taken by one worker.
type LoginSlot = Mutex<Option<(Pending, String)>>;

fn email(user: usize) -> String {
    format!("user{user:03}@contoso.example")
}

fn main() {
    if !support::bench_mode() {
        println!("login_http: not run outside `cargo bench`");
        return;
    }
    let seconds = support::seconds(10);
    let logins: usize = std::env::var("BENCH_LOGINS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000);

    let key = IdpKey::generate();
    let mut broker = Broker::prepare(Argon2Settings::cheap());
    let certificate_path = broker.data_dir().join("idp.pem");
    std::fs::write(&certificate_path, &key.certificate_pem).expect("write IdP certificate");
    broker.cli(
        &[
            "saml",
            "set",
            "--name",
            "Contoso",
            "--sso-url",
            IDP_SSO_URL,
            "--entity-id",
            &entra::idp_entity_id(),
            "--certificates",
            certificate_path.to_str().expect("UTF-8 path"),
            "--identity-attribute",
            ENTRA_UPN_CLAIM,
        ],
        "",
    );
    for user in 0..USERS {
        let login_id = format!("user{user:03}");
        broker.add_user(&login_id, &email(user), PASSWORD);
        broker.cli(&["cl-auth", "enable", &login_id], "");
    }
    broker.serve();
    println!(
        "login_http: {USERS} CL Auth users, {seconds} s per wrk run, {logins} SAML logins with {VIRTUAL_USERS} virtual users"
    );

    let (health, health_cpu) = wrk_with_cpu(&broker, "/healthz", seconds);
    let (page, page_cpu) = wrk_with_cpu(&broker, "/login", seconds);
    report_wrk("GET /healthz", &health, &health_cpu);
    report_wrk("GET /login", &page, &page_cpu);

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let login = runtime.block_on(saml_logins(&broker, &key, logins));
    let latencies = Latencies::new(login.latencies.clone());
    let per_second = logins as f64 / login.elapsed.as_secs_f64();
    println!(
        "login_http: SAML login {per_second:.0}/s ({logins} in {:.2} s; to the redirect {:.2} s, from the ACS {:.2} s), p50 {}, p99 {}; {}, load driver {:.0}%",
        login.elapsed.as_secs_f64(),
        login.first_leg.as_secs_f64(),
        login.second_leg.as_secs_f64(),
        millis(latencies.percentile(50.0)),
        millis(latencies.percentile(99.0)),
        login.cpu.describe(),
        login.cpu.driver * 100.0,
    );

    println!(
        "summary: login page {:.0} req/s, p50 {}, p99 {}, {:.0}% of /healthz ({:.0} req/s); {}",
        page.requests_per_second,
        millis(page.p50),
        millis(page.p99),
        100.0 * page.requests_per_second / health.requests_per_second,
        health.requests_per_second,
        page_cpu.describe()
    );
    println!(
        "summary: full SAML login {per_second:.0}/s, p50 {}, p99 {}, {:.1}% of the login page's req/s; {}",
        millis(latencies.percentile(50.0)),
        millis(latencies.percentile(99.0)),
        100.0 * per_second / page.requests_per_second,
        login.cpu.describe()
    );
}

fn wrk_with_cpu(broker: &Broker, path: &str, seconds: u64) -> (wrk::WrkReport, Usage) {
    let start = Snapshot::take(broker.pid());
    let report = wrk::start(&broker.url(path), 1, WRK_CONNECTIONS, seconds).finish();
    let end = Snapshot::take(broker.pid());
    assert_eq!(report.non_success, 0, "GET {path} failed under load");
    assert_eq!(report.socket_errors, 0, "socket errors on GET {path}");
    (report, Usage::between(&start, &end))
}

fn report_wrk(label: &str, report: &wrk::WrkReport, cpu: &Usage) {
    println!(
        "login_http: {label} {:.0} req/s ({} requests), p50 {}, p99 {}; {}",
        report.requests_per_second,
        report.requests,
        millis(report.p50),
        millis(report.p99),
        cpu.describe()
    );
}

/// A login between its two legs.
struct Pending {
    jar: CookieJar,
    email: String,
    request_id: String,
    relay_state: String,
    first_leg: Duration,
}

struct LoginRun {
    elapsed: Duration,
    first_leg: Duration,
    second_leg: Duration,
    latencies: Vec<Duration>,
    cpu: Usage,
}

/// Runs `job(index)` for every index below `count`, `VIRTUAL_USERS` at a
/// time, and returns the results in index order.
async fn run_all<T, F, Fut>(count: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let next = Arc::new(Mutex::new(0_usize));
    let job = Arc::new(job);
    let mut workers = JoinSet::new();
    for _ in 0..VIRTUAL_USERS {
        let next = next.clone();
        let job = job.clone();
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = {
                    let mut next = next.lock().expect("queue");
                    let index = *next;
                    *next += 1;
                    index
                };
                if index >= count {
                    break;
                }
                done.push((index, job(index).await));
            }
            done
        });
    }
    let mut results: Vec<(usize, T)> = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        results.extend(done.expect("virtual user"));
    }
    results.sort_unstable_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

async fn saml_logins(broker: &Broker, key: &IdpKey, count: usize) -> LoginRun {
    let http = http_client(VIRTUAL_USERS);
    let base_url = broker.base_url.clone();
    let sp_entity_id = broker.url("/saml/metadata");
    let acs_url = broker.url("/saml/acs");

    let start = Snapshot::take(broker.pid());
    let pending = {
        let (http, base_url) = (http.clone(), base_url.clone());
        run_all(count, move |index| {
            let (http, base_url) = (http.clone(), base_url.clone());
            async move { first_leg(&http, &base_url, &email(index % USERS)).await }
        })
        .await
    };
    let middle = Snapshot::take(broker.pid());
    let first_cpu = Usage::between(&start, &middle);

    let responses = sign_responses(key, &pending, &sp_entity_id, &acs_url);

    let work: Arc<Vec<LoginSlot>> = Arc::new(
        pending
            .into_iter()
            .zip(responses)
            .map(|item| Mutex::new(Some(item)))
            .collect(),
    );
    let start = Snapshot::take(broker.pid());
    let finished = {
        let (http, base_url, work) = (http.clone(), base_url.clone(), work.clone());
        run_all(count, move |index| {
            let (http, base_url) = (http.clone(), base_url.clone());
            let item = work[index].lock().expect("work item").take();
            async move {
                let (pending, response) = item.expect("each login runs once");
                second_leg(&http, &base_url, pending, &response).await
            }
        })
        .await
    };
    let end = Snapshot::take(broker.pid());
    let second_cpu = Usage::between(&start, &end);

    // Untimed: a sample of the sessions shows the signed-in account.
    for (jar, email, _) in finished.iter().step_by((count / 10).max(1)) {
        let mut jar = jar.clone();
        let account = send(&mut jar, http.get(format!("{base_url}/account"))).await;
        assert_eq!(
            account.status,
            StatusCode::OK,
            "GET /account after SAML login"
        );
        assert!(
            account.body.contains(email.as_str()),
            "account page names {email}"
        );
    }

    let latencies: Vec<Duration> = finished.iter().map(|(_, _, latency)| *latency).collect();
    LoginRun {
        elapsed: Duration::from_secs_f64(first_cpu.seconds + second_cpu.seconds),
        first_leg: Duration::from_secs_f64(first_cpu.seconds),
        second_leg: Duration::from_secs_f64(second_cpu.seconds),
        latencies,
        cpu: first_cpu.combine(&second_cpu),
    }
}

/// Opens the login page, submits the email and returns the AuthnRequest
/// that the broker redirected to the IdP.
async fn first_leg(http: &reqwest::Client, base_url: &str, email: &str) -> Pending {
    let mut jar = CookieJar::default();
    let started = Instant::now();
    let page = send(&mut jar, http.get(format!("{base_url}/login"))).await;
    assert_eq!(page.status, StatusCode::OK, "GET /login: {}", page.body);
    let token = csrf_token(&page.body);
    let redirect = send(
        &mut jar,
        http.post(format!("{base_url}/login"))
            .form(&[("csrf_token", token.as_str()), ("identifier", email)]),
    )
    .await;
    let first_leg = started.elapsed();
    assert_eq!(
        redirect.status,
        StatusCode::SEE_OTHER,
        "POST /login: {}",
        redirect.body
    );
    assert!(
        redirect.location.starts_with(IDP_SSO_URL),
        "POST /login redirected to {}",
        redirect.location
    );

    let url = url::Url::parse(&redirect.location).expect("redirect URL");
    let query = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("{name} missing from {url}"))
    };
    let compressed = BASE64
        .decode(query("SAMLRequest").as_bytes())
        .expect("SAMLRequest is base64");
    let mut request = String::new();
    DeflateDecoder::new(&compressed[..])
        .read_to_string(&mut request)
        .expect("SAMLRequest is raw DEFLATE");
    let id_start = request.find(" ID=\"").expect("AuthnRequest ID") + 5;
    let id_end = request[id_start..].find('"').expect("end of ID") + id_start;
    Pending {
        jar,
        email: email.to_owned(),
        request_id: request[id_start..id_end].to_owned(),
        relay_state: query("RelayState"),
        first_leg,
    }
}

/// Signs one response per pending login, on every core, untimed.
fn sign_responses(
    key: &IdpKey,
    pending: &[Pending],
    sp_entity_id: &str,
    acs_url: &str,
) -> Vec<String> {
    let threads = support::cpu::machine_cpus();
    let chunk = pending.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pending
            .chunks(chunk)
            .map(|logins| {
                scope.spawn(move || {
                    logins
                        .iter()
                        .map(|login| {
                            let xml = entra::signed_response(
                                key,
                                &ResponseFields {
                                    sp_entity_id,
                                    acs_url,
                                    request_id: &login.request_id,
                                    email: &login.email,
                                    given_name: "Bench",
                                    surname: "User",
                                    object_id: &uuid::Uuid::new_v4().to_string(),
                                    now: Utc::now(),
                                },
                            );
                            BASE64.encode(xml.as_bytes())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("signing thread"))
            .collect()
    })
}

/// Posts the response to the ACS as the IdP's form does (cross-site, so
/// without the session cookie), then follows the hand-off with the cookie.
/// Returns the browser's cookies, the email and the whole login's latency.
async fn second_leg(
    http: &reqwest::Client,
    base_url: &str,
    mut pending: Pending,
    response: &str,
) -> (CookieJar, String, Duration) {
    let started = Instant::now();
    let acs = send(
        &mut CookieJar::default(),
        http.post(format!("{base_url}/saml/acs")).form(&[
            ("SAMLResponse", response),
            ("RelayState", pending.relay_state.as_str()),
        ]),
    )
    .await;
    assert_eq!(
        acs.status,
        StatusCode::SEE_OTHER,
        "POST /saml/acs: {}",
        acs.body
    );
    let done = send(
        &mut pending.jar,
        http.get(format!("{base_url}{}", acs.location)),
    )
    .await;
    let second_leg = started.elapsed();
    assert_eq!(
        done.status,
        StatusCode::SEE_OTHER,
        "GET {}: {}",
        acs.location,
        done.body
    );
    assert_eq!(done.location, "/account", "hand-off redirected elsewhere");
    (pending.jar, pending.email, pending.first_leg + second_leg)
}
