//! CL Auth through SAML end to end: the real binary, a real SAML IdP on
//! loopback (pysaml2 shaped like Entra ID, and SimpleSAMLphp), and a client
//! that follows the redirects and forms as a browser does.

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;

use crate::harness::{Broker, Options, PASSWORD, csrf_token};
use crate::peers::pysaml2::{self, Pysaml2Idp};

/// A broker with the pysaml2 IdP configured and `jane@example.com` (login
/// ID `jane`) enabled for CL Auth.
pub struct SamlSetup {
    pub broker: Broker,
    pub idp: Pysaml2Idp,
}

pub fn setup(options: Options, extra_settings: &[&str]) -> Option<SamlSetup> {
    let mut broker = Broker::prepare(options);
    let idp = Pysaml2Idp::start(&broker.url("/saml/metadata"), &broker.url("/saml/acs"))?;
    let cert_path = broker.data_dir().join("idp.pem");
    std::fs::write(&cert_path, &idp.certificate_pem).expect("write IdP certificate");
    let mut args = vec![
        "saml",
        "set",
        "--name",
        "Contoso",
        "--sso-url",
        &idp.sso_url,
        "--entity-id",
        &idp.entity_id,
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
    broker.add_user("jane", "jane@example.com");
    let enabled = broker.cli(&["cl-auth", "enable", "jane"], "");
    assert!(
        enabled.status.success(),
        "cl-auth enable: {}",
        String::from_utf8_lossy(&enabled.stderr)
    );
    broker.serve();
    Some(SamlSetup { broker, idp })
}

pub struct Client {
    pub http: reqwest::Client,
}

pub struct Page {
    pub status: StatusCode,
    pub location: String,
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
        Page {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::read(self.http.get(url).send().await.expect("GET")).await
    }

    pub async fn post(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        Self::read(self.http.post(url).form(fields).send().await.expect("POST")).await
    }

    /// Types `identifier` on the broker's first page and returns the answer.
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
