//! The client address behind a trusted proxy: the broker trusts the front
//! door's address, 127.0.0.1, and takes the client address from the
//! `X-Forwarded-For` entry that the front door appends. Each client connects
//! from its own loopback address: 127.0.0.7 and 127.0.0.8 through the front
//! door, which appends those, and 127.0.0.3 directly to the broker.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;

use crate::harness::{Broker, Options, csrf_token};
use crate::peers::front_door::{FrontDoor, Instance};

const FRONT_DOOR_ADDRESS: &str = "127.0.0.1/32";
const LOGIN_ID: &str = "jdoe";
/// Sign-in form posts per client address before the rate limit returns 429.
const BURST: u32 = 3;

/// A browser-like client on its own loopback source address that adds an
/// `X-Forwarded-For` header of its choosing to each request.
struct Visitor {
    http: reqwest::Client,
    base_url: String,
}

impl Visitor {
    fn new(base_url: &str, source: Ipv4Addr) -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .local_address(IpAddr::V4(source))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base_url: base_url.to_owned(),
        }
    }

    /// Fetches the form at `form_page`, then posts `fields` with its CSRF
    /// token to `action`. Both requests carry `forwarded_for` when given.
    async fn submit(
        &self,
        form_page: &str,
        action: &str,
        fields: &[(&str, &str)],
        forwarded_for: Option<&str>,
    ) -> (StatusCode, String) {
        let mut get = self.http.get(format!("{}{form_page}", self.base_url));
        if let Some(value) = forwarded_for {
            get = get.header("x-forwarded-for", value);
        }
        let page = get.send().await.expect("GET form");
        assert_eq!(page.status(), StatusCode::OK, "GET {form_page}");
        let token = csrf_token(&page.text().await.expect("form body"));

        let mut all = vec![("csrf_token", token.as_str())];
        all.extend_from_slice(fields);
        let mut post = self
            .http
            .post(format!("{}{action}", self.base_url))
            .form(&all);
        if let Some(value) = forwarded_for {
            post = post.header("x-forwarded-for", value);
        }
        let response = post.send().await.expect("POST form");
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, location)
    }

    /// Posts the identifier, then a wrong password, which the audit log
    /// records as a failed sign-in with the client address. That is two
    /// posts of the allowance.
    async fn fail_sign_in(&self, forwarded_for: Option<&str>) {
        let (status, location) = self
            .submit(
                "/login",
                "/login",
                &[("identifier", LOGIN_ID)],
                forwarded_for,
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "identifier post");
        assert_eq!(location, "/login/password");
        let (status, _) = self
            .submit(
                "/login/password",
                "/login/password",
                &[("password", "not-the-password")],
                forwarded_for,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong password post");
    }

    /// Posts an identifier and returns the status: 303 while the allowance
    /// lasts, then 429.
    async fn post_identifier(&self, forwarded_for: Option<&str>) -> StatusCode {
        self.submit(
            "/login",
            "/login",
            &[("identifier", LOGIN_ID)],
            forwarded_for,
        )
        .await
        .0
    }
}

/// Starts a broker with a small sign-in allowance that trusts the front
/// door, and the front door in front of it.
fn start_broker() -> Broker {
    let broker = Broker::prepare(Options {
        per_ip_per_minute: 1,
        burst: BURST,
        ..Options::default()
    });
    broker.append_config(&format!(
        "[network]\ntrusted_proxies = [\"{FRONT_DOOR_ADDRESS}\"]\n"
    ));
    broker.add_user(LOGIN_ID, "jane@example.com");
    broker
}

/// Returns the client addresses of the failed password sign-ins in the
/// audit log, oldest first.
async fn failed_sign_in_addresses(broker: &Broker) -> Vec<Option<String>> {
    let pool = unified_login::db::connect_default(&broker.database().url())
        .await
        .expect("open the broker's database");
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT client_ip FROM audit_events \
         WHERE kind = 'login.password' AND outcome = 'failure' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    pool.close().await;
    rows.into_iter().map(|(address,)| address).collect()
}

#[tokio::test]
async fn forwarded_clients_get_own_allowance() {
    let mut broker = start_broker();
    broker.serve();
    let front = FrontDoor::start().await;
    front.set_backend(Instance::A, &broker.base_url);

    let first = Visitor::new(&front.base_url, Ipv4Addr::new(127, 0, 0, 7));
    let second = Visitor::new(&front.base_url, Ipv4Addr::new(127, 0, 0, 8));

    // The first client's own entry is left of the front door's, so it is
    // not read.
    first.fail_sign_in(Some("203.0.113.66")).await;
    assert_eq!(first.post_identifier(None).await, StatusCode::SEE_OTHER);
    assert_eq!(
        first.post_identifier(None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the first client used up its allowance of {BURST}; log:\n{}",
        broker.log()
    );

    // Both clients reach the broker from the front door's address, but
    // the second has an allowance of its own.
    second.fail_sign_in(None).await;
    assert_eq!(
        second.post_identifier(None).await,
        StatusCode::SEE_OTHER,
        "the second client shares the first one's allowance; front door:\n{}\nlog:\n{}",
        front.describe(),
        broker.log()
    );
    assert_eq!(
        second.post_identifier(None).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    let addresses = failed_sign_in_addresses(&broker).await;
    assert_eq!(
        addresses,
        [Some("127.0.0.7".to_owned()), Some("127.0.0.8".to_owned())],
        "audit log client addresses"
    );
    let log = without_colours(&broker.log());
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("sign-in rate limit reached"))
        .collect();
    assert_eq!(warnings.len(), 2, "rate-limit warnings; log:\n{log}");
    assert!(
        warnings[0].contains("client.ip=127.0.0.7"),
        "the first warning names the first client: {}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("client.ip=127.0.0.8"),
        "the second warning names the second client: {}",
        warnings[1]
    );
}

/// Removes the ANSI colour sequences (`ESC [ ... m`) of the text log.
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut characters = log.chars();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            for skipped in characters.by_ref() {
                if skipped == 'm' {
                    break;
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

#[tokio::test]
async fn direct_client_cannot_forge_address() {
    let mut broker = start_broker();
    broker.serve();
    // 127.0.0.3 is outside the trusted 127.0.0.1/32, so its header is ignored.
    let direct = Visitor::new(&broker.base_url, Ipv4Addr::new(127, 0, 0, 3));

    // A new forged address on every request would get a fresh allowance
    // each time if the broker believed it.
    direct.fail_sign_in(Some("198.51.100.1")).await;
    assert_eq!(
        direct.post_identifier(Some("198.51.100.2")).await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        direct.post_identifier(Some("198.51.100.3")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For gave a direct client a new allowance; log:\n{}",
        broker.log()
    );

    let addresses = failed_sign_in_addresses(&broker).await;
    assert_eq!(
        addresses,
        [Some("127.0.0.3".to_owned())],
        "audit log client addresses"
    );
}
