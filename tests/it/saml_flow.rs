//! CL Auth through SAML end to end: the real binary, a real SAML IdP on
//! loopback (pysaml2 shaped like Entra ID, and SimpleSAMLphp), and a client
//! that follows the redirects and forms as a browser does. Also the `saml`
//! commands and the `[saml.idp]` config table that set up the IdP.

use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use data_encoding::{BASE64, HEXLOWER};
use flate2::read::DeflateDecoder;
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION};
use reqwest::redirect::Policy;

use crate::harness::{Broker, Options, PASSWORD, broker_command, csrf_token, free_port};
use crate::peers::pysaml2::{self, Pysaml2Idp};
use crate::peers::simplesamlphp::{self, Signing, SimpleSamlPhp};

/// A broker with the pysaml2 IdP configured and `jane@example.com` (login
/// ID `jane`) enabled for CL Auth.
pub struct SamlSetup {
    pub broker: Broker,
    pub idp: Pysaml2Idp,
}

pub fn setup(options: Options, extra_settings: &[&str]) -> Option<SamlSetup> {
    let mut broker = Broker::prepare(options);
    let idp = Pysaml2Idp::start(&broker.url("/saml/metadata"), &broker.url("/saml/acs"))?;
    configure_idp(
        &broker,
        &IdpFields {
            sso_url: &idp.sso_url,
            entity_id: &idp.entity_id,
            certificate_pem: &idp.certificate_pem,
        },
        extra_settings,
    );
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    broker.serve();
    Some(SamlSetup { broker, idp })
}

/// The IdP values that `saml set` needs.
pub struct IdpFields<'a> {
    pub sso_url: &'a str,
    pub entity_id: &'a str,
    pub certificate_pem: &'a str,
}

/// Runs `saml set` for the IdP named "Contoso" with `idp` and
/// `extra_settings`, and panics when the command fails.
pub fn configure_idp(broker: &Broker, idp: &IdpFields<'_>, extra_settings: &[&str]) {
    let cert_path = broker.data_dir().join("idp.pem");
    std::fs::write(&cert_path, idp.certificate_pem).expect("write IdP certificate");
    let mut args = vec![
        "saml",
        "set",
        "--name",
        "Contoso",
        "--sso-url",
        idp.sso_url,
        "--entity-id",
        idp.entity_id,
        "--certificates",
        cert_path.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra_settings);
    let output = broker.cli(&args, "");
    assert!(
        output.status.success(),
        "saml set: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Adds a user with `PASSWORD` as local password and turns CL Auth on.
pub fn add_cl_auth_user(broker: &Broker, login_id: &str, email: &str) {
    broker.add_user(login_id, email);
    let enabled = broker.cli(&["cl-auth", "enable", login_id], "");
    assert!(
        enabled.status.success(),
        "cl-auth enable: {}",
        String::from_utf8_lossy(&enabled.stderr)
    );
}

/// Starts a broker with the SimpleSAMLphp IdP configured through `saml set`
/// and `jane` enabled for CL Auth, or returns `None` when SimpleSAMLphp is
/// not installed outside CI.
pub fn setup_simplesamlphp(
    signing: Signing,
    extra_settings: &[&str],
) -> Option<(Broker, SimpleSamlPhp)> {
    let mut broker = Broker::prepare(Options::default());
    let idp = SimpleSamlPhp::start(
        &broker.url("/saml/metadata"),
        &broker.url("/saml/acs"),
        signing,
    )?;
    configure_idp(
        &broker,
        &IdpFields {
            sso_url: &idp.sso_url,
            entity_id: &idp.entity_id,
            certificate_pem: &idp.certificate_pem,
        },
        extra_settings,
    );
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    broker.serve();
    Some((broker, idp))
}

pub struct Client {
    pub http: reqwest::Client,
}

pub struct Page {
    pub status: StatusCode,
    pub location: String,
    /// The `Set-Cookie` headers of the response.
    pub cookies: Vec<String>,
    pub body: String,
}

/// Returns the value of the input named `name` in `html`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&#x27;", "'")
            .replace("&quot;", "\""),
    )
}

impl Client {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self { http }
    }

    async fn read(response: reqwest::Response) -> Page {
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cookies = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect();
        Page {
            status,
            location,
            cookies,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::read(self.http.get(url).send().await.expect("GET")).await
    }

    pub async fn post(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        Self::read(self.http.post(url).form(fields).send().await.expect("POST")).await
    }

    /// Types `identifier` on the broker's first page and returns the response.
    pub async fn identify(&self, broker: &Broker, identifier: &str) -> Page {
        let login = self.get(&broker.url("/login")).await;
        let token = csrf_token(&login.body);
        self.post(
            &broker.url("/login"),
            &[("csrf_token", &token), ("identifier", identifier)],
        )
        .await
    }

    /// Signs in at the pysaml2 IdP page behind `idp_url` and returns the
    /// SAMLResponse and RelayState that the IdP's form would post.
    pub async fn sign_in_at_idp(
        &self,
        idp: &Pysaml2Idp,
        idp_url: &str,
        user: &pysaml2::IdpUser,
    ) -> (String, String) {
        let form = self.get(idp_url).await;
        assert_eq!(form.status, StatusCode::OK, "IdP login page: {}", form.body);
        let state = input_value(&form.body, pysaml2::STATE_FIELD).expect("IdP state field");
        let answer = self
            .post(
                &format!("{}/login", idp.base_url),
                &[
                    (pysaml2::STATE_FIELD, &state),
                    (pysaml2::EMAIL_FIELD, user.email),
                    (pysaml2::PASSWORD_FIELD, user.password),
                ],
            )
            .await;
        let response =
            input_value(&answer.body, "SAMLResponse").expect("SAMLResponse in the IdP's form");
        let relay_state = input_value(&answer.body, "RelayState").unwrap_or_default();
        (response, relay_state)
    }

    /// Posts a response to the ACS and follows the hand-off back into the session.
    pub async fn post_to_acs(&self, broker: &Broker, response: &str, relay_state: &str) -> Page {
        let acs = self
            .post(
                &broker.url("/saml/acs"),
                &[("SAMLResponse", response), ("RelayState", relay_state)],
            )
            .await;
        if acs.status != StatusCode::SEE_OTHER {
            return acs;
        }
        self.get(&broker.url(&acs.location)).await
    }
}

/// The Mitel-credentials password that tests set with `user set-cl-password`.
const CL_PASSWORD: &str = "harbor-quartz-meadow-83";

/// The one message for an unknown identifier and a wrong password alike.
const WRONG_CREDENTIALS: &str =
    "The email address, login ID or password is incorrect. Check them and try again.";

/// The heading of the password step for Mitel credentials.
const MITEL_HEADING: &str = "Enter your Mitel credentials password";

/// Wait after `saml set` until the running server uses the new settings,
/// because it caches the IdP settings for 5 s.
const SETTINGS_CACHE_EXPIRY: Duration = Duration::from_millis(5_500);

/// Maximum wait for a `serve` that is expected to exit at start.
const SERVE_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the value of the query parameter `name` in `url`.
fn query_value(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).expect("absolute URL");
    parsed
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Decodes the AuthnRequest of an HTTP-Redirect binding URL: base64, then
/// raw DEFLATE.
fn authn_request_xml(redirect_url: &str) -> String {
    let encoded = query_value(redirect_url, "SAMLRequest").expect("SAMLRequest parameter");
    let compressed = BASE64
        .decode(encoded.as_bytes())
        .expect("SAMLRequest is base64");
    let mut xml = String::new();
    DeflateDecoder::new(&compressed[..])
        .read_to_string(&mut xml)
        .expect("SAMLRequest is raw DEFLATE of UTF-8 XML");
    xml
}

/// Returns the unescaped value of the `<input>` named `name`, whatever the
/// order of its attributes.
fn field_value(html: &str, name: &str) -> Option<String> {
    html.split("<input")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
        .find(|tag| tag_attribute(tag, "name").as_deref() == Some(name))
        .and_then(|tag| tag_attribute(tag, "value"))
}

/// Returns the unescaped value of the attribute `name="…"` in a tag's text.
fn tag_attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#039;", "'")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Returns the hex SHA-256 fingerprint of a PEM certificate, as `saml show`
/// prints it.
fn certificate_fingerprint(pem: &str) -> String {
    let certificate = X509::from_pem(pem.as_bytes()).expect("PEM certificate");
    let digest = certificate
        .digest(MessageDigest::sha256())
        .expect("SHA-256 of the certificate");
    HEXLOWER.encode(&digest)
}

/// Runs a broker command, panics when it fails, and returns its stdout.
fn cli_stdout(broker: &Broker, args: &[&str], stdin: &str) -> String {
    let output = broker.cli(args, stdin);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The part of a SimpleSAMLphp sign-in that the tests check.
struct SimpleSamlPhpAnswer {
    /// The value of the login form's username field before anything is typed.
    prefilled_username: String,
    saml_response: String,
    /// Empty when the IdP's form carries no RelayState.
    relay_state: String,
}

/// Opens `start_url` at the SimpleSAMLphp IdP in a fresh browser-like client,
/// signs in as `user` and returns what the IdP's POST form would send.
async fn sign_in_at_simplesamlphp(
    idp: &SimpleSamlPhp,
    start_url: &str,
    user: &simplesamlphp::IdpUser,
) -> SimpleSamlPhpAnswer {
    // Redirects are followed because they all stay within the IdP.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("HTTP client");
    let login = http.get(start_url).send().await.expect("GET at the IdP");
    assert_eq!(
        login.status(),
        StatusCode::OK,
        "IdP login page; log:\n{}",
        idp.log()
    );
    let login_url = login.url().clone();
    let login_html = login.text().await.expect("IdP login page body");
    let prefilled_username = field_value(&login_html, "username").unwrap_or_default();
    let auth_state = field_value(&login_html, "AuthState").expect("AuthState field at the IdP");

    let answer = http
        .post(login_url.as_str())
        .form(&[
            ("username", user.email),
            ("password", user.password),
            ("AuthState", auth_state.as_str()),
        ])
        .send()
        .await
        .expect("POST the IdP login form");
    let answer_html = answer.text().await.expect("IdP POST form body");
    let saml_response = field_value(&answer_html, "SAMLResponse")
        .unwrap_or_else(|| panic!("no SAMLResponse in the IdP's page:\n{answer_html}"));
    SimpleSamlPhpAnswer {
        prefilled_username,
        saml_response,
        relay_state: field_value(&answer_html, "RelayState").unwrap_or_default(),
    }
}

impl Client {
    /// Types `identifier`, signs in at the pysaml2 IdP as `user` and returns
    /// the broker's last page.
    async fn sign_in_with_pysaml2(
        &self,
        broker: &Broker,
        idp: &Pysaml2Idp,
        identifier: &str,
        user: &pysaml2::IdpUser,
    ) -> Page {
        let redirect = self.identify(broker, identifier).await;
        assert_eq!(
            redirect.status,
            StatusCode::SEE_OTHER,
            "identifier step: {}",
            redirect.body
        );
        let (response, relay_state) = self.sign_in_at_idp(idp, &redirect.location, user).await;
        self.post_to_acs(broker, &response, &relay_state).await
    }

    /// Returns the account page's body, or `None` when `/account` redirects
    /// to the sign-in page.
    async fn account(&self, broker: &Broker) -> Option<String> {
        let page = self.get(&broker.url("/account")).await;
        match page.status {
            StatusCode::OK => Some(page.body),
            StatusCode::SEE_OTHER => {
                assert!(
                    page.location.starts_with("/login"),
                    "/account redirects to {}",
                    page.location
                );
                None
            }
            status => panic!("/account returned {status}: {}", page.body),
        }
    }

    /// Returns the Content-Security-Policy header of `GET url`.
    async fn content_security_policy(&self, url: &str) -> String {
        let response = self.http.get(url).send().await.expect("GET");
        response
            .headers()
            .get(CONTENT_SECURITY_POLICY)
            .expect("Content-Security-Policy header")
            .to_str()
            .expect("ASCII header")
            .to_owned()
    }
}

/// Returns the text of the element with `id` in `html`.
fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker)?;
    let text_start = html[start..].find('>')? + start + 1;
    let text_end = html[text_start..].find('<')? + text_start;
    Some(html[text_start..text_end].to_owned())
}

#[tokio::test]
async fn saml_sign_in_over_http() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    let client = Client::new();

    let redirect = client.identify(&broker, "Jane@Example.com").await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER, "{}", redirect.body);
    assert!(
        redirect.location.starts_with(&idp.sso_url),
        "{}",
        redirect.location
    );
    let url = url::Url::parse(&redirect.location).unwrap();
    let hint = url
        .query_pairs()
        .find(|(name, _)| name == "login_hint")
        .map(|(_, value)| value.into_owned());
    assert_eq!(hint.as_deref(), Some("Jane@Example.com"));
    let relay = url
        .query_pairs()
        .find(|(name, _)| name == "RelayState")
        .unwrap()
        .1
        .into_owned();
    assert!(relay.len() <= 80, "RelayState is {} bytes", relay.len());
    assert!(
        url.query_pairs().any(|(name, _)| name == "Signature"),
        "AuthnRequest is signed by default"
    );

    let form = client.get(&redirect.location).await;
    assert!(
        form.body.contains("value=\"Jane@Example.com\""),
        "email prefilled at the IdP: {}",
        form.body
    );
    assert_eq!(idp.login_hints(), vec!["Jane@Example.com".to_owned()]);

    let (response, relay_state) = client
        .sign_in_at_idp(&idp, &redirect.location, &pysaml2::JANE)
        .await;
    let done = client.post_to_acs(&broker, &response, &relay_state).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account");
    // The sign-in page's CSRF cookie is dropped at sign-in through the IdP too.
    assert!(
        done.cookies.iter().any(
            |cookie| cookie.starts_with("unified_login_csrf=;") && cookie.contains("Max-Age=0")
        ),
        "{:?}",
        done.cookies
    );

    let account = client.get(&broker.url("/account")).await;
    assert!(
        account.body.contains("jane@example.com"),
        "{}",
        account.body
    );
    assert!(account.body.contains(">saml<"), "{}", account.body);
    // The first single sign-on makes the email the login ID.
    assert!(
        account
            .body
            .contains("<dd id=\"login-id\">jane@example.com</dd>"),
        "{}",
        account.body
    );

    // The same response again, from any browser, is a replay.
    let replay = Client::new();
    let again = replay.post_to_acs(&broker, &response, &relay_state).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("already answered"), "{}", again.body);
    let unsolicited = replay.post_to_acs(&broker, &response, "").await;
    assert_eq!(unsolicited.status, StatusCode::BAD_REQUEST);
    assert!(
        unsolicited.body.contains("InResponseTo"),
        "{}",
        unsolicited.body
    );
    let _ = PASSWORD;
}

#[tokio::test]
async fn mismatch_continue_signs_in_asserted_user() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    add_cl_auth_user(&broker, "omar", "omar@example.com");
    let client = Client::new();

    let mismatch = client
        .sign_in_with_pysaml2(&broker, &idp, "omar@example.com", &pysaml2::JANE)
        .await;

    assert_eq!(mismatch.status, StatusCode::OK, "{}", mismatch.body);
    assert_eq!(
        element_text(&mismatch.body, "typed").as_deref(),
        Some("omar@example.com"),
        "typed identifier on the mismatch page: {}",
        mismatch.body
    );
    assert_eq!(
        element_text(&mismatch.body, "asserted").as_deref(),
        Some("jane@example.com"),
        "asserted user on the mismatch page: {}",
        mismatch.body
    );
    assert_eq!(
        client.account(&broker).await,
        None,
        "the mismatch page must not sign anyone in yet"
    );

    let token = csrf_token(&mismatch.body);
    let continued = client
        .post(
            &broker.url("/login/mismatch"),
            &[("csrf_token", &token), ("action", "continue")],
        )
        .await;
    assert_eq!(
        continued.status,
        StatusCode::SEE_OTHER,
        "Continue as: {}",
        continued.body
    );
    assert_eq!(continued.location, "/account", "Continue as redirects to");
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "email").as_deref(),
        Some("jane@example.com"),
        "signed-in user: {account}"
    );
    assert_eq!(
        element_text(&account, "method").as_deref(),
        Some("saml"),
        "sign-in method: {account}"
    );
}

#[tokio::test]
async fn mismatch_restart_forces_authn_with_hint() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    add_cl_auth_user(&broker, "omar", "omar@example.com");
    let client = Client::new();

    let first = client.identify(&broker, "omar@example.com").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert!(
        !authn_request_xml(&first.location).contains("ForceAuthn=\"true\""),
        "the first AuthnRequest does not force authentication: {}",
        authn_request_xml(&first.location)
    );
    let (response, relay_state) = client
        .sign_in_at_idp(&idp, &first.location, &pysaml2::JANE)
        .await;
    let mismatch = client.post_to_acs(&broker, &response, &relay_state).await;
    assert_eq!(mismatch.status, StatusCode::OK, "{}", mismatch.body);
    assert!(
        mismatch.body.contains("id=\"restart-sign-in\""),
        "restart button: {}",
        mismatch.body
    );

    let token = csrf_token(&mismatch.body);
    let restart = client
        .post(
            &broker.url("/login/mismatch"),
            &[("csrf_token", &token), ("action", "restart")],
        )
        .await;

    assert_eq!(restart.status, StatusCode::SEE_OTHER, "{}", restart.body);
    assert!(
        restart.location.starts_with(&idp.sso_url),
        "restart goes to the IdP: {}",
        restart.location
    );
    let xml = authn_request_xml(&restart.location);
    assert!(
        xml.contains("ForceAuthn=\"true\""),
        "restarted AuthnRequest forces authentication: {xml}"
    );
    assert_eq!(
        query_value(&restart.location, "login_hint").as_deref(),
        Some("omar@example.com"),
        "login_hint of the restarted request"
    );
    assert_ne!(
        query_value(&restart.location, "RelayState"),
        query_value(&first.location, "RelayState"),
        "the restart is a new request"
    );

    let (response, relay_state) = client
        .sign_in_at_idp(&idp, &restart.location, &pysaml2::OMAR)
        .await;
    let done = client.post_to_acs(&broker, &response, &relay_state).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        idp.log().contains("ForceAuthn=True"),
        "the IdP saw ForceAuthn; log:\n{}",
        idp.log()
    );
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "email").as_deref(),
        Some("omar@example.com"),
        "signed-in user after the restart: {account}"
    );
}

#[tokio::test]
async fn response_from_other_browser_rejected() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    let browser_a = Client::new();
    let browser_b = Client::new();

    let redirect_a = browser_a.identify(&broker, "jane@example.com").await;
    assert_eq!(
        redirect_a.status,
        StatusCode::SEE_OTHER,
        "{}",
        redirect_a.body
    );
    let redirect_b = browser_b.identify(&broker, "jane@example.com").await;
    assert_eq!(
        redirect_b.status,
        StatusCode::SEE_OTHER,
        "{}",
        redirect_b.body
    );
    assert_ne!(
        query_value(&redirect_a.location, "RelayState"),
        query_value(&redirect_b.location, "RelayState"),
        "each browser gets its own request"
    );
    let (response_a, relay_state_a) = browser_a
        .sign_in_at_idp(&idp, &redirect_a.location, &pysaml2::JANE)
        .await;

    let rejected = browser_b
        .post_to_acs(&broker, &response_a, &relay_state_a)
        .await;

    assert_eq!(rejected.status, StatusCode::FORBIDDEN, "{}", rejected.body);
    assert!(
        rejected.body.contains("started in another browser"),
        "error page: {}",
        rejected.body
    );
    assert_eq!(
        browser_b.account(&broker).await,
        None,
        "browser B is not signed in"
    );
    assert_eq!(
        browser_a.account(&broker).await,
        None,
        "browser A is not signed in by B's post"
    );
    let late = browser_a
        .post_to_acs(&broker, &response_a, &relay_state_a)
        .await;
    assert_eq!(
        late.status,
        StatusCode::BAD_REQUEST,
        "the response cannot be used twice: {}",
        late.body
    );
    assert_eq!(
        browser_a.account(&broker).await,
        None,
        "browser A is still not signed in"
    );
}

#[tokio::test]
async fn unknown_relay_state_is_rejected() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    let client = Client::new();
    let redirect = client.identify(&broker, "jane@example.com").await;
    let (response, relay_state) = client
        .sign_in_at_idp(&idp, &redirect.location, &pysaml2::JANE)
        .await;

    let unknown = client
        .post_to_acs(&broker, &response, "never-issued-relay-key")
        .await;

    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert!(
        unknown.body.contains("the sign-in request is unknown"),
        "error page: {}",
        unknown.body
    );
    assert_eq!(
        client.account(&broker).await,
        None,
        "a rejected response signs nobody in"
    );
    // The rejection consumes nothing, so the issued RelayState still works.
    let done = client.post_to_acs(&broker, &response, &relay_state).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location, "/account",
        "sign-in with the issued RelayState"
    );
}

#[tokio::test]
async fn unknown_handoff_is_rejected() {
    let broker = Broker::start();
    let client = Client::new();

    let page = client
        .get(&broker.url("/saml/complete?handoff=never-issued-handoff"))
        .await;

    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        page.body.contains("expired or was already used"),
        "error page: {}",
        page.body
    );
    assert_eq!(client.account(&broker).await, None, "nobody is signed in");
}

#[tokio::test]
async fn mitel_choice_accepts_cl_password() {
    let Some(SamlSetup { broker, idp }) =
        setup(Options::default(), &["--mitel-credentials", "true"])
    else {
        return;
    };
    cli_stdout(
        &broker,
        &["user", "set-cl-password", "jane"],
        &format!("{CL_PASSWORD}\n"),
    );
    let client = Client::new();

    let identified = client.identify(&broker, "jane@example.com").await;
    assert_eq!(
        identified.status,
        StatusCode::SEE_OTHER,
        "{}",
        identified.body
    );
    assert_eq!(
        identified.location, "/login/choose",
        "identifier step leads to"
    );
    let choice = client.get(&broker.url("/login/choose")).await;
    assert_eq!(choice.status, StatusCode::OK, "{}", choice.body);
    assert!(
        choice.body.contains("id=\"choose-idp\""),
        "IdP button: {}",
        choice.body
    );
    assert!(
        choice.body.contains("id=\"choose-mitel\""),
        "Mitel button: {}",
        choice.body
    );

    let token = csrf_token(&choice.body);
    let mitel = client
        .post(
            &broker.url("/login/choose"),
            &[("csrf_token", &token), ("method", "mitel")],
        )
        .await;
    assert_eq!(mitel.status, StatusCode::SEE_OTHER, "{}", mitel.body);
    assert_eq!(mitel.location, "/login/password", "Mitel choice leads to");
    let password_page = client.get(&broker.url("/login/password")).await;
    assert!(
        password_page
            .body
            .contains(&format!("<h1>{MITEL_HEADING}</h1>")),
        "Mitel heading: {}",
        password_page.body
    );

    let token = csrf_token(&password_page.body);
    let local = client
        .post(
            &broker.url("/login/password"),
            &[("csrf_token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        local.status,
        StatusCode::UNAUTHORIZED,
        "the local password is not a Mitel credential: {}",
        local.body
    );
    assert!(
        local.body.contains(WRONG_CREDENTIALS),
        "wrong-password message: {}",
        local.body
    );
    assert_eq!(
        client.account(&broker).await,
        None,
        "local password signs nobody in"
    );

    let token = csrf_token(&local.body);
    let signed_in = client
        .post(
            &broker.url("/login/password"),
            &[("csrf_token", &token), ("password", CL_PASSWORD)],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location, "/account", "CL password redirects to");
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "method").as_deref(),
        Some("mitel_credentials"),
        "sign-in method: {account}"
    );

    // The other button of the choice page goes to the IdP.
    let other = Client::new();
    other.identify(&broker, "jane@example.com").await;
    let choice = other.get(&broker.url("/login/choose")).await;
    let token = csrf_token(&choice.body);
    let to_idp = other
        .post(
            &broker.url("/login/choose"),
            &[("csrf_token", &token), ("method", "idp")],
        )
        .await;
    assert_eq!(to_idp.status, StatusCode::SEE_OTHER, "{}", to_idp.body);
    assert!(
        to_idp.location.starts_with(&idp.sso_url),
        "IdP choice redirects to {}",
        to_idp.location
    );
}

#[tokio::test]
async fn no_idp_asks_mitel_password() {
    let mut broker = Broker::prepare(Options::default());
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    cli_stdout(
        &broker,
        &["user", "set-cl-password", "jane"],
        &format!("{CL_PASSWORD}\n"),
    );
    broker.serve();
    let client = Client::new();

    let identified = client.identify(&broker, "jane@example.com").await;

    assert_eq!(
        identified.status,
        StatusCode::SEE_OTHER,
        "{}",
        identified.body
    );
    assert_eq!(
        identified.location, "/login/password",
        "without an IdP the identifier step leads to"
    );
    let password_page = client.get(&broker.url("/login/password")).await;
    assert!(
        password_page
            .body
            .contains(&format!("<h1>{MITEL_HEADING}</h1>")),
        "Mitel heading: {}",
        password_page.body
    );
    let token = csrf_token(&password_page.body);
    let signed_in = client
        .post(
            &broker.url("/login/password"),
            &[("csrf_token", &token), ("password", CL_PASSWORD)],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "method").as_deref(),
        Some("mitel_credentials"),
        "sign-in method: {account}"
    );
}

#[tokio::test]
async fn unknown_idp_user_is_rejected() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    let client = Client::new();

    let rejected = client
        .sign_in_with_pysaml2(&broker, &idp, "jane@example.com", &pysaml2::OMAR)
        .await;

    assert_eq!(rejected.status, StatusCode::FORBIDDEN, "{}", rejected.body);
    assert!(
        rejected
            .body
            .contains("No account here matches omar@example.com"),
        "error page: {}",
        rejected.body
    );
    assert_eq!(client.account(&broker).await, None, "nobody is signed in");
}

#[tokio::test]
async fn idp_user_without_cl_auth_rejected() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    broker.add_user("omar", "omar@example.com");
    let client = Client::new();

    let rejected = client
        .sign_in_with_pysaml2(&broker, &idp, "jane@example.com", &pysaml2::OMAR)
        .await;

    assert_eq!(rejected.status, StatusCode::FORBIDDEN, "{}", rejected.body);
    assert!(
        rejected
            .body
            .contains("Single sign-on is not enabled for omar@example.com"),
        "error page: {}",
        rejected.body
    );
    assert_eq!(client.account(&broker).await, None, "nobody is signed in");
}

#[test]
fn saml_set_names_missing_flags() {
    let broker = Broker::prepare(Options::default());

    let output = broker.cli(
        &[
            "saml",
            "set",
            "--name",
            "Contoso",
            "--sso-url",
            "http://127.0.0.1:9/sso",
            "--entity-id",
            "http://127.0.0.1:9/metadata",
        ],
        "",
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "saml set succeeded: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--certificates"),
        "names the missing flag: {stderr}"
    );
    assert!(
        !stderr.contains("--sso-url"),
        "names only missing flags: {stderr}"
    );
    let show = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        show.contains("No IdP is configured"),
        "nothing was saved: {show}"
    );
}

/// Runs `unified-login serve` with `config` in `dir` and returns its output
/// once it exits. Panics when it still runs after `SERVE_EXIT_TIMEOUT`.
pub(crate) fn serve_until_exit(config: &Path, dir: &Path) -> Output {
    let mut child = broker_command()
        .arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unified-login serve");
    let deadline = Instant::now() + SERVE_EXIT_TIMEOUT;
    while child.try_wait().expect("check serve").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve still runs after {SERVE_EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("serve output")
}

#[test]
fn config_without_certificates_fails_start() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("unified-login.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
database_url = "sqlite://{db}"

[saml.idp]
name = "Contoso"
sso_url = "http://127.0.0.1:9/sso"
entity_id = "http://127.0.0.1:9/metadata"
certificates_pem = ""
"#,
            port = free_port(),
            db = dir.path().join("broker.db").display(),
        ),
    )
    .expect("write config");

    let serve = serve_until_exit(&config, dir.path());
    let list = crate::harness::run_cli(&config, dir.path(), &["user", "list"], "");

    let serve_stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success(), "serve exited with success");
    assert!(
        serve_stderr.contains("signing certificates"),
        "serve names the certificates: {serve_stderr}"
    );
    assert!(
        serve_stderr.contains("[saml.idp]"),
        "serve names the config table: {serve_stderr}"
    );
    let list_stderr = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success(), "user list exited with success");
    assert!(
        list_stderr.contains("signing certificates"),
        "user list names the certificates: {list_stderr}"
    );
    assert_eq!(
        serve_stderr.matches("no certificate found").count(),
        1,
        "the cause appears once: {serve_stderr}"
    );
}

#[test]
fn saml_show_prints_sp_values() {
    let broker = Broker::prepare(Options::default());

    let show = cli_stdout(&broker, &["saml", "show"], "");

    let entity_line = format!(
        "Identifier (SP entity ID):  {}",
        broker.url("/saml/metadata")
    );
    let acs_line = format!("Reply URL (ACS URL):        {}", broker.url("/saml/acs"));
    assert!(show.contains(&entity_line), "entity ID in: {show}");
    assert!(show.contains(&acs_line), "ACS URL in: {show}");
}

#[tokio::test]
async fn sp_metadata_lists_acs_and_certificate() {
    let broker = Broker::start();
    let client = Client::new();

    let response = client
        .http
        .get(broker.url("/saml/metadata"))
        .send()
        .await
        .expect("GET /saml/metadata");

    assert_eq!(response.status(), StatusCode::OK, "metadata status");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type, "application/samlmetadata+xml",
        "metadata content type"
    );
    let xml = response.text().await.expect("metadata body");
    assert!(
        xml.contains(&format!("entityID=\"{}\"", broker.url("/saml/metadata"))),
        "entityID: {xml}"
    );
    assert!(
        xml.contains(&format!("Location=\"{}\"", broker.url("/saml/acs"))),
        "ACS location: {xml}"
    );
    assert!(
        xml.contains("use=\"signing\""),
        "signing key descriptor: {xml}"
    );
    // The broker creates the SP key pair in the database at first start,
    // and `saml show` prints the fingerprint of its certificate.
    let start = xml
        .find("X509Certificate>")
        .unwrap_or_else(|| panic!("no certificate in the metadata: {xml}"))
        + "X509Certificate>".len();
    let end = xml[start..].find("</").expect("end of the certificate") + start;
    let der = BASE64
        .decode(xml[start..end].trim().as_bytes())
        .expect("base64 certificate");
    let fingerprint = HEXLOWER.encode(
        &X509::from_der(&der)
            .expect("DER certificate")
            .digest(MessageDigest::sha256())
            .expect("SHA-256 of the certificate"),
    );
    let show = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        show.contains(&format!("SHA-256 {fingerprint} (in the database)")),
        "`saml show` names the metadata certificate {fingerprint}: {show}"
    );
}

#[tokio::test]
async fn imported_metadata_signs_in_simplesamlphp() {
    let mut broker = Broker::prepare(Options::default());
    let Some(idp) = SimpleSamlPhp::start(
        &broker.url("/saml/metadata"),
        &broker.url("/saml/acs"),
        Signing::Assertion,
    ) else {
        return;
    };
    let metadata_path = broker.data_dir().join("idp-metadata.xml");
    std::fs::write(&metadata_path, idp.metadata_xml().await).expect("write IdP metadata");
    let imported = cli_stdout(
        &broker,
        &[
            "saml",
            "import-metadata",
            metadata_path.to_str().expect("UTF-8 path"),
            "--name",
            "Example SimpleSAMLphp",
        ],
        "",
    );
    assert!(
        imported.contains("Saved IdP settings for Example SimpleSAMLphp"),
        "import output: {imported}"
    );
    let show = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        show.contains(&format!("Entity ID:            {}", idp.entity_id)),
        "imported entity ID: {show}"
    );
    assert!(
        show.contains(&format!("Sign-in URL:          {}", idp.sso_url)),
        "imported Sign-in URL: {show}"
    );
    assert!(
        show.contains(&certificate_fingerprint(&idp.certificate_pem)),
        "imported certificate: {show}"
    );
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    broker.serve();
    let client = Client::new();

    let redirect = client.identify(&broker, "jane@example.com").await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER, "{}", redirect.body);
    assert!(
        redirect.location.starts_with(&idp.sso_url),
        "redirect to the imported Sign-in URL: {}",
        redirect.location
    );
    let answer = sign_in_at_simplesamlphp(&idp, &redirect.location, &simplesamlphp::JANE).await;
    let done = client
        .post_to_acs(&broker, &answer.saml_response, &answer.relay_state)
        .await;

    assert_eq!(
        answer.prefilled_username, "jane@example.com",
        "username prefilled at the IdP"
    );
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account", "signed in and redirected to");
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "method").as_deref(),
        Some("saml"),
        "sign-in method: {account}"
    );
}

#[tokio::test]
async fn login_csp_allows_idp_origin() {
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    let plain = Broker::start();
    let client = Client::new();

    let with_idp = client.content_security_policy(&broker.url("/login")).await;
    let without_idp = client.content_security_policy(&plain.url("/login")).await;

    let idp_origin = url::Url::parse(&idp.sso_url)
        .expect("IdP URL")
        .origin()
        .ascii_serialization();
    assert!(
        with_idp.contains(&format!("form-action 'self' {idp_origin}")),
        "form-action allows {idp_origin}: {with_idp}"
    );
    assert!(
        without_idp.contains("form-action 'self'"),
        "form-action without an IdP: {without_idp}"
    );
    assert!(
        !without_idp.contains(&idp_origin),
        "no IdP origin without an IdP: {without_idp}"
    );
}

#[tokio::test]
async fn wrong_certificate_recovered_from_metadata() {
    let mut broker = Broker::prepare(Options::default());
    let Some(idp) = Pysaml2Idp::start(&broker.url("/saml/metadata"), &broker.url("/saml/acs"))
    else {
        return;
    };
    let other_certificate = include_str!("../fixtures/keys/other-idp.crt");
    configure_idp(
        &broker,
        &IdpFields {
            sso_url: &idp.sso_url,
            entity_id: &idp.entity_id,
            certificate_pem: other_certificate,
        },
        &["--metadata-url", &idp.metadata_url()],
    );
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    let before = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        !before.contains(&certificate_fingerprint(&idp.certificate_pem)),
        "the IdP's certificate is not configured yet: {before}"
    );
    broker.serve();
    let client = Client::new();

    let done = client
        .sign_in_with_pysaml2(&broker, &idp, "jane@example.com", &pysaml2::JANE)
        .await;

    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account", "signed in and redirected to");
    let after = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        after.contains(&certificate_fingerprint(&idp.certificate_pem)),
        "the IdP's certificate from its metadata: {after}"
    );
    assert!(
        !after.contains(&certificate_fingerprint(other_certificate)),
        "the metadata replaced the wrong certificate: {after}"
    );
}

#[tokio::test]
async fn signature_miss_refetches_metadata() {
    let mut broker = Broker::prepare(Options::default());
    let Some(idp) = Pysaml2Idp::start(&broker.url("/saml/metadata"), &broker.url("/saml/acs"))
    else {
        return;
    };
    let fields = IdpFields {
        sso_url: &idp.sso_url,
        entity_id: &idp.entity_id,
        certificate_pem: &idp.certificate_pem,
    };
    let metadata_setting = ["--metadata-url", &idp.metadata_url()];
    configure_idp(&broker, &fields, &metadata_setting);
    add_cl_auth_user(&broker, "jane", "jane@example.com");
    broker.serve();
    // The broker also fetches the metadata when it starts. A first sign-in
    // gives that fetch time to finish before the certificate is changed.
    let first = Client::new()
        .sign_in_with_pysaml2(&broker, &idp, "jane@example.com", &pysaml2::JANE)
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);

    let other_certificate = include_str!("../fixtures/keys/other-idp.crt");
    configure_idp(
        &broker,
        &IdpFields {
            certificate_pem: other_certificate,
            ..fields
        },
        &[],
    );
    tokio::time::sleep(SETTINGS_CACHE_EXPIRY).await;
    let before = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        before.contains(&certificate_fingerprint(other_certificate)),
        "only the wrong certificate is configured: {before}"
    );
    assert!(
        !before.contains(&certificate_fingerprint(&idp.certificate_pem)),
        "the IdP's certificate is gone: {before}"
    );
    let client = Client::new();

    let done = client
        .sign_in_with_pysaml2(&broker, &idp, "jane@example.com", &pysaml2::JANE)
        .await;

    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account", "signed in and redirected to");
    let after = cli_stdout(&broker, &["saml", "show"], "");
    assert!(
        after.contains(&certificate_fingerprint(&idp.certificate_pem)),
        "the IdP's certificate from its metadata: {after}"
    );
}

/// Returns the URL that starts an IdP-initiated sign-in at SimpleSAMLphp for
/// the broker.
fn idp_initiated_url(idp: &SimpleSamlPhp, broker: &Broker) -> String {
    let mut url = url::Url::parse(&idp.sso_url).expect("IdP URL");
    url.query_pairs_mut()
        .append_pair("spentityid", &broker.url("/saml/metadata"));
    url.to_string()
}

#[tokio::test]
async fn unsolicited_response_signs_in_when_allowed() {
    let Some((broker, idp)) =
        setup_simplesamlphp(Signing::Response, &["--allow-unsolicited", "true"])
    else {
        return;
    };
    let client = Client::new();

    let answer = sign_in_at_simplesamlphp(
        &idp,
        &idp_initiated_url(&idp, &broker),
        &simplesamlphp::JANE,
    )
    .await;
    let done = client
        .post_to_acs(&broker, &answer.saml_response, &answer.relay_state)
        .await;

    let xml = String::from_utf8(
        BASE64
            .decode(answer.saml_response.as_bytes())
            .expect("base64 response"),
    )
    .expect("UTF-8 response");
    assert!(
        !xml.contains("InResponseTo"),
        "the response answers no request: {xml}"
    );
    assert_eq!(answer.relay_state, "", "no RelayState");
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/account", "signed in and redirected to");
    let account = client.account(&broker).await.expect("signed in");
    assert_eq!(
        element_text(&account, "email").as_deref(),
        Some("jane@example.com"),
        "signed-in user: {account}"
    );
}

#[tokio::test]
async fn unsolicited_response_rejected_by_default() {
    let Some((broker, idp)) = setup_simplesamlphp(Signing::Response, &[]) else {
        return;
    };
    let client = Client::new();

    let answer = sign_in_at_simplesamlphp(
        &idp,
        &idp_initiated_url(&idp, &broker),
        &simplesamlphp::JANE,
    )
    .await;
    let rejected = client
        .post_to_acs(&broker, &answer.saml_response, &answer.relay_state)
        .await;

    assert_eq!(
        rejected.status,
        StatusCode::BAD_REQUEST,
        "{}",
        rejected.body
    );
    assert!(
        rejected
            .body
            .contains("unsolicited responses are not allowed"),
        "error page: {}",
        rejected.body
    );
    assert_eq!(client.account(&broker).await, None, "nobody is signed in");
}
