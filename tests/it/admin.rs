//! Administration: the admin API's authentication, bulk CL Auth changes with
//! welcome emails sent to a real SMTP server, the one-use temporary
//! password, account-setup links, the user report and the audit log.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Broker, Options, PASSWORD, csrf_token};
use crate::http_login::WebClient;
use crate::peers::smtp::SmtpServer;

const DEFAULT_PASSWORD: &str = "copper-meadow-41-lantern-tide";
const NEW_PASSWORD: &str = "violet-harbour-93-quartz-mill";
const WRONG_CREDENTIALS: &str = "The email address, login ID or password is incorrect.";

fn admin_token(broker: &Broker, name: &str) -> String {
    let output = broker.cli(&["admin", "token", "create", name], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

async fn api_post(broker: &Broker, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = http()
        .post(broker.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("admin API request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn api_get(broker: &Broker, token: &str, path: &str) -> reqwest::Response {
    http()
        .get(broker.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin API request")
}

fn enable_cl_auth(broker: &Broker, login_ids: &[&str]) {
    let mut args = vec!["cl-auth", "enable"];
    args.extend_from_slice(login_ids);
    let output = broker.cli(&args, "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn password_sign_in(
    broker: &Broker,
    identifier: &str,
    password: &str,
) -> (WebClient, String) {
    let client = WebClient::new(broker);
    let identified = client.identify(identifier).await;
    assert_eq!(identified.location(), "/login/password");
    let page = client.password(password).await;
    let outcome = if page.status == StatusCode::SEE_OTHER {
        page.location().to_owned()
    } else {
        page.body
    };
    (client, outcome)
}

#[tokio::test]
async fn admin_api_requires_valid_token() {
    let broker = Broker::start();
    let token = admin_token(&broker, "ops");
    let gets = [
        "/admin/api/v1/users",
        "/admin/api/v1/reports/users.csv",
        "/admin/api/v1/audit",
        "/admin/api/v1/emails",
    ];
    let posts = [
        "/admin/api/v1/cl-auth/enable",
        "/admin/api/v1/cl-auth/disable",
        "/admin/api/v1/users/jdoe/setup-email",
    ];

    for credential in [None, Some("ula_not-a-real-token"), Some("")] {
        for path in gets {
            let mut request = http().get(broker.url(path));
            if let Some(credential) = credential {
                request = request.bearer_auth(credential);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "GET {path} with {credential:?}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
        }
        for path in posts {
            let mut request = http().post(broker.url(path)).json(&json!({"all": true}));
            if let Some(credential) = credential {
                request = request.bearer_auth(credential);
            }
            assert_eq!(
                request.send().await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "POST {path}"
            );
        }
    }
    // A browser session is no substitute for the token.
    broker.add_user("jdoe", "jdoe@example.com");
    let (browser, _) = password_sign_in(&broker, "jdoe", PASSWORD).await;
    assert_eq!(
        browser.get("/admin/api/v1/users").await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        api_get(&broker, &token, "/admin/api/v1/users")
            .await
            .status(),
        StatusCode::OK
    );
    let revoked = broker.cli(&["admin", "token", "revoke", "ops"], "");
    assert!(revoked.status.success());
    assert_eq!(
        api_get(&broker, &token, "/admin/api/v1/users")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let again = broker.cli(&["admin", "token", "revoke", "ops"], "");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no active admin token is named 'ops'")
    );
}

#[tokio::test]
async fn bulk_disable_sends_welcome_emails_over_smtp() {
    let Some(smtp) = SmtpServer::start(true) else {
        return;
    };
    let mut broker = Broker::prepare(Options::default());
    broker.append_config(&format!(
        "[email]\nfrom = \"Sign-in <noreply@example.com>\"\n\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nca_file = \"{}\"\n",
        smtp.port,
        smtp.certificate_path().display()
    ));
    broker.serve();
    broker.add_user("jdoe", "jdoe@example.com");
    broker.add_user("asmith", "asmith@example.com");
    broker.add_user("local", "local@example.com");
    enable_cl_auth(&broker, &["jdoe", "asmith"]);
    let token = admin_token(&broker, "ops");

    // Bad requests change nothing.
    for (body, expected) in [
        (
            json!({"users": ["jdoe"], "default_password": DEFAULT_PASSWORD, "default_password_confirmation": "other"}),
            "differ",
        ),
        (
            json!({"users": ["jdoe"], "default_password": "password1", "default_password_confirmation": "password1"}),
            "too weak",
        ),
        (json!({"users": ["jdoe"]}), "default password twice"),
        (
            json!({"users": [], "default_password": DEFAULT_PASSWORD, "default_password_confirmation": DEFAULT_PASSWORD}),
            "exactly one",
        ),
        (
            json!({"all": true, "users": ["jdoe"], "default_password": DEFAULT_PASSWORD, "default_password_confirmation": DEFAULT_PASSWORD}),
            "exactly one",
        ),
        (json!({"users": ["jdoe"], "surprise": 1}), "invalid JSON"),
    ] {
        let (status, response) =
            api_post(&broker, &token, "/admin/api/v1/cl-auth/disable", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert!(
            response["error"].as_str().unwrap().contains(expected),
            "{response}"
        );
    }
    let users: Value = api_get(&broker, &token, "/admin/api/v1/users")
        .await
        .json()
        .await
        .unwrap();
    let jdoe = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["login_id"] == "jdoe")
        .unwrap();
    assert_eq!(
        jdoe["cl_auth_enabled"], true,
        "rejected requests left jdoe unchanged"
    );

    let (status, response) = api_post(
        &broker,
        &token,
        "/admin/api/v1/cl-auth/disable",
        json!({
            "users": ["jdoe", "asmith@example.com", "local", "nobody"],
            "default_password": DEFAULT_PASSWORD,
            "default_password_confirmation": DEFAULT_PASSWORD,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{response}");
    let results = response["results"].as_array().unwrap();
    let outcome = |user: &str| {
        results
            .iter()
            .find(|result| result["user"] == user)
            .unwrap_or_else(|| panic!("{user} in {response}"))
            .clone()
    };
    assert_eq!(outcome("jdoe")["outcome"], "changed");
    assert_eq!(outcome("asmith")["outcome"], "changed");
    assert_eq!(outcome("local")["outcome"], "unchanged");
    assert_eq!(outcome("nobody")["outcome"], "failed");
    assert!(
        outcome("nobody")["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to disable CloudLink Authentication."),
        "{response}"
    );

    // Enabling CL Auth without an IdP sent two account-setup emails first.
    let emails: Vec<_> = smtp
        .wait_for(4)
        .into_iter()
        .filter(|email| email.header("Subject") == Some("Your new sign-in password"))
        .collect();
    let mut recipients: Vec<String> = emails
        .iter()
        .map(|email| email.header("To").unwrap_or_default().to_owned())
        .collect();
    recipients.sort();
    assert_eq!(recipients, ["asmith@example.com", "jdoe@example.com"]);
    for email in &emails {
        assert!(
            email.body().contains(DEFAULT_PASSWORD),
            "the welcome email carries the temporary password"
        );
        assert_eq!(email.header("From"), Some("Sign-in <noreply@example.com>"));
    }

    // The temporary password leads to the new-password step once.
    let (browser, outcome) = password_sign_in(&broker, "jdoe", DEFAULT_PASSWORD).await;
    assert_eq!(outcome, "/login/new-password");
    let form = browser.get("/login/new-password").await;
    let mismatch = browser
        .post(
            "/login/new-password",
            &[
                ("csrf_token", &csrf_token(&form.body)),
                ("new_password", NEW_PASSWORD),
                ("new_password_confirmation", "something-else"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let done = browser
        .submit(
            "/login/new-password",
            "/login/new-password",
            &[
                ("new_password", NEW_PASSWORD),
                ("new_password_confirmation", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.location(), "/account", "{}", done.body);

    let (_, reused) = password_sign_in(&broker, "jdoe", DEFAULT_PASSWORD).await;
    assert!(
        reused.contains(WRONG_CREDENTIALS),
        "the temporary password works once: {reused}"
    );
    let (_, fresh) = password_sign_in(&broker, "jdoe", NEW_PASSWORD).await;
    assert_eq!(fresh, "/account");

    // Leaving the new-password step does not keep the temporary password alive.
    let (_, abandoned) = password_sign_in(&broker, "asmith", DEFAULT_PASSWORD).await;
    assert_eq!(abandoned, "/login/new-password");
    let (_, second) = password_sign_in(&broker, "asmith", DEFAULT_PASSWORD).await;
    assert!(second.contains(WRONG_CREDENTIALS), "{second}");

    // The audit log has the change and the sign-ins, and no password.
    let audit = api_get(&broker, &token, "/admin/api/v1/audit?user=jdoe").await;
    assert_eq!(audit.status(), StatusCode::OK);
    let audit_text = audit.text().await.unwrap();
    let audit: Value = serde_json::from_str(&audit_text).unwrap();
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    for kind in ["cl_auth.disable", "password.changed", "login"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    for secret in [DEFAULT_PASSWORD, NEW_PASSWORD] {
        assert!(
            !audit_text.contains(secret),
            "the audit log contains a password"
        );
        assert!(
            !broker.log().contains(secret),
            "the service log contains a password"
        );
    }
}

#[tokio::test]
async fn unreachable_smtp_keeps_email_queued() {
    let mut broker = Broker::prepare(Options::default());
    let closed_port = crate::harness::free_port();
    broker.append_config(&format!(
        "[email.smtp]\nhost = \"127.0.0.1\"\nport = {closed_port}\nsecurity = \"none\"\ntimeout_seconds = 2\n"
    ));
    broker.serve();
    broker.add_user("jdoe", "jdoe@example.com");
    let output = broker.cli(&["cl-auth", "enable", "jdoe"], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = admin_token(&broker, "ops");
    let emails: Value = api_get(&broker, &token, "/admin/api/v1/emails")
        .await
        .json()
        .await
        .unwrap();
    let email = &emails["emails"][0];
    assert_eq!(email["kind"], "account_setup");
    assert_eq!(email["recipient"], "jdoe@example.com");
    assert!(email["attempts"].as_i64().unwrap() >= 1, "{emails}");
    assert!(email["sent_at"].is_null());
    assert!(
        email["last_error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{emails}"
    );
}

#[tokio::test]
async fn setup_link_sets_mitel_password_once() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jdoe@example.com");
    // No IdP and no SMTP server: Mitel credentials apply, and the email goes
    // to the outbox folder.
    enable_cl_auth(&broker, &["jdoe"]);
    let outbox = broker.data_dir().join("data/outbox");
    let eml: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox folder")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(
        eml.len(),
        1,
        "one account-setup email in {}",
        outbox.display()
    );
    let raw = std::fs::read_to_string(eml[0].path()).unwrap();
    let raw = raw.replace("=\r\n", "").replace("=3D", "=");
    let start = raw.find("/account/setup?token=").expect("setup link");
    let link: String = raw[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let browser = WebClient::new(&broker);
    let form = browser.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let token = link.split_once("token=").unwrap().1.to_owned();
    let csrf = csrf_token(&form.body);
    let first = [
        ("csrf_token", csrf.as_str()),
        ("token", token.as_str()),
        ("new_password", NEW_PASSWORD),
        ("new_password_confirmation", NEW_PASSWORD),
    ];
    let done = browser.post("/account/setup", &first).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Password set"));

    // The link works once.
    assert_eq!(browser.get(&link).await.status, StatusCode::GONE);
    let replay = browser.post("/account/setup", &first).await;
    assert_eq!(replay.status, StatusCode::GONE);

    // The Mitel-credentials password now signs the CL Auth user in.
    let client = WebClient::new(&broker);
    let identified = client.identify("jdoe").await;
    assert_eq!(
        identified.location(),
        "/login/password",
        "{}",
        identified.body
    );
    let signed_in = client.password(NEW_PASSWORD).await;
    assert_eq!(signed_in.location(), "/account", "{}", signed_in.body);

    // A user without CL Auth gets the fixed failure text.
    broker.add_user("local", "local@example.com");
    let api_token = admin_token(&broker, "ops");
    let (status, outcome) = api_post(
        &broker,
        &api_token,
        "/admin/api/v1/users/local/setup-email",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        outcome["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to send CloudLink Account setup Email."),
        "{outcome}"
    );
    let (status, outcome) = api_post(
        &broker,
        &api_token,
        "/admin/api/v1/users/jdoe/setup-email",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
}

#[tokio::test]
async fn user_report_matches_cli() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jdoe@example.com");
    broker.add_user("comma", "comma@example.com");
    let token = admin_token(&broker, "reports");
    let response = api_get(&broker, &token, "/admin/api/v1/reports/users.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "First Name,Last Name,Email,UCC Bundle,Department,Location"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines.contains(&"Test,User,jdoe@example.com,,,"), "{csv}");

    let cli = broker.cli(&["report", "users"], "");
    assert!(cli.status.success());
    assert_eq!(String::from_utf8_lossy(&cli.stdout), csv);
}

async fn active_alarms(broker: &Broker, token: &str) -> Vec<String> {
    let body: Value = api_get(broker, token, "/admin/api/v1/alarms")
        .await
        .json()
        .await
        .unwrap();
    body["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alarm| alarm["alarm"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for_alarms(broker: &Broker, token: &str, expected: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let active = active_alarms(broker, token).await;
        if active == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alarms {active:?}, expected {expected:?}\n{}",
            broker.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn metric_line(broker: &Broker, alarm: &str) -> String {
    let text = http()
        .get(broker.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with("unified_login_alarm_active") && line.contains(alarm))
        .unwrap_or_else(|| panic!("no gauge for {alarm} in\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn smtp_outage_raises_and_clears_alarm() {
    let port = crate::harness::free_port();
    let mut broker = Broker::prepare(Options::default());
    broker.append_config(&format!(
        "[health]\ncheck_seconds = 1\n\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout_seconds = 2\n"
    ));
    broker.serve();
    let token = admin_token(&broker, "ops");

    wait_for_alarms(&broker, &token, &["REST_CONNECT_FAILURE"]).await;
    assert!(
        metric_line(&broker, "REST_CONNECT_FAILURE")
            .await
            .ends_with(" 1")
    );
    assert!(
        metric_line(&broker, "AUTHSERVICE_DOWN")
            .await
            .ends_with(" 0")
    );
    // Several failed checks later, the alarm was still logged only once.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        broker.log().matches("alarm raised").count(),
        1,
        "{}",
        broker.log()
    );

    let Some(_smtp) = SmtpServer::start_at(port, false) else {
        return;
    };
    wait_for_alarms(&broker, &token, &[]).await;
    assert!(
        metric_line(&broker, "REST_CONNECT_FAILURE")
            .await
            .ends_with(" 0")
    );
    assert_eq!(
        broker.log().matches("alarm cleared").count(),
        1,
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn admin_pages_need_admin_role() {
    let broker = Broker::start();
    broker.add_user("plain", "plain@example.com");
    let anonymous = WebClient::new(&broker);
    for path in ["/admin", "/admin/audit", "/admin/reports/users.csv"] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            page.location().starts_with("/login"),
            "{path}: {}",
            page.location()
        );
    }
    let (signed_in, _) = password_sign_in(&broker, "plain", PASSWORD).await;
    for path in ["/admin", "/admin/audit", "/admin/reports/users.csv"] {
        let page = signed_in.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Administrators only"), "{path}");
    }
    let form = signed_in.get("/account").await;
    let refused = signed_in
        .post(
            "/admin/cl-auth",
            &[
                ("csrf_token", &csrf_token(&form.body)),
                ("users", "plain"),
                ("action", "enable"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let users: Value = serde_json::from_str(
        &api_get(
            &broker,
            &admin_token(&broker, "check"),
            "/admin/api/v1/users",
        )
        .await
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        users["users"][0]["cl_auth_enabled"], false,
        "the refused post changed nothing"
    );

    let granted = broker.cli(&["admin", "role", "grant", "plain"], "");
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert_eq!(signed_in.get("/admin").await.status, StatusCode::OK);
    let missing = broker.cli(&["admin", "role", "grant", "nobody"], "");
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("no user has the login ID or email 'nobody'")
    );
}

#[tokio::test]
async fn admin_ui_disables_cl_auth_in_chromium() {
    use fantoccini::Locator;

    use crate::chromium::{Browser, JavaScript};

    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user("boss", "boss@example.com");
    broker.add_user("jdoe", "jdoe@example.com");
    broker.add_user("asmith", "asmith@example.com");
    broker.add_user("other", "other@example.com");
    enable_cl_auth(&broker, &["jdoe", "asmith", "other"]);
    let granted = broker.cli(&["admin", "role", "grant", "boss"], "");
    assert!(granted.status.success());

    browser.open(&broker.url("/login?return_to=/admin")).await;
    browser.type_into("#identifier", "boss").await;
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;
    assert_eq!(
        browser.path().await,
        "/admin",
        "{}",
        browser.describe().await
    );

    // Rows are sorted by login ID: asmith, boss, jdoe, other.
    let rows = browser
        .client
        .find_all(Locator::Css("tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for (index, login_id) in [(1, "asmith"), (3, "jdoe")] {
        assert_eq!(
            browser
                .text(&format!("tbody tr:nth-child({index}) .login-id"))
                .await,
            login_id
        );
        browser.click(&format!("#select-{index}")).await;
    }
    browser
        .type_into("#default-password", DEFAULT_PASSWORD)
        .await;
    browser
        .type_into("#default-password-confirmation", DEFAULT_PASSWORD)
        .await;
    browser.click_and_wait(Locator::Id("disable-cl-auth")).await;

    assert_eq!(browser.path().await, "/admin/cl-auth");
    assert_eq!(
        browser.text("#results tbody tr:nth-child(1) .user").await,
        "asmith"
    );
    assert_eq!(
        browser
            .text("#results tbody tr:nth-child(1) .outcome")
            .await,
        "Done"
    );
    assert_eq!(
        browser.text("#results tbody tr:nth-child(2) .user").await,
        "jdoe"
    );
    assert_eq!(
        browser
            .text("#results tbody tr:nth-child(2) .outcome")
            .await,
        "Done"
    );

    browser.click_and_wait(Locator::Id("back")).await;
    assert_eq!(browser.text("tbody tr:nth-child(1) .cl-auth").await, "off");
    assert_eq!(browser.text("tbody tr:nth-child(3) .cl-auth").await, "off");
    assert_eq!(
        browser.text("tbody tr:nth-child(4) .cl-auth").await,
        "on",
        "the unselected user keeps CL Auth"
    );

    // Mismatched passwords change nothing, and the page shows the reason.
    browser.click("#select-4").await;
    browser
        .type_into("#default-password", DEFAULT_PASSWORD)
        .await;
    browser
        .type_into(
            "#default-password-confirmation",
            "another-password-entirely-77",
        )
        .await;
    browser.click_and_wait(Locator::Id("disable-cl-auth")).await;
    assert!(browser.text("#bulk-error").await.contains("differ"));

    // The two users got their welcome emails in the outbox folder.
    let outbox = broker.data_dir().join("data/outbox");
    let welcome: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|raw| raw.contains("Subject: Your new sign-in password"))
        .collect();
    assert_eq!(welcome.len(), 2);
    for login in ["jdoe@example.com", "asmith@example.com"] {
        assert!(
            welcome
                .iter()
                .any(|raw| raw.contains(&format!("To: {login}"))),
            "{login}"
        );
    }
    browser.close().await;
}

#[tokio::test]
async fn disable_ends_setup_links_and_races_once() {
    let broker = Broker::start();
    broker.add_user("jdoe", "jdoe@example.com");
    enable_cl_auth(&broker, &["jdoe"]);
    let outbox = broker.data_dir().join("data/outbox");
    let raw = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .next()
        .expect("account-setup email");
    let raw = raw.replace("=\r\n", "").replace("=3D", "=");
    let start = raw.find("/account/setup?token=").expect("setup link");
    let link: String = raw[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let token = admin_token(&broker, "ops");
    let body = json!({
        "users": ["jdoe"],
        "default_password": DEFAULT_PASSWORD,
        "default_password_confirmation": DEFAULT_PASSWORD,
    });
    // Five concurrent disables: one changes the user, the others find it done.
    let disable = || {
        api_post(
            &broker,
            &token,
            "/admin/api/v1/cl-auth/disable",
            body.clone(),
        )
    };
    let (a, b, c, d, e) = tokio::join!(disable(), disable(), disable(), disable(), disable());
    let responses = [a, b, c, d, e];
    let changed = responses
        .iter()
        .filter(|(_, response)| response["results"][0]["outcome"] == "changed")
        .count();
    assert_eq!(changed, 1, "{responses:?}");

    // The setup link sent while CL Auth was on no longer works.
    let browser = WebClient::new(&broker);
    assert_eq!(browser.get(&link).await.status, StatusCode::GONE);

    let emails: Value = api_get(&broker, &token, "/admin/api/v1/emails")
        .await
        .json()
        .await
        .unwrap();
    let welcome = emails["emails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|email| email["kind"] == "welcome")
        .count();
    assert_eq!(welcome, 1, "{emails}");
}
