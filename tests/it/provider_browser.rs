//! The broker's OAuth 2.0 / OpenID Connect provider, driven end to end in
//! headless Chromium by a relying party that this project did not write: the
//! npm package openid-client (OpenID Certified), served by
//! `tests/peers/openid-client/rp.mjs`.
//!
//! Three clients are registered: `uc-web` (confidential,
//! `client_secret_basic`), `uc-native` (public, PKCE, loopback redirect URI
//! without a port) and `uc-meetings` (confidential, `client_secret_post`).
//! The tests sign in a local-password user and a CL Auth user, whose upstream
//! identity provider is the npm `oidc-provider` peer. They check discovery,
//! the code flow with PKCE, token refresh, cross-launch single sign-on,
//! `prompt=none` and `prompt=login`. They also check that logout revokes every token of the
//! broker session.
//!
//! Each test starts its own broker, peers, chromedriver and browser profile.
//! When Chromium, Node.js or a peer package is missing, a test prints a line
//! to stderr and passes, except under CI, where it fails.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use data_encoding::BASE64URL_NOPAD;
use fantoccini::Locator;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use rand::Rng;
use rand::distributions::Alphanumeric;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chromium::{Browser, JavaScript, POLL_INTERVAL, TIMEOUT};
use crate::harness::{Broker, Options, PASSWORD};
use crate::peers::oidc_provider::{EMAIL_FIELD, JANE, OidcProvider, PASSWORD_FIELD};
use crate::peers::openid_client::{ClientAuth, OpenidClientRp, RpClient};

pub(crate) const SCOPE: &str = "openid profile email offline_access";

const WEB: RpClient = RpClient {
    name: "web",
    client_id: "uc-web",
    client_secret: Some("web-client-secret-5f0c9a7e2b81d463"),
    auth: ClientAuth::SecretBasic,
    scope: SCOPE,
};

pub(crate) const NATIVE: RpClient = RpClient {
    name: "native",
    client_id: "uc-native",
    client_secret: None,
    auth: ClientAuth::None,
    scope: SCOPE,
};

const MEETINGS: RpClient = RpClient {
    name: "meetings",
    client_id: "uc-meetings",
    client_secret: Some("meetings-client-secret-3d7a61c0e94b28f5"),
    auth: ClientAuth::SecretPost,
    scope: SCOPE,
};

/// The path of the native client's redirect URI. It is registered as
/// `http://127.0.0.1/native/callback`, without a port, so that any loopback
/// port matches it (RFC 8252, section 7.3).
pub(crate) const NATIVE_CALLBACK_PATH: &str = "/native/callback";
/// A private-use URI scheme redirect URI of the native client, registered
/// alongside the loopback one.
const NATIVE_CUSTOM_SCHEME_URI: &str = "com.example.uc:/oauth/callback";

/// `access_token_minutes` in the broker's `[oauth2]` table.
const ACCESS_TOKEN_MINUTES: u64 = 10;

/// The local-password user.
const LOCAL_LOGIN_ID: &str = "jdoe";
const LOCAL_EMAIL: &str = "jane.doe@example.com";
/// The login ID of the CL Auth user, whose email is `JANE.email`.
const CL_AUTH_LOGIN_ID: &str = "jane";
/// The name `Broker::add_user` gives every user.
const DISPLAY_NAME: &str = "Test User";

/// A broker with the three clients, the openid-client RP that serves them,
/// and for CL Auth the upstream OpenID provider.
struct Setup {
    broker: Broker,
    rp: OpenidClientRp,
    /// The upstream identity provider of a CL Auth user; `None` for a
    /// local-password user.
    upstream: Option<OidcProvider>,
    /// The email address of the one user, which the tests pass as
    /// `login_hint`.
    email: &'static str,
}

/// Starts a broker with the local-password user `LOCAL_EMAIL` and an RP for
/// all three clients.
fn local_setup() -> Option<Setup> {
    let mut broker = Broker::prepare(Options::default());
    let rp = OpenidClientRp::start(&broker.base_url, &[WEB, NATIVE, MEETINGS])?;
    broker.append_config(&oauth2_config(&rp));
    broker.add_user(LOCAL_LOGIN_ID, LOCAL_EMAIL);
    broker.serve();
    Some(Setup {
        broker,
        rp,
        upstream: None,
        email: LOCAL_EMAIL,
    })
}

/// Starts a broker whose user `JANE.email` signs in with CL Auth at the
/// oidc-provider peer, and an RP for all three clients.
fn cl_auth_setup() -> Option<Setup> {
    let mut broker = Broker::prepare(Options::default());
    let upstream = OidcProvider::start(&broker.url("/oidc/callback"))?;
    let rp = OpenidClientRp::start(&broker.base_url, &[WEB, NATIVE, MEETINGS])?;

    let secret_path = broker.data_dir().join("oidc-secret");
    std::fs::write(&secret_path, format!("{}\n", upstream.client_secret))
        .expect("write the upstream client secret");
    broker.append_config(&format!(
        "[oidc]\nname = \"Contoso\"\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n",
        upstream.issuer,
        upstream.client_id,
        secret_path.display()
    ));
    broker.append_config(&oauth2_config(&rp));
    broker.add_user(CL_AUTH_LOGIN_ID, JANE.email);
    let enabled = broker.cli(&["cl-auth", "enable", CL_AUTH_LOGIN_ID], "");
    assert!(
        enabled.status.success(),
        "cl-auth enable {CL_AUTH_LOGIN_ID}: {}",
        String::from_utf8_lossy(&enabled.stderr)
    );
    broker.serve();
    Some(Setup {
        broker,
        rp,
        upstream: Some(upstream),
        email: JANE.email,
    })
}

/// Returns the broker's `[oauth2]` table with the three clients, whose
/// redirect URIs point at `rp`.
fn oauth2_config(rp: &OpenidClientRp) -> String {
    let scopes = r#"["openid", "profile", "email", "offline_access"]"#;
    format!(
        r#"[oauth2]
access_token_minutes = {ACCESS_TOKEN_MINUTES}
refresh_token_days = 30

[[oauth2.clients]]
id = "{web_id}"
name = "Web client"
kind = "confidential"
secret = "{web_secret}"
redirect_uris = ["{web_redirect}"]
post_logout_redirect_uris = ["{web_signed_out}"]
scopes = {scopes}

[[oauth2.clients]]
id = "{native_id}"
name = "Desktop app"
kind = "public"
redirect_uris = ["http://127.0.0.1{NATIVE_CALLBACK_PATH}", "{NATIVE_CUSTOM_SCHEME_URI}"]
post_logout_redirect_uris = ["{native_signed_out}"]
scopes = {scopes}

[[oauth2.clients]]
id = "{meetings_id}"
name = "Meetings"
kind = "confidential"
secret = "{meetings_secret}"
redirect_uris = ["{meetings_redirect}"]
post_logout_redirect_uris = ["{meetings_signed_out}"]
scopes = {scopes}
"#,
        web_id = WEB.client_id,
        web_secret = WEB.client_secret.expect("web client secret"),
        web_redirect = rp.redirect_uri(WEB.name),
        web_signed_out = rp.post_logout_redirect_uri(WEB.name),
        native_id = NATIVE.client_id,
        native_signed_out = rp.post_logout_redirect_uri(NATIVE.name),
        meetings_id = MEETINGS.client_id,
        meetings_secret = MEETINGS.client_secret.expect("meetings client secret"),
        meetings_redirect = rp.redirect_uri(MEETINGS.name),
        meetings_signed_out = rp.post_logout_redirect_uri(MEETINGS.name),
    )
}

// ---------------------------------------------------------------------------
// Browser steps

/// Signs in at the broker's sign-in page, where the provider sent the
/// browser, and waits until the browser has left the broker's sign-in
/// pages. A CL Auth user signs in at the upstream provider, whose form
/// appears only while the upstream provider has no session of its own.
async fn sign_in_at_broker(browser: &Browser, setup: &Setup) {
    browser.wait_for_page(&setup.broker.url("/login")).await;
    assert_eq!(
        browser.value("#identifier").await,
        setup.email,
        "the login_hint prefills the identifier on the broker's sign-in page"
    );
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;

    match &setup.upstream {
        None => {
            assert_eq!(
                browser.path().await,
                "/login/password",
                "the identifier step leads to the password step: {}",
                browser.describe().await
            );
            browser.type_into("#password", PASSWORD).await;
            browser
                .click_and_wait(Locator::Css("form button[type=submit]"))
                .await;
        }
        Some(upstream) => {
            let url = browser.current_url().await;
            if url.origin().ascii_serialization() == upstream.issuer {
                assert_eq!(
                    browser.value(&format!("#{EMAIL_FIELD}")).await,
                    JANE.email,
                    "the upstream provider's form shows the email as its login_hint"
                );
                browser
                    .type_into(&format!("#{PASSWORD_FIELD}"), JANE.password)
                    .await;
                browser.click_and_wait(Locator::Id("sign-in")).await;
            }
        }
    }
}

/// Waits until the browser shows `expected` (compared without its query) and
/// fails as soon as it shows one of the broker's sign-in pages instead.
async fn wait_for_page_without_sign_in(browser: &Browser, broker: &Broker, expected: &str) {
    let expected = url::Url::parse(expected).expect("expected URL");
    let broker_origin = url::Url::parse(&broker.base_url)
        .expect("broker URL")
        .origin();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut current = browser.current_url().await;
        assert!(
            !(current.origin() == broker_origin && current.path().starts_with("/login")),
            "the browser shows the broker's sign-in page {current} although a session exists"
        );
        current.set_query(None);
        if current == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the browser did not reach {expected} within {TIMEOUT:?}; it shows {}",
            browser.describe().await
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Returns the number of entries in the tab's session history. Redirects
/// add none, so a navigation through redirects alone adds exactly one.
async fn history_length(browser: &Browser) -> u64 {
    browser
        .client
        .execute("return window.history.length;", Vec::new())
        .await
        .expect("read history.length")
        .as_u64()
        .expect("history.length is a number")
}

/// Reads the JSON outcome that the RP shows in `<pre id="result">`.
async fn rp_result(browser: &Browser) -> Value {
    let text = browser.text("#result").await;
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("RP result is not JSON ({error}): {text}"))
}

/// Opens `/NAME/start` at the RP, signs in at the broker, and returns the
/// RP's result once the browser is back at the client's callback.
async fn sign_in_through_rp(browser: &Browser, setup: &Setup, client: &RpClient) -> Value {
    browser
        .open(
            &setup
                .rp
                .start_url(client.name, &[("login_hint", setup.email)]),
        )
        .await;
    sign_in_at_broker(browser, setup).await;
    browser
        .wait_for_page(&setup.rp.redirect_uri(client.name))
        .await;
    rp_result(browser).await
}

/// Opens `/NAME/start` at the RP with `query` and returns the RP's result.
/// Fails as soon as the browser shows one of the broker's sign-in pages on
/// the way.
async fn launch_without_sign_in(
    browser: &Browser,
    setup: &Setup,
    client: &RpClient,
    query: &[(&str, &str)],
) -> Value {
    let before = history_length(browser).await;
    browser.open(&setup.rp.start_url(client.name, query)).await;
    wait_for_page_without_sign_in(browser, &setup.broker, &setup.rp.redirect_uri(client.name))
        .await;
    assert_eq!(
        history_length(browser).await,
        before + 1,
        "{}: the launch rendered a page between the RP's start and its callback",
        client.name
    );
    rp_result(browser).await
}

/// Logs out through the RP's `/NAME/logout` and returns the RP's result on
/// its post-logout redirect URI.
async fn log_out_through_rp(browser: &Browser, setup: &Setup, client: &RpClient) -> Value {
    browser.open(&setup.rp.url(client.name, "logout")).await;
    browser
        .wait_for_page(&setup.rp.post_logout_redirect_uri(client.name))
        .await;
    rp_result(browser).await
}

/// Checks that the broker has no session: its account page redirects to the
/// sign-in page.
async fn assert_broker_signed_out(browser: &Browser, broker: &Broker) {
    browser.open(&broker.url("/account")).await;
    assert_eq!(
        browser.path().await,
        "/login",
        "after logout the broker's account page redirects to sign-in: {}",
        browser.describe().await
    );
}

// ---------------------------------------------------------------------------
// Checks of the RP's results

/// The tokens that the RP shows after a sign-in and its refresh.
struct RpTokens {
    access_token: String,
    refresh_token: String,
}

/// Returns whether the `aud` claim, a string or a list, contains
/// `client_id`.
fn audience_contains(claims: &Value, client_id: &str) -> bool {
    match &claims["aud"] {
        Value::String(audience) => audience == client_id,
        Value::Array(audiences) => audiences.iter().any(|audience| audience == client_id),
        _ => false,
    }
}

/// Checks the RP's result of a sign-in of `setup.email` to `client` and
/// returns the tokens it shows. openid-client has already sent the PKCE
/// verifier and checked the state, the `iss` response parameter, the ID
/// token's signature, issuer, audience, nonce and lifetime, and the userinfo
/// `sub`.
fn check_signed_in(result: &Value, setup: &Setup, client: &RpClient) -> RpTokens {
    let name = client.name;
    assert_eq!(
        result["ok"],
        true,
        "{name}: openid-client accepted the sign-in: {result:#}\n{}\nbroker log:\n{}",
        setup.rp.logs(),
        setup.broker.log()
    );
    let claims = &result["claims"];
    assert_eq!(
        claims["iss"],
        setup.broker.base_url.as_str(),
        "{name}: ID token iss"
    );
    assert!(
        audience_contains(claims, client.client_id),
        "{name}: ID token aud contains {}: {claims}",
        client.client_id
    );
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(!sub.is_empty(), "{name}: ID token sub: {claims}");

    let token_response = &result["token_response"];
    assert!(
        token_response["token_type"]
            .as_str()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("bearer")),
        "{name}: token_type is Bearer: {token_response}"
    );
    assert_eq!(
        token_response["has_refresh_token"], true,
        "{name}: offline_access brings a refresh token: {token_response}"
    );

    let userinfo = &result["userinfo"];
    assert_eq!(userinfo["sub"], sub, "{name}: userinfo sub");
    assert_eq!(userinfo["email"], setup.email, "{name}: userinfo email");
    assert_eq!(userinfo["name"], DISPLAY_NAME, "{name}: userinfo name");

    let refresh = &result["refresh"];
    assert_eq!(
        refresh["rotated"], true,
        "{name}: the refresh grant returns a new refresh token: {refresh}"
    );
    assert_eq!(
        refresh["new_access_token"], true,
        "{name}: the refresh grant returns a new access token: {refresh}"
    );
    assert_eq!(
        refresh["userinfo"]["sub"], sub,
        "{name}: userinfo with the refreshed access token"
    );
    if !refresh["claims"].is_null() {
        assert_eq!(
            refresh["claims"]["sub"], sub,
            "{name}: sub of the refreshed ID token"
        );
    }

    let token = |value: &Value, what: &str| {
        value
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the RP shows no {what}: {result:#}"))
            .to_owned()
    };
    RpTokens {
        access_token: token(&result["tokens"]["access_token"], "access token"),
        refresh_token: token(&result["tokens"]["refresh_token"], "refresh token"),
    }
}

/// Checks the RP's result on its post-logout redirect URI.
fn check_logged_out(result: &Value, setup: &Setup, client: &RpClient) {
    assert_eq!(
        result["logout"]["completed"],
        true,
        "{}: the broker redirected to post_logout_redirect_uri with the RP's state: {result:#}\nbroker log:\n{}",
        client.name,
        setup.broker.log()
    );
}

// ---------------------------------------------------------------------------
// Direct HTTP requests to the provider

/// The provider's endpoints from its discovery document.
pub(crate) struct Endpoints {
    pub(crate) authorization: String,
    pub(crate) token: String,
    pub(crate) userinfo: String,
    pub(crate) jwks: String,
}

/// Returns an HTTP client that follows no redirects and ignores proxy
/// settings, because every request goes to loopback.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .build()
        .expect("build an HTTP client")
}

/// Fetches the discovery document and checks the fields that the native
/// client relies on.
async fn discover(http: &reqwest::Client, broker: &Broker) -> Endpoints {
    let url = broker.url("/.well-known/openid-configuration");
    let response = http.get(&url).send().await.expect("GET discovery");
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    let document: Value = response.json().await.expect("discovery is JSON");
    assert_eq!(document["issuer"], broker.base_url.as_str(), "issuer");
    assert!(
        document["code_challenge_methods_supported"]
            .as_array()
            .is_some_and(|methods| methods.iter().any(|method| method == "S256")),
        "discovery lists PKCE S256: {document:#}"
    );
    let endpoint = |field: &str| {
        document[field]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no {field}: {document:#}"))
            .to_owned()
    };
    Endpoints {
        authorization: endpoint("authorization_endpoint"),
        token: endpoint("token_endpoint"),
        userinfo: endpoint("userinfo_endpoint"),
        jwks: endpoint("jwks_uri"),
    }
}

/// Posts `form` to the token endpoint with `client`'s authentication and
/// returns the status, the `Cache-Control` header and the JSON body.
pub(crate) async fn token_request(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client: &RpClient,
    form: &[(&str, &str)],
) -> (StatusCode, String, Value) {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut request = http.post(&endpoints.token);
    match client.auth {
        ClientAuth::SecretBasic => {
            request = request.basic_auth(client.client_id, client.client_secret);
        }
        ClientAuth::SecretPost => {
            form.push(("client_id", client.client_id));
            form.push((
                "client_secret",
                client.client_secret.expect("client secret"),
            ));
        }
        ClientAuth::None => form.push(("client_id", client.client_id)),
    }
    let response = request
        .form(&form)
        .send()
        .await
        .expect("POST token endpoint");
    let status = response.status();
    let cache_control = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("token response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("token response is not JSON ({error}): {status} {text}"));
    (status, cache_control, body)
}

/// Sends `grant_type=refresh_token` and returns the status and JSON body.
pub(crate) async fn refresh(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client: &RpClient,
    refresh_token: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = token_request(
        http,
        endpoints,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    (status, body)
}

/// Sends a userinfo request with `access_token` and returns the status.
pub(crate) async fn userinfo_status(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    access_token: &str,
) -> StatusCode {
    http.get(&endpoints.userinfo)
        .bearer_auth(access_token)
        .send()
        .await
        .expect("GET userinfo")
        .status()
}

/// Checks that the provider rejects both tokens: the refresh token with
/// `invalid_grant` (RFC 6749, section 5.2) and the access token at userinfo
/// with 401 (RFC 6750, section 3.1).
async fn assert_tokens_revoked(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client: &RpClient,
    access_token: &str,
    refresh_token: &str,
    when: &str,
) {
    let (status, body) = refresh(http, endpoints, client, refresh_token).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{} {when}: refresh token grant: {body}",
        client.name
    );
    assert_eq!(
        body["error"], "invalid_grant",
        "{} {when}: refresh token grant error",
        client.name
    );
    assert_eq!(
        userinfo_status(http, endpoints, access_token).await,
        StatusCode::UNAUTHORIZED,
        "{} {when}: userinfo with the access token",
        client.name
    );
}

/// Returns the JSON of part `index` (0 header, 1 payload) of a JWT.
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("JWT without part {index}: {token}"));
    let bytes = BASE64URL_NOPAD
        .decode(part.as_bytes())
        .unwrap_or_else(|error| panic!("JWT part {index} is not base64url: {error}"));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("JWT part {index} is not JSON: {error}"))
}

/// Returns whether `token` carries a valid RS256 signature by the JWKS key
/// that its `kid` names.
fn verifies_with_jwks(token: &str, jwks: &Value) -> bool {
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "RS256", "ID token header {header}");
    let Some(key) = jwks["keys"]
        .as_array()
        .expect("JWKS has keys")
        .iter()
        .find(|key| key["kid"] == header["kid"])
    else {
        return false;
    };
    let component = |name: &str| {
        let bytes = BASE64URL_NOPAD
            .decode(key[name].as_str().expect("RSA key component").as_bytes())
            .expect("RSA key component is base64url");
        BigNum::from_slice(&bytes).expect("RSA key component")
    };
    let public_key = PKey::from_rsa(
        Rsa::from_public_components(component("n"), component("e")).expect("RSA public key"),
    )
    .expect("public key");
    let (signing_input, signature) = token.rsplit_once('.').expect("JWT signature");
    let signature = BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .expect("JWT signature is base64url");
    let mut verifier = Verifier::new(MessageDigest::sha256(), &public_key).expect("verifier");
    verifier
        .update(signing_input.as_bytes())
        .expect("hash the signing input");
    verifier.verify(&signature).unwrap_or(false)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

// ---------------------------------------------------------------------------
// The native client's loopback redirect

/// A loopback HTTP server on a random port that plays the native app's
/// redirect URI: it records the query of each `GET /native/callback` and
/// shows a plain page.
pub(crate) struct LoopbackRedirect {
    pub(crate) redirect_uri: String,
    callbacks: mpsc::UnboundedReceiver<HashMap<String, String>>,
    server: JoinHandle<()>,
}

impl LoopbackRedirect {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the native redirect URI");
        let port = listener.local_addr().expect("local address").port();
        let (sender, callbacks) = mpsc::unbounded_channel();
        let app = Router::new().route(
            NATIVE_CALLBACK_PATH,
            get(move |Query(query): Query<HashMap<String, String>>| {
                let _ = sender.send(query);
                async { Html("<!DOCTYPE html><title>Signed in</title><h1>Signed in</h1>") }
            }),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("loopback redirect server");
        });
        Self {
            redirect_uri: format!("http://127.0.0.1:{port}{NATIVE_CALLBACK_PATH}"),
            callbacks,
            server,
        }
    }

    /// Waits for the next request to the redirect URI and returns its query.
    pub(crate) async fn next_callback(&mut self) -> HashMap<String, String> {
        tokio::time::timeout(TIMEOUT, self.callbacks.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing reached {} within {TIMEOUT:?}", self.redirect_uri))
            .expect("loopback redirect server is running")
    }
}

impl Drop for LoopbackRedirect {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One authorization request of the native client, with PKCE.
pub(crate) struct NativeAuthorization {
    state: String,
    pub(crate) nonce: String,
    pub(crate) code_verifier: String,
    pub(crate) url: String,
}

impl NativeAuthorization {
    pub(crate) fn new(endpoints: &Endpoints, redirect_uri: &str, extra: &[(&str, &str)]) -> Self {
        let state = random_token();
        let nonce = random_token();
        let code_verifier = random_token();
        let challenge = BASE64URL_NOPAD.encode(&Sha256::digest(code_verifier.as_bytes()));
        let mut url = url::Url::parse(&endpoints.authorization).expect("authorization endpoint");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", NATIVE.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", SCOPE)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(extra);
        Self {
            state,
            nonce,
            code_verifier,
            url: url.into(),
        }
    }

    /// Checks the authorization response that reached the redirect URI and
    /// returns its code.
    pub(crate) fn code_from(&self, callback: &HashMap<String, String>, issuer: &str) -> String {
        assert_eq!(
            callback.get("error"),
            None,
            "authorization error: {callback:?}"
        );
        assert_eq!(
            callback.get("state"),
            Some(&self.state),
            "the authorization response returns the state"
        );
        assert_eq!(
            callback.get("iss").map(String::as_str),
            Some(issuer),
            "the authorization response carries iss (RFC 9207)"
        );
        callback
            .get("code")
            .unwrap_or_else(|| panic!("no code in the authorization response {callback:?}"))
            .clone()
    }
}

/// Tokens of the native client from one code exchange.
struct NativeTokens {
    access_token: String,
    refresh_token: String,
    sub: String,
}

/// Exchanges `code` at the token endpoint as the public native client, with
/// the PKCE verifier and no secret, and checks the response and the ID
/// token.
async fn exchange_native_code(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    setup: &Setup,
    authorization: &NativeAuthorization,
    redirect_uri: &str,
    code: &str,
) -> NativeTokens {
    let (status, cache_control, body) = token_request(
        http,
        endpoints,
        &NATIVE,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &authorization.code_verifier),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "code exchange: {body}\nbroker log:\n{}",
        setup.broker.log()
    );
    assert!(
        cache_control.contains("no-store"),
        "the token response has Cache-Control: no-store (RFC 6749, section 5.1), got {cache_control:?}"
    );
    assert!(
        body["token_type"]
            .as_str()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("bearer")),
        "token_type: {body}"
    );
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!(
        (ACCESS_TOKEN_MINUTES * 60 - 30..=ACCESS_TOKEN_MINUTES * 60).contains(&expires_in),
        "expires_in {expires_in} matches access_token_minutes = {ACCESS_TOKEN_MINUTES}"
    );
    let text = |field: &str| {
        body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in the token response {body}"))
            .to_owned()
    };
    let id_token = text("id_token");

    let jwks: Value = http
        .get(&endpoints.jwks)
        .send()
        .await
        .expect("GET JWKS")
        .json()
        .await
        .expect("JWKS is JSON");
    assert!(
        verifies_with_jwks(&id_token, &jwks),
        "the ID token verifies with the JWKS key of its kid"
    );
    let claims = jwt_part(&id_token, 1);
    assert_eq!(
        claims["iss"],
        setup.broker.base_url.as_str(),
        "ID token iss"
    );
    assert!(
        audience_contains(&claims, NATIVE.client_id),
        "ID token aud: {claims}"
    );
    assert_eq!(
        claims["nonce"],
        authorization.nonce.as_str(),
        "ID token nonce"
    );
    let now = unix_now();
    assert!(
        claims["exp"].as_u64().is_some_and(|exp| exp > now),
        "ID token exp is in the future: {claims}"
    );
    assert!(
        claims["iat"].as_u64().is_some_and(|iat| iat <= now + 60),
        "ID token iat is not in the future: {claims}"
    );
    let sub = claims["sub"].as_str().expect("ID token sub").to_owned();
    NativeTokens {
        access_token: text("access_token"),
        refresh_token: text("refresh_token"),
        sub,
    }
}

/// Runs a native authorization in a browser that has a broker session, which
/// must reach the loopback redirect URI without a sign-in page, and exchanges
/// the code. Returns the request, the code and the tokens.
async fn silent_native_grant(
    browser: &Browser,
    setup: &Setup,
    http: &reqwest::Client,
    endpoints: &Endpoints,
    loopback: &mut LoopbackRedirect,
) -> (NativeAuthorization, String, NativeTokens) {
    let request = NativeAuthorization::new(endpoints, &loopback.redirect_uri, &[]);
    let before = history_length(browser).await;
    browser.open(&request.url).await;
    wait_for_page_without_sign_in(browser, &setup.broker, &loopback.redirect_uri).await;
    assert_eq!(
        history_length(browser).await,
        before + 1,
        "the silent native authorization rendered no page before the redirect URI"
    );
    let code = request.code_from(&loopback.next_callback().await, &setup.broker.base_url);
    let tokens = exchange_native_code(
        http,
        endpoints,
        setup,
        &request,
        &loopback.redirect_uri,
        &code,
    )
    .await;
    (request, code, tokens)
}

// ---------------------------------------------------------------------------
// Tests

/// Signs the user of `setup` in to each client in turn and logs out again,
/// with a silent cross-launch into the meetings client in between.
async fn sign_in_to_each_client(browser: &Browser, setup: &Setup) {
    let http = http_client();
    let endpoints = discover(&http, &setup.broker).await;

    // The web client: the first sign-in of this browser.
    let web_result = sign_in_through_rp(browser, setup, &WEB).await;
    let web_tokens = check_signed_in(&web_result, setup, &WEB);
    let wrong_secret = http
        .post(&endpoints.token)
        .basic_auth(WEB.client_id, Some("wrong-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", web_tokens.refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("POST token endpoint with a wrong secret");
    assert_eq!(
        wrong_secret.status(),
        StatusCode::UNAUTHORIZED,
        "a wrong secret in the Authorization header gets 401 (RFC 6749, section 5.2)"
    );
    assert!(
        wrong_secret
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE),
        "the 401 for a wrong Basic secret has WWW-Authenticate"
    );
    let body: Value = wrong_secret.json().await.expect("error response is JSON");
    assert_eq!(body["error"], "invalid_client", "wrong secret: {body}");

    // The meetings client launched from the web client: the broker session
    // signs it in without a page. openid-client requires auth_time in the
    // ID token because the request has max_age.
    let meetings_result =
        launch_without_sign_in(browser, setup, &MEETINGS, &[("max_age", "600")]).await;
    let meetings_tokens = check_signed_in(&meetings_result, setup, &MEETINGS);
    assert!(
        web_result["claims"]["auth_time"].is_u64(),
        "auth_time in the web client's ID token: {}",
        web_result["claims"]
    );
    assert_eq!(
        meetings_result["claims"]["auth_time"], web_result["claims"]["auth_time"],
        "the cross-launch reuses the web sign-in, so auth_time is the same"
    );

    // Logout from the web client ends the broker session and revokes the
    // tokens of both clients, which work just before it.
    for (client, tokens) in [(&WEB, &web_tokens), (&MEETINGS, &meetings_tokens)] {
        assert_eq!(
            userinfo_status(&http, &endpoints, &tokens.access_token).await,
            StatusCode::OK,
            "{}: userinfo with the RP's access token before logout",
            client.name
        );
    }
    let logout = log_out_through_rp(browser, setup, &WEB).await;
    check_logged_out(&logout, setup, &WEB);
    assert_tokens_revoked(
        &http,
        &endpoints,
        &WEB,
        &web_tokens.access_token,
        &web_tokens.refresh_token,
        "after logout",
    )
    .await;
    assert_tokens_revoked(
        &http,
        &endpoints,
        &MEETINGS,
        &meetings_tokens.access_token,
        &meetings_tokens.refresh_token,
        "after the web client's logout",
    )
    .await;
    assert_broker_signed_out(browser, &setup.broker).await;

    // The native and meetings clients, each with its own sign-in and logout.
    for client in [&NATIVE, &MEETINGS] {
        let result = sign_in_through_rp(browser, setup, client).await;
        let tokens = check_signed_in(&result, setup, client);
        assert_eq!(
            userinfo_status(&http, &endpoints, &tokens.access_token).await,
            StatusCode::OK,
            "{}: userinfo with the RP's access token before logout",
            client.name
        );

        let logout = log_out_through_rp(browser, setup, client).await;
        check_logged_out(&logout, setup, client);
        assert_tokens_revoked(
            &http,
            &endpoints,
            client,
            &tokens.access_token,
            &tokens.refresh_token,
            "after logout",
        )
        .await;
        assert_broker_signed_out(browser, &setup.broker).await;
    }
}

#[tokio::test]
async fn local_user_signs_in_to_each_client() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(setup) = local_setup() else {
        return;
    };
    sign_in_to_each_client(&browser, &setup).await;
    browser.close().await;
}

#[tokio::test]
async fn cl_auth_user_signs_in_to_each_client() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(setup) = cl_auth_setup() else {
        return;
    };
    sign_in_to_each_client(&browser, &setup).await;
    let upstream = setup.upstream.as_ref().expect("upstream provider");
    assert_eq!(
        upstream.login_hints().first().map(String::as_str),
        Some(JANE.email),
        "the broker passed the email on to the upstream provider as login_hint"
    );
    browser.close().await;
}

#[tokio::test]
async fn prompt_controls_sign_in_page() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(setup) = local_setup() else {
        return;
    };

    let result = launch_without_sign_in(&browser, &setup, &WEB, &[("prompt", "none")]).await;

    assert_eq!(
        result["ok"], false,
        "prompt=none without a session: {result:#}"
    );
    let error = &result["error"];
    assert_eq!(
        error["kind"], "authorization_response",
        "openid-client accepted the error response's state and iss: {error}"
    );
    assert_eq!(error["error"], "login_required", "OAuth 2.0 error: {error}");

    // With a session, prompt=none gets a code without a page.
    let signed_in = sign_in_through_rp(&browser, &setup, &WEB).await;
    check_signed_in(&signed_in, &setup, &WEB);
    let silent = launch_without_sign_in(&browser, &setup, &WEB, &[("prompt", "none")]).await;
    check_signed_in(&silent, &setup, &WEB);

    // prompt=login shows the sign-in page although a session exists.
    let first_auth_time = signed_in["claims"]["auth_time"]
        .as_u64()
        .expect("auth_time in the ID token");
    browser
        .open(&setup.rp.start_url(
            WEB.name,
            &[("prompt", "login"), ("login_hint", setup.email)],
        ))
        .await;
    sign_in_at_broker(&browser, &setup).await;
    browser
        .wait_for_page(&setup.rp.redirect_uri(WEB.name))
        .await;
    let again = rp_result(&browser).await;
    check_signed_in(&again, &setup, &WEB);
    let second_auth_time = again["claims"]["auth_time"]
        .as_u64()
        .expect("auth_time in the ID token");
    // A sign-in within the same second as the first one has the same auth_time.
    assert!(
        second_auth_time >= first_auth_time,
        "auth_time {second_auth_time} after prompt=login is not older than the first sign-in's {first_auth_time}"
    );
    browser.close().await;
}

#[tokio::test]
async fn native_loopback_then_silent_meetings() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(setup) = local_setup() else {
        return;
    };
    let http = http_client();
    let endpoints = discover(&http, &setup.broker).await;
    let mut loopback = LoopbackRedirect::start().await;
    let issuer = setup.broker.base_url.as_str();

    // Requests that the provider must reject before any sign-in.
    let unregistered = loopback
        .redirect_uri
        .replace(NATIVE_CALLBACK_PATH, "/other/callback");
    let response = http
        .get(&NativeAuthorization::new(&endpoints, &unregistered, &[]).url)
        .send()
        .await
        .expect("GET authorize with an unregistered redirect URI");
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        response.status().is_client_error() && !location.starts_with(&unregistered),
        "an unregistered redirect URI gets an error page, not a redirect (RFC 6749, section 4.1.2.1): {} to {location:?}",
        response.status()
    );
    let mut without_pkce =
        url::Url::parse(&NativeAuthorization::new(&endpoints, &loopback.redirect_uri, &[]).url)
            .expect("authorization URL");
    let query_without_pkce: Vec<(String, String)> = without_pkce
        .query_pairs()
        .filter(|(name, _)| !name.starts_with("code_challenge"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    without_pkce
        .query_pairs_mut()
        .clear()
        .extend_pairs(query_without_pkce);
    let response = http
        .get(without_pkce.as_str())
        .send()
        .await
        .expect("GET authorize without PKCE");
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&loopback.redirect_uri) && location.contains("error=invalid_request"),
        "a public client without PKCE gets error=invalid_request at its redirect URI: {} to {location:?}",
        response.status()
    );

    // Sign-in in the browser; the test's own listener receives the code.
    let first = NativeAuthorization::new(
        &endpoints,
        &loopback.redirect_uri,
        &[("login_hint", setup.email)],
    );
    browser.open(&first.url).await;
    sign_in_at_broker(&browser, &setup).await;
    browser.wait_for_page(&loopback.redirect_uri).await;
    let code = first.code_from(&loopback.next_callback().await, issuer);
    let tokens = exchange_native_code(
        &http,
        &endpoints,
        &setup,
        &first,
        &loopback.redirect_uri,
        &code,
    )
    .await;
    assert_eq!(
        userinfo_status(&http, &endpoints, &tokens.access_token).await,
        StatusCode::OK,
        "userinfo with the native access token"
    );
    let (status, refreshed) = refresh(&http, &endpoints, &NATIVE, &tokens.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "native refresh: {refreshed}");
    let access_token = refreshed["access_token"]
        .as_str()
        .expect("refreshed access token")
        .to_owned();
    let refresh_token = refreshed["refresh_token"]
        .as_str()
        .expect("the refresh grant rotates the refresh token")
        .to_owned();
    assert_ne!(refresh_token, tokens.refresh_token, "rotated refresh token");

    // The meetings client launched from the native app: no sign-in page.
    let meetings_result = launch_without_sign_in(&browser, &setup, &MEETINGS, &[]).await;
    let meetings_tokens = check_signed_in(&meetings_result, &setup, &MEETINGS);

    // Two more native authorizations, silent as well, each for a check that
    // may revoke its whole grant and so must not touch the first one.
    //
    // A refresh token that the rotation replaced is rejected. A provider may
    // also revoke the grant then (RFC 9700, section 4.14.2).
    let (_, _, second) =
        silent_native_grant(&browser, &setup, &http, &endpoints, &mut loopback).await;
    assert_eq!(second.sub, tokens.sub, "the same user on every grant");
    let (status, body) = refresh(&http, &endpoints, &NATIVE, &second.refresh_token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refresh of the second grant: {body}"
    );
    let (status, body) = refresh(&http, &endpoints, &NATIVE, &second.refresh_token).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &Value::from("invalid_grant")),
        "a refresh token that the rotation replaced is rejected: {body}"
    );

    // A used code is rejected, and the tokens issued for it are revoked
    // (RFC 6749, section 4.1.2).
    let (third_request, code, third) =
        silent_native_grant(&browser, &setup, &http, &endpoints, &mut loopback).await;
    let (status, _, body) = token_request(
        &http,
        &endpoints,
        &NATIVE,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &loopback.redirect_uri),
            ("code_verifier", &third_request.code_verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &Value::from("invalid_grant")),
        "a used code is rejected: {body}"
    );
    assert_tokens_revoked(
        &http,
        &endpoints,
        &NATIVE,
        &third.access_token,
        &third.refresh_token,
        "after its code came back",
    )
    .await;

    // Logout from the meetings client revokes the native tokens of the same
    // broker session, which still work just before it.
    assert_eq!(
        userinfo_status(&http, &endpoints, &access_token).await,
        StatusCode::OK,
        "userinfo with the refreshed native access token before logout"
    );
    let logout = log_out_through_rp(&browser, &setup, &MEETINGS).await;
    check_logged_out(&logout, &setup, &MEETINGS);
    assert_tokens_revoked(
        &http,
        &endpoints,
        &NATIVE,
        &access_token,
        &refresh_token,
        "after the meetings client's logout",
    )
    .await;
    assert_tokens_revoked(
        &http,
        &endpoints,
        &MEETINGS,
        &meetings_tokens.access_token,
        &meetings_tokens.refresh_token,
        "after logout",
    )
    .await;
    assert_broker_signed_out(&browser, &setup.broker).await;
    browser.close().await;
}
