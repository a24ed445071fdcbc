//! CL Auth through OpenID Connect end to end: the real binary and the npm
//! `oidc-provider` package (an OpenID Certified provider) on loopback, with a
//! client that follows redirects and forms as a browser does.

use reqwest::StatusCode;
use url::Url;

use crate::harness::{Broker, Options};
use crate::peers::oidc_provider::{self, Mode, OidcProvider, OidcUser};
use crate::saml_flow::{Client, Page, input_value};

pub(crate) struct OidcSetup {
    pub(crate) broker: Broker,
    pub(crate) provider: OidcProvider,
}

/// Starts a broker with the test provider as its `[oidc]` IdP and
/// `jane@example.com` (login ID `jane`) enabled for CL Auth.
fn setup() -> Option<OidcSetup> {
    setup_with_users(&[("jane", "jane@example.com")])
}

/// Starts the test provider and a broker that uses it as its `[oidc]` IdP,
/// with each `(login_id, email)` of `users` added and enabled for CL Auth.
/// Returns `None` when the provider cannot run here outside CI.
pub(crate) fn setup_with_users(users: &[(&str, &str)]) -> Option<OidcSetup> {
    let mut broker = Broker::prepare(Options::default());
    let provider = OidcProvider::start(&broker.url("/oidc/callback"))?;
    let secret_path = broker.data_dir().join("oidc-secret");
    std::fs::write(&secret_path, format!("{}\n", provider.client_secret)).expect("write secret");
    broker.append_config(&oidc_table(
        &provider.issuer,
        &provider.client_id,
        &secret_path,
    ));
    for (login_id, email) in users {
        broker.add_user(login_id, email);
        let enabled = broker.cli(&["cl-auth", "enable", login_id], "");
        assert!(
            enabled.status.success(),
            "cl-auth enable {login_id}: {}",
            String::from_utf8_lossy(&enabled.stderr)
        );
    }
    broker.serve();
    Some(OidcSetup { broker, provider })
}

fn oidc_table(issuer: &str, client_id: &str, secret_path: &std::path::Path) -> String {
    format!(
        "[oidc]\nname = \"Contoso\"\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\nclient_secret_file = \"{}\"\n",
        secret_path.display()
    )
}

/// Follows redirects from `location` until one leads back to the broker, and
/// returns that URL. `page` is the response that carried `location`.
async fn follow_to_broker(
    client: &Client,
    broker: &Broker,
    mut current: Url,
    mut page: Page,
) -> Url {
    for _ in 0..10 {
        let next = current.join(&page.location).expect("redirect URL");
        if next.as_str().starts_with(&broker.base_url) {
            return next;
        }
        page = client.get(next.as_str()).await;
        assert!(
            page.status.is_redirection(),
            "expected a redirect from {next}: {} {}",
            page.status,
            page.body
        );
        current = next;
    }
    panic!("too many redirects at the provider");
}

/// Identifies at the broker, signs in at the provider as `user`, and returns
/// the broker's response to the callback.
async fn sign_in(client: &Client, setup: &OidcSetup, typed: &str, user: &OidcUser) -> Page {
    let redirect = client.identify(&setup.broker, typed).await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER, "{}", redirect.body);
    let authorize = Url::parse(&redirect.location).expect("authorization URL");
    assert!(
        redirect.location.starts_with(&setup.provider.issuer),
        "{}",
        redirect.location
    );

    let interaction = client.get(authorize.as_str()).await;
    let form_url = authorize
        .join(&interaction.location)
        .expect("interaction URL");
    let form = client.get(form_url.as_str()).await;
    assert_eq!(form.status, StatusCode::OK, "login form: {}", form.body);
    let prefilled = input_value(&form.body, oidc_provider::EMAIL_FIELD).unwrap_or_default();
    assert_eq!(
        prefilled,
        typed.trim(),
        "login_hint prefills the provider's form"
    );

    let login = client
        .post(
            &format!("{}/login", form_url.as_str().trim_end_matches('/')),
            &[
                (oidc_provider::EMAIL_FIELD, user.email),
                (oidc_provider::PASSWORD_FIELD, user.password),
            ],
        )
        .await;
    assert!(
        login.status.is_redirection(),
        "provider login: {} {}",
        login.status,
        login.body
    );
    let callback = follow_to_broker(client, &setup.broker, form_url, login).await;
    client.get(callback.as_str()).await
}

#[tokio::test]
async fn oidc_sign_in_over_http() {
    let Some(setup) = setup() else { return };
    let client = Client::new();

    let redirect = client.identify(&setup.broker, "Jane@Example.com").await;
    let authorize = Url::parse(&redirect.location).expect("authorization URL");
    let query = |name: &str| {
        authorize
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    assert_eq!(query("login_hint").as_deref(), Some("Jane@Example.com"));
    assert_eq!(query("code_challenge_method").as_deref(), Some("S256"));
    assert!(query("state").is_some_and(|state| state.len() >= 16));
    assert!(query("nonce").is_some_and(|nonce| nonce.len() >= 16));

    let done = sign_in(
        &Client::new(),
        &setup,
        "jane@example.com",
        &oidc_provider::JANE,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account");
    let hints = setup.provider.login_hints();
    assert!(
        hints.contains(&"jane@example.com".to_owned()),
        "hints received: {hints:?}"
    );
}

#[tokio::test]
async fn oidc_session_shows_user() {
    let Some(setup) = setup() else { return };
    let client = Client::new();
    let done = sign_in(&client, &setup, "jane@example.com", &oidc_provider::JANE).await;
    assert_eq!(done.location, "/account", "{}", done.body);
    let account = client.get(&setup.broker.url("/account")).await;
    assert!(account.body.contains(">oidc<"), "{}", account.body);
    assert!(
        account
            .body
            .contains("<dd id=\"login-id\">jane@example.com</dd>"),
        "{}",
        account.body
    );
}

#[tokio::test]
async fn idp_errors_end_on_clear_page() {
    let Some(setup) = setup() else { return };
    for (mode, expected) in [
        (Mode::AccessDenied, "access denied"),
        (Mode::LoginRequired, "needs you to sign in again"),
    ] {
        setup.provider.set_mode(mode).await;
        let client = Client::new();
        let redirect = client.identify(&setup.broker, "jane@example.com").await;
        let answer = client.get(&redirect.location).await;
        let callback = follow_to_broker(
            &client,
            &setup.broker,
            Url::parse(&redirect.location).unwrap(),
            answer,
        )
        .await;
        let page = client.get(callback.as_str()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
        let account = client.get(&setup.broker.url("/account")).await;
        assert_eq!(
            account.status,
            StatusCode::SEE_OTHER,
            "no session after an IdP error"
        );
    }
}

/// Signs in once with the provider in `mode` and returns the broker's page.
async fn sign_in_with_mode(setup: &OidcSetup, mode: Mode) -> (Client, Page) {
    setup.provider.set_mode(mode).await;
    let client = Client::new();
    let page = sign_in(&client, setup, "jane@example.com", &oidc_provider::JANE).await;
    (client, page)
}

#[tokio::test]
async fn bad_id_tokens_are_rejected() {
    let Some(setup) = setup() else { return };
    // A first sign-in gives the replayed-nonce mode an earlier nonce to reuse.
    let (_, first) = sign_in_with_mode(&setup, Mode::Normal).await;
    assert_eq!(first.location, "/account", "{}", first.body);

    for (mode, reason) in [
        (Mode::ReplayedNonce, "nonce"),
        (Mode::WrongAudience, "audience"),
        (Mode::Expired, "expired"),
        (Mode::WrongIssuer, "issuer"),
        (Mode::BadSignature, "signature"),
    ] {
        let (client, page) = sign_in_with_mode(&setup, mode).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{reason}: {}",
            page.body
        );
        assert!(
            page.body.to_lowercase().contains(reason),
            "{reason}: {}",
            page.body
        );
        let account = client.get(&setup.broker.url("/account")).await;
        assert_eq!(
            account.status,
            StatusCode::SEE_OTHER,
            "{reason}: no session"
        );
    }
}

#[tokio::test]
async fn rotated_signing_key_is_fetched() {
    let Some(setup) = setup() else { return };
    let (_, first) = sign_in_with_mode(&setup, Mode::Normal).await;
    assert_eq!(first.location, "/account", "{}", first.body);
    setup.provider.rotate_keys().await;
    let (_, second) = sign_in_with_mode(&setup, Mode::Normal).await;
    assert_eq!(
        second.location, "/account",
        "after key rotation: {}",
        second.body
    );
}

#[tokio::test]
async fn forged_state_is_rejected() {
    let Some(setup) = setup() else { return };
    let client = Client::new();
    client.identify(&setup.broker, "jane@example.com").await;
    let page = client
        .get(&setup.broker.url("/oidc/callback?code=stolen&state=forged"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("does not belong to this browser"),
        "{}",
        page.body
    );
    let account = client.get(&setup.broker.url("/account")).await;
    assert_eq!(account.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn unreachable_idp_raises_alarm() {
    let mut broker = Broker::prepare(Options::default());
    // A loopback port with nothing listening stands for an IdP that is down.
    let closed = crate::harness::free_port();
    let secret_path = broker.data_dir().join("oidc-secret");
    std::fs::write(&secret_path, "secret\n").unwrap();
    broker.append_config(&oidc_table(
        &format!("http://127.0.0.1:{closed}"),
        "client",
        &secret_path,
    ));
    broker.add_user("jane", "jane@example.com");
    assert!(
        broker
            .cli(&["cl-auth", "enable", "jane"], "")
            .status
            .success()
    );
    broker.serve();

    let client = Client::new();
    let page = client.identify(&broker, "jane@example.com").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
    let log = broker.log();
    assert!(log.contains("CL_CONNECT_FAILURE"), "{log}");
    assert_eq!(log.matches("alarm raised").count(), 1, "raised once: {log}");
    client.identify(&broker, "jane@example.com").await;
    assert_eq!(
        broker.log().matches("alarm raised").count(),
        1,
        "not again while it lasts"
    );
}

#[tokio::test]
async fn oidc_show_prints_redirect_uri() {
    let broker = Broker::prepare(Options::default());
    let secret_path = broker.data_dir().join("oidc-secret");
    std::fs::write(&secret_path, "very-secret-value\n").unwrap();
    broker.append_config(&oidc_table("http://127.0.0.1:9", "client-7", &secret_path));
    let output = broker.cli(&["oidc", "show"], "");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains(&broker.url("/oidc/callback")), "{text}");
    assert!(text.contains("client-7"), "{text}");
    assert!(
        !text.contains("very-secret-value"),
        "the secret must not be printed: {text}"
    );

    std::fs::remove_file(&secret_path).unwrap();
    let missing = broker.cli(&["oidc", "show"], "");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read the OIDC client secret file")
    );
}

#[tokio::test]
async fn failed_callback_leaves_no_password_step() {
    let Some(setup) = setup() else { return };
    setup.provider.set_mode(Mode::AccessDenied).await;
    let client = Client::new();
    let redirect = client.identify(&setup.broker, "jane@example.com").await;
    let answer = client.get(&redirect.location).await;
    let callback = follow_to_broker(
        &client,
        &setup.broker,
        Url::parse(&redirect.location).unwrap(),
        answer,
    )
    .await;
    let denied = client.get(callback.as_str()).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST, "{}", denied.body);

    // The broker's own password must not become a way around the IdP's refusal.
    let password_step = client.get(&setup.broker.url("/login/password")).await;
    assert_eq!(
        password_step.status,
        StatusCode::SEE_OTHER,
        "{}",
        password_step.body
    );
    assert_eq!(password_step.location, "/login");
    let replay = client.get(callback.as_str()).await;
    assert_eq!(
        replay.status,
        StatusCode::BAD_REQUEST,
        "a callback works once: {}",
        replay.body
    );
    assert_eq!(
        client.get(&setup.broker.url("/account")).await.status,
        StatusCode::SEE_OTHER
    );
}
