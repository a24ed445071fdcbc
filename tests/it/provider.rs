//! The OAuth 2.0 / OpenID Connect provider over plain HTTP: authorization,
//! code exchange with PKCE, refresh rotation, userinfo, revocation and
//! sign-out, against the running binary.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{Broker, Options, PASSWORD, csrf_token};
use crate::http_login::{Page, WebClient};

const WEB_SECRET: &str = "web-client-secret-0123456789-abcdefghij";
const MEETINGS_SECRET: &str = "meetings-secret-0123456789-abcdefghijkl";
const NATIVE_REDIRECT: &str = "http://127.0.0.1:51234/native/callback";
const WEB_REDIRECT: &str = "http://127.0.0.1:9/web/callback";
const MEETINGS_REDIRECT: &str = "http://127.0.0.1:9/meetings/callback";
const WEB_SIGNED_OUT: &str = "http://127.0.0.1:9/web/signed-out";
/// A PKCE verifier and its S256 challenge (RFC 7636, appendix B).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn clients_config() -> String {
    format!(
        r#"
[[oauth2.clients]]
id = "uc-web"
name = "Web client"
kind = "confidential"
secret = "{WEB_SECRET}"
redirect_uris = ["{WEB_REDIRECT}"]
post_logout_redirect_uris = ["{WEB_SIGNED_OUT}"]

[[oauth2.clients]]
id = "uc-native"
name = "Desktop client"
kind = "public"
redirect_uris = ["http://127.0.0.1/native/callback", "com.example.uc:/oauth/callback"]

[[oauth2.clients]]
id = "uc-meetings"
name = "Meetings"
kind = "confidential"
secret = "{MEETINGS_SECRET}"
redirect_uris = ["{MEETINGS_REDIRECT}"]
scopes = ["openid", "email", "profile"]
"#
    )
}

fn start_provider() -> Broker {
    let mut broker = Broker::prepare(Options::default());
    broker.append_config(&clients_config());
    broker.serve();
    broker.add_user("jdoe", "jdoe@example.com");
    broker
}

fn back_channel() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let url = url::Url::parse(location).unwrap_or_else(|error| panic!("{location}: {error}"));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(location: &str, name: &str) -> Option<String> {
    query_of(location)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn authorize_path(client_id: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("client_id", client_id);
    query.append_pair("redirect_uri", redirect_uri);
    query.append_pair("response_type", "code");
    query.append_pair("scope", "openid email profile offline_access");
    query.append_pair("state", "state-123");
    query.append_pair("nonce", "nonce-456");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    format!("/oauth2/authorize?{}", query.finish())
}

fn native_authorize(extra: &[(&str, &str)]) -> String {
    let mut all = vec![
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    all.extend_from_slice(extra);
    authorize_path("uc-native", NATIVE_REDIRECT, &all)
}

/// Signs in through the login pages that an authorization request led to
/// and follows the browser back to the authorization endpoint.
async fn sign_in_from(browser: &WebClient, login_redirect: &Page) -> Page {
    let location = login_redirect.location().to_owned();
    assert!(
        location.starts_with("/login?"),
        "expected the login page, got {location}"
    );
    let login_page = browser.get(&location).await;
    assert_eq!(login_page.status, StatusCode::OK);
    let return_to = hidden_field(&login_page.body, "return_to");
    let identified = browser
        .post(
            "/login",
            &[
                ("csrf_token", &csrf_token(&login_page.body)),
                ("return_to", &return_to),
                ("identifier", "jdoe@example.com"),
            ],
        )
        .await;
    assert_eq!(identified.location(), "/login/password");
    let done = browser.password(PASSWORD).await;
    let resume = done.location().to_owned();
    assert!(
        resume.starts_with("/oauth2/authorize/continue?request="),
        "{resume}"
    );
    browser.get(&resume).await
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
}

async fn token_request(
    broker: &Broker,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, Value) {
    let mut request = back_channel().post(broker.url("/oauth2/token")).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("token request");
    let status = response.status();
    assert_eq!(response.headers()["cache-control"], "no-store");
    (status, response.json().await.expect("JSON body"))
}

async fn exchange_native(broker: &Broker, code: &str) -> (StatusCode, Value) {
    token_request(
        broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", NATIVE_REDIRECT),
            ("client_id", "uc-native"),
            ("code_verifier", VERIFIER),
        ],
        None,
    )
    .await
}

async fn exchange_web(broker: &Broker, code: &str) -> (StatusCode, Value) {
    token_request(
        broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", WEB_REDIRECT),
        ],
        Some(("uc-web", WEB_SECRET)),
    )
    .await
}

async fn userinfo(broker: &Broker, access_token: &str) -> reqwest::Response {
    back_channel()
        .get(broker.url("/oauth2/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("userinfo request")
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).expect("base64url"))
        .expect("JSON")
}

/// Verifies an ID token's signature against the JWKS the broker publishes.
async fn verified_claims(broker: &Broker, token: &str) -> Value {
    let jwks: Value = back_channel()
        .get(broker.url("/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwt_part(token, 0)["kid"].as_str().expect("kid").to_owned();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS {jwks}"));
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[&broker.base_url]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .expect("ID token verifies with the JWKS")
        .claims
}

#[tokio::test]
async fn discovery_lists_endpoints_and_keys() {
    let broker = start_provider();
    let http = back_channel();
    let response = http
        .get(broker.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["issuer"], broker.base_url.as_str());
    for (field, path) in [
        ("authorization_endpoint", "/oauth2/authorize"),
        ("token_endpoint", "/oauth2/token"),
        ("userinfo_endpoint", "/oauth2/userinfo"),
        ("jwks_uri", "/oauth2/jwks"),
        ("revocation_endpoint", "/oauth2/revoke"),
        ("end_session_endpoint", "/oauth2/logout"),
    ] {
        assert_eq!(document[field], broker.url(path).as_str(), "{field}");
    }
    assert_eq!(
        document["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        document["response_types_supported"],
        serde_json::json!(["code"])
    );

    let jwks: Value = http
        .get(broker.url("/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert!(
        keys[0].get("d").is_none(),
        "private key material in the JWKS: {jwks}"
    );
}

#[tokio::test]
async fn untrusted_client_or_redirect_is_never_redirected_to() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let cases = [
        ("unknown client", authorize_path("nobody", NATIVE_REDIRECT, &[])),
        ("unregistered host", authorize_path("uc-web", "http://127.0.0.2:9/web/callback", &[])),
        ("other path", authorize_path("uc-web", "http://127.0.0.1:9/web/callback/../evil", &[])),
        ("added query", authorize_path("uc-web", "http://127.0.0.1:9/web/callback?x=1", &[])),
        ("another client's uri", authorize_path("uc-web", MEETINGS_REDIRECT, &[])),
        ("missing client_id", "/oauth2/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fweb%2Fcallback&response_type=code".to_owned()),
        ("missing redirect_uri", "/oauth2/authorize?client_id=uc-web&response_type=code&scope=openid".to_owned()),
        ("repeated parameter", format!("{}&client_id=uc-web", authorize_path("uc-web", WEB_REDIRECT, &[]))),
    ];
    for (case, path) in cases {
        let page = browser.get(&path).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{case}: {}",
            page.body
        );
        assert!(
            page.headers.get("location").is_none(),
            "{case} redirected to {}",
            page.location()
        );
        assert!(
            page.body.contains("<h1>"),
            "{case}: an HTML page explains the error"
        );
    }
}

#[tokio::test]
async fn authorization_errors_return_to_client() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let cases = [
        (
            "no PKCE for a public client",
            authorize_path("uc-native", NATIVE_REDIRECT, &[]),
            "invalid_request",
        ),
        (
            "plain PKCE",
            authorize_path(
                "uc-native",
                NATIVE_REDIRECT,
                &[
                    ("code_challenge", CHALLENGE),
                    ("code_challenge_method", "plain"),
                ],
            ),
            "invalid_request",
        ),
        (
            "implicit flow",
            native_authorize(&[("response_type", "token")]).replace("response_type=code&", ""),
            "unsupported_response_type",
        ),
        (
            "unknown scope",
            native_authorize(&[]).replace("scope=openid", "scope=openid+admin"),
            "invalid_scope",
        ),
        (
            "scope not allowed for client",
            authorize_path("uc-meetings", MEETINGS_REDIRECT, &[]),
            "invalid_scope",
        ),
        (
            "prompt none without session",
            native_authorize(&[("prompt", "none")]),
            "login_required",
        ),
        (
            "bad max_age",
            native_authorize(&[("max_age", "-1")]),
            "invalid_request",
        ),
    ];
    for (case, path, expected) in cases {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{case}: {}", page.body);
        let location = page.location();
        assert!(
            location.starts_with(NATIVE_REDIRECT) || location.starts_with(MEETINGS_REDIRECT),
            "{case}: {location}"
        );
        assert_eq!(
            param(location, "error").as_deref(),
            Some(expected),
            "{case}: {location}"
        );
        assert!(param(location, "error_description").is_some(), "{case}");
        assert_eq!(
            param(location, "state").as_deref(),
            Some("state-123"),
            "{case}"
        );
        assert_eq!(
            param(location, "iss").as_deref(),
            Some(broker.base_url.as_str()),
            "{case}"
        );
        assert!(param(location, "code").is_none(), "{case}");
    }
}

#[tokio::test]
async fn native_code_flow_with_pkce_and_refresh_rotation() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);

    let started = browser
        .get(&native_authorize(&[("login_hint", "jdoe@example.com")]))
        .await;
    assert!(
        started.location().contains("login_hint=jdoe%40example.com"),
        "{}",
        started.location()
    );
    // The parked request lives in a session with the sign-in time limit.
    let cookie = started
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("unified_login_session="))
        .expect("session cookie for the parked request");
    assert!(cookie.contains("Max-Age=900"), "{cookie}");
    let answered = sign_in_from(&browser, &started).await;
    let location = answered.location().to_owned();
    assert!(location.starts_with(NATIVE_REDIRECT), "{location}");
    assert_eq!(param(&location, "state").as_deref(), Some("state-123"));
    assert_eq!(
        param(&location, "iss").as_deref(),
        Some(broker.base_url.as_str())
    );
    let code = param(&location, "code").expect("code");

    // The redirect URI may use any loopback port, but the exchange must repeat it exactly.
    let (status, body) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:51235/native/callback"),
            ("client_id", "uc-native"),
            ("code_verifier", VERIFIER),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // That attempt spent the code, so a fresh one is needed.
    let again = browser.get(&native_authorize(&[])).await;
    let code = param(again.location(), "code").expect("a signed-in browser gets a code at once");
    let (status, tokens) = exchange_native(&broker, &code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid email profile offline_access");
    let access_token = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    let claims = verified_claims(&broker, id_token).await;
    assert_eq!(claims["aud"], "uc-native");
    assert_eq!(claims["nonce"], "nonce-456");
    assert_eq!(claims["email"], "jdoe@example.com");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    let digest = Sha256::digest(access_token.as_bytes());
    assert_eq!(
        claims["at_hash"],
        BASE64URL_NOPAD.encode(&digest[..16]).as_str()
    );
    assert!(claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()));
    assert_eq!(jwt_part(access_token, 0)["typ"], "at+jwt");

    let info = userinfo(&broker, access_token).await;
    assert_eq!(info.status(), StatusCode::OK);
    let info: Value = info.json().await.unwrap();
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email"], "jdoe@example.com");
    assert_eq!(info["preferred_username"], "jdoe");

    // An ID token is not an access token.
    assert_eq!(
        userinfo(&broker, id_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let refresh = |token: String| {
        let broker = &broker;
        async move {
            token_request(
                broker,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", "uc-native"),
                ],
                None,
            )
            .await
        }
    };
    let (status, rotated) = refresh(refresh_token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, refresh_token, "refresh tokens rotate");
    assert!(rotated["id_token"].is_string());
    assert!(
        jwt_part(rotated["id_token"].as_str().unwrap(), 1)
            .get("nonce")
            .is_none()
    );

    // Presenting the spent token again revokes the whole family.
    let (status, reused) = refresh(refresh_token).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, after) = refresh(second).await;
    assert_eq!(
        (status, after["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{after}"
    );
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        userinfo(&broker, new_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        broker.log().contains("revoked its token family"),
        "reuse is logged"
    );
}

#[tokio::test]
async fn code_is_single_use_and_pkce_checked() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser.get(&native_authorize(&[])).await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();

    let wrong = "a".repeat(43);
    let (status, body) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", NATIVE_REDIRECT),
            ("client_id", "uc-native"),
            ("code_verifier", &wrong),
        ],
        None,
    )
    .await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier"),
        "{body}"
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let again = browser.get(&native_authorize(&[])).await;
    let code = param(again.location(), "code").unwrap();
    let (status, tokens) = exchange_native(&broker, &code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, replay) = exchange_native(&broker, &code).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The replay revoked what the first exchange issued.
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        userinfo(&broker, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, refreshed) = token_request(
        &broker,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", "uc-native"),
        ],
        None,
    )
    .await;
    assert_eq!(refreshed["error"], "invalid_grant");
}

#[tokio::test]
async fn signed_in_browser_cross_launches_without_prompt() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser.get(&native_authorize(&[])).await;
    sign_in_from(&browser, &started).await;

    let meetings =
        authorize_path("uc-meetings", MEETINGS_REDIRECT, &[]).replace("+offline_access", "");
    for path in [meetings.clone(), format!("{meetings}&prompt=none")] {
        let page = browser.get(&path).await;
        let location = page.location();
        assert!(location.starts_with(MEETINGS_REDIRECT), "{location}");
        let code = param(location, "code").expect("code without a prompt");
        let (status, tokens) = token_request(
            &broker,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", MEETINGS_REDIRECT),
            ],
            Some(("uc-meetings", MEETINGS_SECRET)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert!(
            tokens.get("refresh_token").is_none(),
            "no offline_access, no refresh token"
        );
    }

    // prompt=login and max_age=0 send the user to the login page again, with
    // the signed-in user's address filled in.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let page = browser
            .get(&format!("{meetings}&{}={}", extra.0, extra.1))
            .await;
        let location = page.location();
        assert!(location.starts_with("/login?"), "{extra:?}: {location}");
        assert!(
            location.contains("login_hint=jdoe%40example.com"),
            "{location}"
        );
        // Coming back without signing in again does not produce a code.
        let return_to = param(&broker.url(location), "return_to").unwrap();
        let resumed = browser.get(&return_to).await;
        assert!(
            resumed.location().starts_with("/login?"),
            "{extra:?}: {}",
            resumed.location()
        );
    }

    // A hint naming someone else is an account switch, so prompt=none cannot answer it.
    let other = browser
        .get(&format!(
            "{meetings}&prompt=none&login_hint=someone.else%40example.com"
        ))
        .await;
    assert_eq!(
        param(other.location(), "error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test]
async fn logout_ends_session_and_revokes_tokens() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser
        .get(&authorize_path("uc-web", WEB_REDIRECT, &[]))
        .await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();
    // client_secret_post this time.
    let (status, tokens) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("client_id", "uc-web"),
            ("client_secret", WEB_SECRET),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap();

    // Without an ID token hint the user is asked first.
    let confirm = browser.get("/oauth2/logout?client_id=uc-web").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("confirm-logout"), "{}", confirm.body);
    assert_eq!(
        browser.get("/account").await.status,
        StatusCode::OK,
        "still signed in"
    );

    // An unregistered return address is refused without redirecting.
    let path = format!(
        "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}",
        url::form_urlencoded::byte_serialize(b"http://127.0.0.2/evil").collect::<String>()
    );
    let refused = browser.get(&path).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.headers.get("location").is_none());

    let path = format!(
        "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
        url::form_urlencoded::byte_serialize(WEB_SIGNED_OUT.as_bytes()).collect::<String>()
    );
    let out = browser.get(&path).await;
    assert_eq!(out.location(), format!("{WEB_SIGNED_OUT}?state=bye"));

    assert!(
        browser
            .get("/account")
            .await
            .location()
            .starts_with("/login"),
        "signed out"
    );
    assert_eq!(
        userinfo(&broker, tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, refreshed) = token_request(
        &broker,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some(("uc-web", WEB_SECRET)),
    )
    .await;
    assert_eq!(refreshed["error"], "invalid_grant", "{refreshed}");
}

#[tokio::test]
async fn token_endpoint_rejects_bad_requests() {
    let broker = start_provider();
    let http = back_channel();

    let (status, body) = token_request(
        &broker,
        &[("grant_type", "authorization_code"), ("code", "x")],
        Some(("uc-web", "wrong-secret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = token_request(
        &broker,
        &[("grant_type", "authorization_code"), ("code", "x")],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "uc-native"),
            ("client_secret", "guess"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "a public client has no secret"
    );
    let (status, body) = token_request(
        &broker,
        &[("grant_type", "password"), ("client_id", "uc-native")],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, body) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "uc-native"),
            ("code", "not-a-code"),
            ("redirect_uri", NATIVE_REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let response = http
        .post(broker.url("/oauth2/token"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"authorization_code"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    let response = http
        .post(broker.url("/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            format!(
                "Basic {}",
                BASE64.encode(format!("uc-web:{WEB_SECRET}").as_bytes())
            ),
        )
        .body("grant_type=refresh_token&grant_type=authorization_code")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("grant_type"),
        "{body}"
    );

    let response = http
        .get(broker.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="unified-login""#
    );
    let response = userinfo(&broker, "not.a.token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn revocation_revokes_the_grant() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser.get(&native_authorize(&[])).await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();
    let (_, tokens) = exchange_native(&broker, &code).await;
    let http = back_channel();
    let revoke = |token: String, client: &'static str| {
        let http = http.clone();
        let url = broker.url("/oauth2/revoke");
        async move {
            http.post(url)
                .form(&[
                    ("token", token.as_str()),
                    ("client_id", client),
                    ("token_type_hint", "refresh_token"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        revoke("unknown-token".into(), "uc-native").await,
        StatusCode::OK
    );
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        revoke(refresh_token.clone(), "uc-native").await,
        StatusCode::OK
    );
    let (_, refreshed) = token_request(
        &broker,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", "uc-native"),
        ],
        None,
    )
    .await;
    assert_eq!(refreshed["error"], "invalid_grant");
    assert_eq!(
        userinfo(&broker, tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rotated_key_stays_published() {
    let mut broker = Broker::prepare(Options::default());
    broker.append_config(&clients_config());
    let first = broker.cli(&["oauth2", "rotate-key"], "");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = broker.cli(&["oauth2", "rotate-key"], "");
    let stdout = String::from_utf8_lossy(&second.stdout);
    let new_kid = stdout
        .lines()
        .find_map(|line| line.strip_prefix("New signing key: "))
        .expect("kid line")
        .to_owned();
    broker.serve();

    let jwks: Value = back_channel()
        .get(broker.url("/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "current and previous key: {jwks}");
    assert_eq!(kids[0], new_kid);

    let shown = broker.cli(&["oauth2", "show"], "");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("Key {new_kid} (RS256): signing")),
        "{shown}"
    );
    assert!(
        shown.contains("Client uc-native (Desktop client): public, PKCE required"),
        "{shown}"
    );
}

#[tokio::test]
async fn invalid_client_settings_stop_start_up() {
    let broker = Broker::prepare(Options::default());
    broker.append_config(
        r#"
[[oauth2.clients]]
id = "uc-native"
kind = "public"
secret = "a-public-client-cannot-keep-this-secret-safe"
redirect_uris = ["http://127.0.0.1/callback"]
"#,
    );
    let output = broker.cli(&["oauth2", "show"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is public but has a secret"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn foreign_code_changes_nothing() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser.get(&native_authorize(&[])).await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();

    let (status, body) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", NATIVE_REDIRECT),
        ],
        Some(("uc-meetings", MEETINGS_SECRET)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // The code still works for the client it was issued to.
    let (status, tokens) = exchange_native(&broker, &code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // And once redeemed, another client presenting it revokes nothing.
    let (status, _) = token_request(
        &broker,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", MEETINGS_REDIRECT),
        ],
        Some(("uc-meetings", MEETINGS_SECRET)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&broker, access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn old_id_token_hint_needs_confirmation() {
    let broker = start_provider();
    let browser = WebClient::new(&broker);
    let started = browser
        .get(&authorize_path("uc-web", WEB_REDIRECT, &[]))
        .await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();
    let (_, tokens) = exchange_web(&broker, &code).await;
    let old_hint = tokens["id_token"].as_str().unwrap().to_owned();
    let logout = format!("/oauth2/logout?id_token_hint={old_hint}");
    assert!(
        browser.get(&logout).await.location().starts_with("/login"),
        "the first sign-out needs no confirmation"
    );

    // A new session of the same user is not ended by the old session's token.
    let started = browser
        .get(&authorize_path("uc-web", WEB_REDIRECT, &[]))
        .await;
    sign_in_from(&browser, &started).await;
    let page = browser.get(&logout).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.location());
    assert!(page.body.contains("confirm-logout"));
    assert_eq!(
        browser.get("/account").await.status,
        StatusCode::OK,
        "still signed in"
    );

    // Without a browser session, an ID token alone revokes nothing.
    let cookieless = WebClient::new(&broker);
    let started = browser
        .get(&authorize_path("uc-web", WEB_REDIRECT, &[]))
        .await;
    let code = param(started.location(), "code").unwrap();
    let (_, current) = exchange_web(&broker, &code).await;
    let hint = current["id_token"].as_str().unwrap();
    cookieless
        .get(&format!("/oauth2/logout?id_token_hint={hint}"))
        .await;
    let access = current["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&broker, access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_user_signing_in_revokes_tokens() {
    let broker = start_provider();
    broker.add_user("asmith", "asmith@example.com");
    let browser = WebClient::new(&broker);
    let started = browser.get(&native_authorize(&[])).await;
    let answered = sign_in_from(&browser, &started).await;
    let code = param(answered.location(), "code").unwrap();
    let (_, tokens) = exchange_native(&broker, &code).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&broker, access).await.status(), StatusCode::OK);

    // A signed-in browser reaches the sign-in page through a login hint.
    let page = browser.get("/login?login_hint=asmith%40example.com").await;
    let switched = browser
        .post(
            "/login",
            &[
                ("csrf_token", &csrf_token(&page.body)),
                ("identifier", "asmith@example.com"),
            ],
        )
        .await;
    assert_eq!(switched.location(), "/login/password");
    let signed_in = browser.password(PASSWORD).await;
    assert_eq!(signed_in.location(), "/account");
    assert_eq!(
        userinfo(&broker, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
