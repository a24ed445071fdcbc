//! The login flow over plain HTTP against the running binary.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::redirect::Policy;

use crate::harness::{Broker, Options, PASSWORD, csrf_token, totp_now};

const WRONG_CREDENTIALS: &str = "The email address, login ID or password is incorrect.";

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub struct WebClient {
    http: reqwest::Client,
    base_url: String,
}

impl WebClient {
    pub fn new(broker: &Broker) -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("HTTP client");
        Self {
            http,
            base_url: broker.base_url.clone(),
        }
    }

    /// Returns the same browser, cookies included, talking to `broker`.
    /// Cookies belong to the host and not the port, so the instances on
    /// other loopback ports receive them.
    pub fn at(&self, broker: &Broker) -> Self {
        Self {
            http: self.http.clone(),
            base_url: broker.base_url.clone(),
        }
    }

    async fn read(response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("response body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET");
        Self::read(response).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .form(fields)
            .send()
            .await
            .expect("POST");
        Self::read(response).await
    }

    /// Posts a form with the CSRF token from the page at `form_page`.
    pub async fn submit(&self, form_page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_page).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "GET {form_page}: {}",
            page.body
        );
        let token = csrf_token(&page.body);
        let mut all = vec![("csrf_token", token.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    pub async fn identify(&self, identifier: &str) -> Page {
        self.submit("/login", "/login", &[("identifier", identifier)])
            .await
    }

    pub async fn password(&self, password: &str) -> Page {
        self.submit(
            "/login/password",
            "/login/password",
            &[("password", password)],
        )
        .await
    }

    pub async fn sign_in(&self, identifier: &str, password: &str) -> Page {
        let identified = self.identify(identifier).await;
        assert_eq!(identified.location(), "/login/password");
        self.password(password).await
    }
}

/// Returns the `Set-Cookie` header that sets the cookie `name`.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&prefix))
        .map(str::to_owned)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    set_cookie(headers, "unified_login_session")
}

fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    set_cookie(headers, "unified_login_csrf")
}

#[tokio::test]
async fn login_page_sets_security_headers() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let page = client.get("/login").await;

    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "no script source may be allowed: {csp}"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(
        page.headers.get("strict-transport-security").is_none(),
        "HSTS on plain HTTP"
    );

    assert_eq!(
        session_cookie(&page.headers),
        None,
        "the sign-in page starts no session"
    );
    let cookie = csrf_cookie(&page.headers).expect("CSRF cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "Secure cookie over plain HTTP: {cookie}"
    );

    let identified = client.identify("jane@example.com").await;
    let cookie = session_cookie(&identified.headers).expect("session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "Secure cookie over plain HTTP: {cookie}"
    );

    assert!(page.body.contains("autocomplete=\"username\""));
    assert!(
        !page.body.contains("<script"),
        "pages must work without script"
    );
}

#[tokio::test]
async fn https_public_url_secures_cookie() {
    let broker = Broker::start_with(Options {
        public_url: Some("https://login.example.test".into()),
        ..Options::default()
    });
    let page = WebClient::new(&broker).get("/login").await;
    let cookie = csrf_cookie(&page.headers).expect("CSRF cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(
        page.headers.get("strict-transport-security").is_some(),
        "HSTS missing behind https"
    );
}

#[tokio::test]
async fn serves_https_with_configured_certificate() {
    let broker = Broker::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let pem = broker.certificate_pem.clone().expect("certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(broker.url("/login"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_some()
    );
    let cookie = csrf_cookie(response.headers()).expect("CSRF cookie");
    assert!(cookie.contains("Secure"), "{cookie}");

    let token = csrf_token(&response.text().await.unwrap());
    let identified = client
        .post(broker.url("/login"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("identifier", "jane@example.com"),
        ])
        .send()
        .await
        .expect("HTTPS form post");
    assert_eq!(identified.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(identified.headers()).expect("session cookie");
    assert!(cookie.contains("Secure"), "{cookie}");

    let untrusted = reqwest::Client::new()
        .get(broker.url("/login"))
        .send()
        .await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the certificate must fail"
    );
}

#[tokio::test]
async fn password_sign_in_and_logout() {
    let broker = Broker::start();
    broker.add_user("jdoe", "Jane.Doe@Example.com");
    let client = WebClient::new(&broker);

    // Case, whitespace and Unicode form of the email do not matter.
    let identified = client.identify("  JANE.doe@example.COM ").await;
    assert_eq!(identified.location(), "/login/password");
    let cookie_before = session_cookie(&identified.headers).expect("session cookie before sign-in");
    let done = client.password(PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/account");
    let cookie_after = session_cookie(&done.headers).expect("new session cookie at sign-in");
    assert_ne!(
        cookie_before, cookie_after,
        "session id must change at sign-in"
    );
    // Before sign-in the session lives for the 15-minute sign-in limit,
    // afterwards for the 480-minute idle time.
    assert!(cookie_before.contains("Max-Age=900"), "{cookie_before}");
    assert!(cookie_after.contains("Max-Age=28800"), "{cookie_after}");

    let account = client.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(
        account.body.contains("Jane.Doe@Example.com"),
        "{}",
        account.body
    );
    assert!(account.body.contains(">jdoe<"), "{}", account.body);

    let logout = client.submit("/account", "/logout", &[]).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(logout.location(), "/login?signed_out=1");

    let after = client.get("/account").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(
        after.location().starts_with("/login?return_to=%2Faccount"),
        "{}",
        after.location()
    );
}

#[tokio::test]
async fn login_id_also_signs_in() {
    let broker = Broker::start();
    broker.add_user("JDoe", "jane@example.com");
    let client = WebClient::new(&broker);
    let done = client.sign_in("jdoe", PASSWORD).await;
    assert_eq!(done.location(), "/account", "{}", done.body);
}

#[tokio::test]
async fn old_session_cookie_dies_at_logout() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(&broker);
    let done = client.sign_in("jdoe", PASSWORD).await;
    let cookie = session_cookie(&done.headers).expect("session cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();

    client.submit("/account", "/logout", &[]).await;

    // A copy of the cookie taken before logout must not sign anyone in.
    let replay = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let response = replay
        .get(broker.url("/account"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn unknown_user_looks_like_wrong_password() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");

    let known = WebClient::new(&broker);
    let unknown = WebClient::new(&broker);
    let known_step = known.identify("jane@example.com").await;
    let unknown_step = unknown.identify("nobody@example.com").await;
    assert_eq!(known_step.status, unknown_step.status);
    assert_eq!(known_step.location(), unknown_step.location());

    let known_page = known.get("/login/password").await.body;
    let unknown_page = unknown.get("/login/password").await.body;
    let strip =
        |page: &str, identifier: &str| page.replace(&csrf_token(page), "").replace(identifier, "");
    assert_eq!(
        strip(&known_page, "jane@example.com"),
        strip(&unknown_page, "nobody@example.com")
    );

    let wrong = known.password("not-the-password-at-all").await;
    let missing = unknown.password("not-the-password-at-all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.status, wrong.status);
    assert!(wrong.body.contains(WRONG_CREDENTIALS), "{}", wrong.body);
    assert!(missing.body.contains(WRONG_CREDENTIALS), "{}", missing.body);
    assert_eq!(
        strip(&wrong.body, "jane@example.com"),
        strip(&missing.body, "nobody@example.com")
    );
}

/// Times one wrong-password attempt on the password step `client` is at.
async fn timed_attempt(client: &WebClient) -> Duration {
    let page = client.get("/login/password").await;
    let token = csrf_token(&page.body);
    let started = Instant::now();
    let response = client
        .post(
            "/login/password",
            &[("csrf_token", &token), ("password", "wrong-guess-123")],
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    elapsed
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn unknown_user_costs_a_hash() {
    // Real Argon2id parameters, so that skipping the hash would be obvious.
    let broker = Broker::start_with(Options {
        argon2_memory_kib: 19 * 1024,
        lockout_threshold: 100,
        ..Options::default()
    });
    broker.add_user("jdoe", "jane@example.com");
    let known_client = WebClient::new(&broker);
    let unknown_client = WebClient::new(&broker);
    known_client.identify("jane@example.com").await;
    unknown_client.identify("nobody@example.com").await;

    // Attempts alternate, so load from other tests on this machine falls on
    // both sides alike.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..9 {
        known.push(timed_attempt(&known_client).await);
        unknown.push(timed_attempt(&unknown_client).await);
    }
    let (known, unknown) = (median(known), median(unknown));
    // Without the dummy hash the unknown case is two orders of magnitude
    // faster, so a ratio of 0.3 leaves room for noise and still fails then.
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        ratio > 0.3,
        "unknown {unknown:?} vs known {known:?}: ratio {ratio:.3}"
    );
}

#[tokio::test]
async fn missing_csrf_token_is_rejected() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    client.get("/login").await;

    let without = client
        .post("/login", &[("identifier", "jane@example.com")])
        .await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert!(without.body.contains("reload the page"), "{}", without.body);

    let forged = client
        .post("/login", &[("csrf_token", "forged"), ("identifier", "x")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // A token from another browser's session is worthless here.
    let other = WebClient::new(&broker);
    let foreign_token = csrf_token(&other.get("/login").await.body);
    let stolen = client
        .post(
            "/login",
            &[("csrf_token", &foreign_token), ("identifier", "x")],
        )
        .await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);

    // A browser without the CSRF cookie, as on a forged cross-site form,
    // gets no token accepted.
    let cookieless = WebClient::new(&broker);
    let forged = cookieless
        .post(
            "/login",
            &[("csrf_token", &foreign_token), ("identifier", "x")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cross_origin_post_is_rejected() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let token = csrf_token(&client.get("/login").await.body);
    let response = client
        .http
        .post(broker.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf_token", token.as_str()),
            ("identifier", "jane@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn same_origin_post_is_accepted() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let page = client.get("/login").await;
    // Browsers send the real Origin only when the referrer policy allows it.
    assert_eq!(page.headers["referrer-policy"], "same-origin");
    let token = csrf_token(&page.body);
    let response = client
        .http
        .post(broker.url("/login"))
        .header("origin", broker.base_url.as_str())
        .form(&[
            ("csrf_token", token.as_str()),
            ("identifier", "jane@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn return_to_stays_on_site() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");

    for (requested, expected) in [
        ("https://evil.example/steal", "/account"),
        ("//evil.example/steal", "/account"),
        ("/\\evil.example", "/account"),
        ("/.//evil.example", "/account"),
        ("/a/..//evil.example", "/account"),
        ("/account?tab=security", "/account?tab=security"),
    ] {
        let client = WebClient::new(&broker);
        let page = client.get("/login").await;
        let token = csrf_token(&page.body);
        let identified = client
            .post(
                "/login",
                &[
                    ("csrf_token", &token),
                    ("identifier", "jdoe"),
                    ("return_to", requested),
                ],
            )
            .await;
        assert_eq!(identified.location(), "/login/password");
        let done = client.password(PASSWORD).await;
        assert_eq!(done.location(), expected, "return_to {requested}");
    }
}

#[tokio::test]
async fn login_hint_is_prefilled_and_escaped() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let page = client.get("/login?login_hint=jane%40example.com").await;
    assert!(
        page.body.contains("value=\"jane@example.com\""),
        "{}",
        page.body
    );

    let hostile = client
        .get("/login?login_hint=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert!(!hostile.body.contains("<script>"), "{}", hostile.body);
    assert!(
        hostile.body.contains("&#34;&#62;&#60;script&#62;")
            || hostile.body.contains("&quot;&gt;&lt;script&gt;"),
        "{}",
        hostile.body
    );
}

#[tokio::test]
async fn empty_identifier_gets_clear_error() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let page = client.identify("   ").await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body.contains("Enter your email address or login ID."),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn password_step_needs_identifier_first() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let page = client.get("/login/password").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/login");
    let otp = client.get("/login/otp").await;
    assert_eq!(otp.location(), "/login");
}

/// Returns the wait in a "locked for N seconds" or "N minutes" message, in
/// seconds.
fn locked_seconds(body: &str) -> u64 {
    let start = body.find("locked for ").expect("lock message") + "locked for ".len();
    let digits: String = body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let count: u64 = digits.parse().expect("number in the lock message");
    let unit = &body[start + digits.len()..];
    if unit.starts_with(" minutes") {
        count * 60
    } else {
        assert!(unit.starts_with(" seconds"), "lock message unit: {body}");
        count
    }
}

#[tokio::test]
async fn lockout_blocks_right_password() {
    let broker = Broker::start_with(Options {
        lockout_threshold: 3,
        ..Options::default()
    });
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(&broker);
    client.identify("jdoe").await;

    for attempt in 1..=2 {
        let page = client.password("wrong-password-guess").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(page.body.contains(WRONG_CREDENTIALS), "attempt {attempt}");
    }
    let third = client.password("wrong-password-guess").await;
    assert!(
        third.body.contains("locked"),
        "third failure must start the lock: {}",
        third.body
    );

    let right = client.password(PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(right.body.contains("locked for"), "{}", right.body);

    // Attempts that meet the lock do not lengthen it, so the time left
    // can only shrink. A counted attempt would have doubled it.
    let again = client.password(PASSWORD).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    let (first, second) = (locked_seconds(&right.body), locked_seconds(&again.body));
    assert!(second <= first, "lock grew from {first} s to {second} s");

    // The lock is per account, whichever identifier is typed.
    let other = WebClient::new(&broker);
    let by_login = other.sign_in("jane@example.com", PASSWORD).await;
    assert_eq!(by_login.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn parallel_guesses_stop_at_lockout() {
    let broker = Broker::start_with(Options {
        lockout_threshold: 3,
        ..Options::default()
    });
    broker.add_user("jdoe", "jane@example.com");
    let mut clients = Vec::new();
    for _ in 0..20 {
        let client = WebClient::new(&broker);
        client.identify("jdoe").await;
        clients.push(client);
    }

    // Every guess is sent at once, so each one's lock check runs while the
    // others are still hashing.
    let mut guesses = tokio::task::JoinSet::new();
    for client in clients {
        guesses.spawn(async move { client.password("wrong-password-guess").await.status });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let locked = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        checked <= 3,
        "{checked} of 20 parallel guesses were checked"
    );
    assert_eq!(checked + locked, 20, "every other guess meets the lock");

    let right = WebClient::new(&broker).sign_in("jdoe", PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn right_password_gives_attempt_back() {
    let broker = Broker::start_with(Options {
        lockout_threshold: 2,
        ..Options::default()
    });
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(&broker);
    client.identify("jdoe").await;
    let wrong = client.password("wrong-password-guess").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // Signing in clears the count, so one more failure does not lock.
    let signed_in = client.password(PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let again = WebClient::new(&broker);
    again.identify("jdoe").await;
    let wrong = again.password("wrong-password-guess").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert!(wrong.body.contains(WRONG_CREDENTIALS), "{}", wrong.body);
}

#[tokio::test]
async fn unknown_identifier_locks_too() {
    let broker = Broker::start_with(Options {
        lockout_threshold: 2,
        ..Options::default()
    });
    let client = WebClient::new(&broker);
    client.identify("ghost@example.com").await;
    client.password("guess-one-guess").await;
    let second = client.password("guess-two-guess").await;
    assert!(second.body.contains("locked"), "{}", second.body);
}

#[tokio::test]
async fn rate_limit_per_client_ip() {
    let broker = Broker::start_with(Options {
        per_ip_per_minute: 1,
        burst: 3,
        ..Options::default()
    });
    let client = WebClient::new(&broker);
    let token = csrf_token(&client.get("/login").await.body);

    for attempt in 1..=3 {
        let page = client
            .post(
                "/login",
                &[("csrf_token", &token), ("identifier", "x@example.com")],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "attempt {attempt}");
    }
    let limited = client
        .post(
            "/login",
            &[("csrf_token", &token), ("identifier", "x@example.com")],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");

    // Pages that only show a form are not limited.
    assert_eq!(client.get("/login").await.status, StatusCode::OK);
}

#[tokio::test]
async fn acs_posts_are_rate_limited() {
    let broker = Broker::start_with(Options {
        per_ip_per_minute: 1,
        burst: 2,
        ..Options::default()
    });
    let client = WebClient::new(&broker);
    for attempt in 1..=2 {
        let page = client.post("/saml/acs", &[("SAMLResponse", "AAAA")]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "attempt {attempt}");
    }
    let limited = client.post("/saml/acs", &[("SAMLResponse", "AAAA")]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn totp_step_and_code_reuse() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");
    let (secret, _codes) = broker.enroll_totp("jdoe");

    let client = WebClient::new(&broker);
    let after_password = client.sign_in("jdoe", PASSWORD).await;
    assert_eq!(after_password.location(), "/login/otp");
    // Halfway through, the session still has the 15-minute sign-in limit.
    let cookie = session_cookie(&after_password.headers).expect("session cookie");
    assert!(cookie.contains("Max-Age=900"), "{cookie}");
    assert_eq!(
        client.get("/account").await.status,
        StatusCode::SEE_OTHER,
        "not signed in before the code"
    );

    let wrong = client
        .submit("/login/otp", "/login/otp", &[("code", "000000")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let code = totp_now(&secret);
    let done = client
        .submit("/login/otp", "/login/otp", &[("code", &code)])
        .await;
    assert_eq!(done.location(), "/account", "{}", done.body);
    let account = client.get("/account").await;
    assert!(account.body.contains("password + totp"), "{}", account.body);

    let second = WebClient::new(&broker);
    second.sign_in("jdoe", PASSWORD).await;
    let replay = second
        .submit("/login/otp", "/login/otp", &[("code", &code)])
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(replay.body.contains("already used"), "{}", replay.body);
}

#[tokio::test]
async fn recovery_code_works_once() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");
    let (_secret, codes) = broker.enroll_totp("jdoe");
    assert_eq!(codes.len(), 10);

    let first = WebClient::new(&broker);
    first.sign_in("jdoe", PASSWORD).await;
    let done = first
        .submit(
            "/login/otp",
            "/login/otp",
            &[("code", &codes[0].to_uppercase())],
        )
        .await;
    assert_eq!(done.location(), "/account", "{}", done.body);
    let account = first.get("/account").await;
    assert!(
        account.body.contains("9 recovery codes left"),
        "{}",
        account.body
    );

    let second = WebClient::new(&broker);
    second.sign_in("jdoe", PASSWORD).await;
    let reused = second
        .submit("/login/otp", "/login/otp", &[("code", &codes[0])])
        .await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED, "{}", reused.body);
}

#[tokio::test]
async fn malformed_form_gets_error_page() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    let token = csrf_token(&client.get("/login").await.body);
    let page = client.post("/login", &[("csrf_token", &token)]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Incomplete request"), "{}", page.body);
    assert!(
        !page.body.contains("Failed to deserialize"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let Some(database) = broker.database().sqlite_path() else {
        // The PostgreSQL server's files are outside the broker's control.
        let _ = writeln!(
            std::io::stderr(),
            "database_file_is_private not run: the broker uses PostgreSQL"
        );
        return;
    };
    let mode = std::fs::metadata(database).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "database readable by others: {mode:o}");
}

#[tokio::test]
async fn csrf_token_changes_at_sign_in() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(&broker);
    let before = csrf_token(&client.get("/login").await.body);
    let done = client.sign_in("jdoe", PASSWORD).await;
    let removal = csrf_cookie(&done.headers).expect("CSRF cookie removed at sign-in");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    let after = csrf_token(&client.get("/account").await.body);
    assert_ne!(
        before, after,
        "a token seen before sign-in must not work after it"
    );
    let stale = client.post("/logout", &[("csrf_token", &before)]).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
}

/// Returns the stored browser sessions, each as its serialized record,
/// which changes with every write because it contains the expiry time.
async fn stored_sessions(broker: &Broker) -> Vec<String> {
    let pool = unified_login::db::connect_default(&broker.database().url())
        .await
        .expect("open the broker's database");
    let records = sqlx::query_scalar("SELECT record FROM browser_sessions ORDER BY record")
        .fetch_all(&pool)
        .await
        .expect("read sessions");
    pool.close().await;
    records
}

#[tokio::test]
async fn login_page_stores_no_session() {
    let broker = Broker::start();
    for _ in 0..5 {
        let page = WebClient::new(&broker).get("/login").await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let unknown = WebClient::new(&broker)
        .get("/oauth2/authorize/continue?request=unknown")
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(stored_sessions(&broker).await, Vec::<String>::new());

    let client = WebClient::new(&broker);
    let identified = client.identify("jane@example.com").await;
    assert_eq!(identified.location(), "/login/password");
    let started = stored_sessions(&broker).await;
    assert_eq!(started.len(), 1, "the started sign-in");

    // Showing the page again in the middle of the sign-in writes nothing.
    for _ in 0..3 {
        assert_eq!(client.get("/login").await.status, StatusCode::OK);
    }
    assert_eq!(stored_sessions(&broker).await, started);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let broker = Broker::start();
    let client = WebClient::new(&broker);
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(client.get("/readyz").await.status, StatusCode::OK);
    let missing = client.get("/no-such-page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Page not found"));
}

#[tokio::test]
async fn audit_log_never_holds_passwords() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(&broker);
    client.sign_in("jdoe", "a-wrong-secret-value").await;
    client.sign_in("jdoe", PASSWORD).await;

    let database = broker.database().dump();
    assert!(!database.is_empty(), "the database dump is empty");
    let log = broker.log();
    for secret in [PASSWORD, "a-wrong-secret-value"] {
        let needle = secret.as_bytes();
        assert!(
            !database
                .windows(needle.len())
                .any(|window| window == needle),
            "{secret} in the database"
        );
        assert!(!log.contains(secret), "{secret} in log");
    }
    assert!(log.contains("user signed in"), "{log}");
    assert!(log.contains("sign-in attempt failed"), "{log}");
}
