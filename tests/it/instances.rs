//! The broker as several processes on one database: two instances behind a
//! front door that splits one sign-in between them, and one instance that
//! restarts in the middle of a sign-in and after it.
//!
//! The browser is headless Chromium and the IdP is the pysaml2 peer. Tests
//! with two instances run on PostgreSQL whatever engine the other tests
//! use, because only one instance may serve a SQLite file. The restart
//! test uses the database that the harness picks. When Chromium, the IdP or
//! PostgreSQL is missing, a test prints a line to stderr and passes, except
//! under CI, where it fails.

use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::chromium::{Browser, JavaScript};
use crate::database::PostgresDatabase;
use crate::harness::{Broker, Options, PASSWORD, csrf_token};
use crate::http_login::WebClient;
use crate::outage::postgres_options;
use crate::peers::front_door::{FrontDoor, Instance};
use crate::peers::pysaml2::{self, Pysaml2Idp};
use crate::provider_browser::{
    Endpoints, LoopbackRedirect, NATIVE, NATIVE_CALLBACK_PATH, NativeAuthorization, http_client,
    refresh, token_request, userinfo_status,
};
use crate::saml_flow::{
    IdpFields, SamlSetup, add_cl_auth_user, configure_idp, serve_until_exit, setup,
};

const EMAIL: &str = pysaml2::JANE.email;

/// Returns an `[oauth2]` table with only the native client, whose loopback
/// redirect URI has no port, so that any loopback port matches it.
fn native_client_config() -> String {
    format!(
        r#"[oauth2]
access_token_minutes = 10
refresh_token_days = 30

[[oauth2.clients]]
id = "{client_id}"
name = "Desktop app"
kind = "public"
redirect_uris = ["http://127.0.0.1{NATIVE_CALLBACK_PATH}"]
scopes = ["openid", "profile", "email", "offline_access"]
"#,
        client_id = NATIVE.client_id,
    )
}

/// Two instances of one service behind a front door, with the IdP and the
/// native client configured and the CL Auth user `jane`.
struct Pair {
    front: FrontDoor,
    a: Broker,
    b: Broker,
    idp: Pysaml2Idp,
    /// Dropped last, after both instances have stopped.
    _database: PostgresDatabase,
}

/// Starts instance A, then instance B on A's database and config, both with
/// the front door's URL as `public_url`. The front door sends every request
/// to A until the test sets routes.
async fn start_pair() -> Option<Pair> {
    let (database, options) = postgres_options()?;
    let front = FrontDoor::start().await;
    let mut a = Broker::prepare(Options {
        public_url: Some(front.base_url.clone()),
        ..options
    });
    let idp = Pysaml2Idp::start(&front.url("/saml/metadata"), &front.url("/saml/acs"))?;
    configure_idp(
        &a,
        &IdpFields {
            sso_url: &idp.sso_url,
            entity_id: &idp.entity_id,
            certificate_pem: &idp.certificate_pem,
        },
        &[],
    );
    add_cl_auth_user(&a, "jane", EMAIL);
    a.append_config(&native_client_config());
    a.serve();

    let mut b = Broker::prepare_sibling(&a);
    b.serve();
    front.set_backend(Instance::A, &a.base_url);
    front.set_backend(Instance::B, &b.base_url);
    Some(Pair {
        front,
        a,
        b,
        idp,
        _database: database,
    })
}

impl Pair {
    /// Returns both instances' logs and the front door's request log, for
    /// assert messages.
    fn logs(&self) -> String {
        format!(
            "front door:\n{}\ninstance A log:\n{}\ninstance B log:\n{}",
            self.front.describe(),
            self.a.log(),
            self.b.log()
        )
    }

    /// Checks that every `method` request to `path` went to `instance`, and
    /// that there was at least one.
    fn assert_served_by(&self, method: &str, path: &str, instance: Instance) {
        let exchanges = self.front.exchanges_to(method, path);
        assert!(
            !exchanges.is_empty(),
            "no {method} {path} passed the front door:\n{}",
            self.front.describe()
        );
        for exchange in exchanges {
            assert_eq!(
                exchange.instance,
                instance,
                "{method} {path} went to the wrong instance:\n{}",
                self.front.describe()
            );
        }
    }
}

/// Fetches the discovery document through the front door and checks that
/// the issuer and endpoints use the front door's URL.
async fn discover_through(http: &reqwest::Client, front: &FrontDoor) -> Endpoints {
    let url = front.url("/.well-known/openid-configuration");
    let response = http.get(&url).send().await.expect("GET discovery");
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    let document: Value = response.json().await.expect("discovery is JSON");
    assert_eq!(
        document["issuer"],
        front.base_url.as_str(),
        "the issuer is the public URL"
    );
    let endpoint = |field: &str| {
        let value = document[field]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no {field}: {document:#}"))
            .to_owned();
        assert!(
            value.starts_with(&front.base_url),
            "{field} {value} is not behind the front door {}",
            front.base_url
        );
        value
    };
    Endpoints {
        authorization: endpoint("authorization_endpoint"),
        token: endpoint("token_endpoint"),
        userinfo: endpoint("userinfo_endpoint"),
        jwks: endpoint("jwks_uri"),
    }
}

/// Returns the string field `name` of a token response.
fn token_field(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in the token response {body}"))
        .to_owned()
}

/// Opens the broker's sign-in page at `login_url` in a browser that the
/// provider sent there, and submits the prefilled email, which leads to the
/// pysaml2 IdP's login form.
async fn enter_prefilled_email(browser: &Browser, login_url: &str, idp: &Pysaml2Idp) {
    browser.wait_for_page(login_url).await;
    assert_eq!(
        browser.value("#identifier").await,
        EMAIL,
        "the login_hint prefills the identifier"
    );
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;
    browser.wait_for_page(&idp.sso_url).await;
}

/// Signs in at the pysaml2 IdP's login form. With JavaScript on, the IdP's
/// POST form then submits itself to the ACS.
async fn sign_in_at_idp(browser: &Browser) {
    browser
        .type_into(
            &format!("#{}", pysaml2::PASSWORD_FIELD),
            pysaml2::JANE.password,
        )
        .await;
    browser.click("#sign-in").await;
}

#[tokio::test]
async fn sign_in_split_across_instances() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(pair) = start_pair().await else {
        return;
    };
    let front = &pair.front;
    let http = http_client();
    let endpoints = discover_through(&http, front).await;
    let mut loopback = LoopbackRedirect::start().await;

    // Instance A shows the sign-in pages and sends the browser to the IdP.
    // Instance B receives the IdP's response and finishes the authorization,
    // so B issues the code from the login that A started.
    front.route_default(Instance::A);
    front.route("/saml/", Instance::B);
    front.route("/oauth2/authorize/continue", Instance::B);
    front.record_bodies("/saml/acs");

    let authorization =
        NativeAuthorization::new(&endpoints, &loopback.redirect_uri, &[("login_hint", EMAIL)]);
    browser.open(&authorization.url).await;
    enter_prefilled_email(&browser, &front.url("/login"), &pair.idp).await;
    sign_in_at_idp(&browser).await;
    browser.wait_for_page(&loopback.redirect_uri).await;
    let code = authorization.code_from(&loopback.next_callback().await, &front.base_url);

    pair.assert_served_by("GET", "/oauth2/authorize", Instance::A);
    pair.assert_served_by("POST", "/login", Instance::A);
    pair.assert_served_by("POST", "/saml/acs", Instance::B);
    pair.assert_served_by("GET", "/saml/complete", Instance::B);
    pair.assert_served_by("GET", "/oauth2/authorize/continue", Instance::B);

    // Instance A exchanges the code that B issued and refreshes the tokens.
    let (status, _, body) = token_request(
        &http,
        &endpoints,
        &NATIVE,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &loopback.redirect_uri),
            ("code_verifier", &authorization.code_verifier),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "code exchange at instance A: {body}\n{}",
        pair.logs()
    );
    let first_refresh_token = token_field(&body, "refresh_token");

    let (status, refreshed) = refresh(&http, &endpoints, &NATIVE, &first_refresh_token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refresh at instance A: {refreshed}\n{}",
        pair.logs()
    );
    let access_token = token_field(&refreshed, "access_token");
    assert_ne!(
        token_field(&refreshed, "refresh_token"),
        first_refresh_token,
        "the refresh grant rotates the refresh token"
    );
    pair.assert_served_by("POST", "/oauth2/token", Instance::A);

    // Instance B accepts the access token that A signed.
    front.route("/oauth2/userinfo", Instance::B);
    assert_eq!(
        userinfo_status(&http, &endpoints, &access_token).await,
        StatusCode::OK,
        "userinfo at instance B with instance A's access token\n{}",
        pair.logs()
    );
    pair.assert_served_by("GET", "/oauth2/userinfo", Instance::B);

    // The SAML response that B accepted, replayed to A, is rejected, and
    // the client that replays it gets no session.
    let captured = front.exchanges_to("POST", "/saml/acs");
    assert_eq!(
        captured.len(),
        1,
        "the browser posted to the ACS once:\n{}",
        front.describe()
    );
    let saml_post = captured[0].body.clone().expect("recorded ACS body");
    front.route("/saml/", Instance::A);
    let replayer = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("build an HTTP client");
    let replay = replayer
        .post(front.url("/saml/acs"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(saml_post)
        .send()
        .await
        .expect("POST the captured SAML response");
    let replay_status = replay.status();
    let replay_location = replay.headers().get(LOCATION).cloned();
    let replay_page = replay.text().await.expect("ACS response body");
    assert_eq!(
        replay_status,
        StatusCode::BAD_REQUEST,
        "instance A rejects the replayed response: {replay_page}\n{}",
        pair.logs()
    );
    assert_eq!(
        replay_location, None,
        "the rejected response redirects nowhere"
    );
    // A different reason, such as an unknown request, would mean that A
    // does not see what B stored.
    assert!(
        replay_page.contains("this sign-in request was already answered"),
        "instance A knows that instance B consumed the request: {replay_page}"
    );
    let replays = front.exchanges_to("POST", "/saml/acs");
    assert_eq!(
        replays.last().map(|exchange| exchange.instance),
        Some(Instance::A),
        "the replay went to instance A:\n{}",
        front.describe()
    );

    let account = replayer
        .get(front.url("/account"))
        .send()
        .await
        .expect("GET /account after the replay");
    let account_location = account
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        account.status().is_redirection() && account_location.starts_with("/login"),
        "the replaying client is not signed in: {} to {account_location:?}",
        account.status()
    );
    browser.close().await;
}

/// Stops the broker's process and starts a new one on the same port and
/// database.
fn restart(broker: &mut Broker) {
    broker.stop();
    broker.serve();
}

#[tokio::test]
async fn sign_in_survives_restarts() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(SamlSetup { mut broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };

    // The restart comes while the browser is at the IdP, so the new process
    // finds the session and the pending AuthnRequest only in the database.
    browser.open(&broker.url("/login")).await;
    browser.type_into("#identifier", EMAIL).await;
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;
    browser.wait_for_page(&idp.sso_url).await;
    restart(&mut broker);

    sign_in_at_idp(&browser).await;
    browser.wait_for_page(&broker.url("/account")).await;
    assert_eq!(
        browser.text("#email").await,
        EMAIL,
        "the restarted broker accepts the IdP's response to the request that it sent before the restart\n{}",
        broker.log()
    );
    assert_eq!(browser.text("#method").await, "saml", "sign-in method");

    restart(&mut broker);
    browser.open(&broker.url("/account")).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "the session outlives the restart: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("#email").await,
        EMAIL,
        "account page email after the restart"
    );
    browser.close().await;
}

/// Runs on PostgreSQL whatever engine the other tests use, because on SQLite
/// each instance keeps its allowance in its own memory.
#[tokio::test]
async fn rate_limit_shared_between_instances() {
    let Some((_database, options)) = postgres_options() else {
        return;
    };
    let mut a = Broker::prepare(Options {
        per_ip_per_minute: 1,
        burst: 2,
        ..options
    });
    a.serve();
    let mut b = Broker::prepare_sibling(&a);
    b.serve();

    let on_a = WebClient::new(&a);
    let token = csrf_token(&on_a.get("/login").await.body);
    for attempt in 1..=2 {
        let page = on_a
            .post(
                "/login",
                &[("csrf_token", &token), ("identifier", "x@example.com")],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "attempt {attempt} on A");
    }

    // The same address has used its burst on A, so B rejects it too.
    let on_b = WebClient::new(&b);
    let token = csrf_token(&on_b.get("/login").await.body);
    let limited = on_b
        .post(
            "/login",
            &[("csrf_token", &token), ("identifier", "x@example.com")],
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
}

/// A sign-out on one instance ends the session on the other, which must
/// read the session from the database rather than from a copy it kept.
#[tokio::test]
async fn sign_out_reaches_other_instance() {
    let Some((_database, options)) = postgres_options() else {
        return;
    };
    let mut a = Broker::prepare(options);
    a.add_user("jdoe", "jane@example.com");
    a.serve();
    let mut b = Broker::prepare_sibling(&a);
    b.serve();

    let on_a = WebClient::new(&a);
    let signed_in = on_a.sign_in("jane@example.com", PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(on_a.get("/account").await.status, StatusCode::OK, "on A");
    let on_b = on_a.at(&b);
    assert_eq!(on_b.get("/account").await.status, StatusCode::OK, "on B");

    // The sign-out clears the browser's cookie, so the old one is sent
    // again by hand, as a copied cookie would be.
    let cookie = signed_in
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("unified_login_session="))
        .and_then(|value| value.split(';').next())
        .expect("session cookie at sign-in")
        .to_owned();
    let logout = on_b.submit("/account", "/logout", &[]).await;
    assert_eq!(logout.location(), "/login?signed_out=1");

    let after = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
        .get(a.url("/account"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("GET /account on A");
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "A still shows the account after the sign-out on B"
    );
    let location = after.headers()[LOCATION].to_str().expect("Location");
    assert!(location.starts_with("/login"), "{location}");
}

/// Only one instance may serve a SQLite file, because it keeps the rate
/// limit and copies of sessions in memory. A second start fails with the
/// reason, and the first instance keeps serving.
#[tokio::test]
async fn second_instance_on_sqlite_file_fails_start() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("shared.db");
    let mut a = Broker::prepare(Options {
        database_url: Some(format!("sqlite://{}", file.display())),
        ..Options::default()
    });
    a.serve();
    let b = Broker::prepare_sibling(&a);

    let stderr = failed_start(&b);
    assert!(
        stderr.contains("another unified-login instance is serving"),
        "says why: {stderr}"
    );
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("PostgreSQL"), "names the way out: {stderr}");

    // Another name for the same file shares its lock.
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&file, &link).expect("symbolic link");
    let through_link = Broker::prepare(Options {
        database_url: Some(format!("sqlite://{}", link.display())),
        ..Options::default()
    });
    let stderr = failed_start(&through_link);
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "names the real file: {stderr}"
    );

    let ready = reqwest::get(a.url("/readyz")).await.expect("GET /readyz");
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "the first instance serves on"
    );

    // Once the first instance stops, another may take the file over.
    a.stop();
    let mut c = Broker::prepare_sibling(&a);
    c.serve();
    let ready = reqwest::get(c.url("/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK, "the next instance serves");
}

/// Runs `serve` for `broker`, checks that it exits with status 1, and
/// returns its standard error.
fn failed_start(broker: &Broker) -> String {
    let output = serve_until_exit(&broker.config_path, broker.data_dir());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status; stderr: {stderr}"
    );
    stderr
}
