//! A pysaml2 SAML 2.0 identity provider (IdP) that behaves like a Microsoft
//! Entra ID enterprise application with its default settings, on a free
//! loopback port.
//!
//! [`Pysaml2Idp::start`] writes the users [`JANE`] and [`OMAR`] to a JSON
//! file in a fresh temporary folder and runs `tests/peers/pysaml2/idp.py`
//! with Python 3. The IdP trusts exactly one service provider (SP). It signs
//! the Assertion and not the Response, with RSA-SHA256 and a SHA-256 digest.
//! The NameID has the emailAddress format and contains the user's email, and
//! the attributes are named by Entra ID's claim URIs ([`CLAIM_NAME`] and
//! others). The IdP keeps no login sessions, so every AuthnRequest shows the
//! login form, whose email field shows the `login_hint` query parameter.

// The SAML SP tests that use this IdP come later, and not every test uses
// every helper.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::process::{LogFile, Peer, PeerProcess, PortInUse, missing_peer};
use super::{json_string, read_login_hints};

const IDP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pysaml2/idp.py");

const INSTALL_HINT: &str = "run `python3 -m pip install -r tests/peers/pysaml2/requirements.txt` \
     and install the Debian package xmlsec1";

/// Where the IdP writes its stdout and stderr.
const IDP_LOG: &str = "idp.log";

const PEER: Peer = Peer {
    name: "the pysaml2 IdP",
    dir_prefix: "pysaml2-idp-",
    ready_path: "/metadata",
    logs: &[LogFile {
        heading: "pysaml2 IdP log",
        path: IDP_LOG,
    }],
    // `idp.py` exits with status 3 when its port is already in use.
    port_in_use: PortInUse::ExitCode(3),
};

/// Names of the fields of the IdP's login form, the same as on Entra ID's
/// sign-in page.
pub const EMAIL_FIELD: &str = "loginfmt";
pub const PASSWORD_FIELD: &str = "passwd";
/// The hidden field that ties the form to the pending AuthnRequest.
pub const STATE_FIELD: &str = "state";

/// The text that the login form shows after a wrong email or password.
pub const LOGIN_FAILED_MESSAGE: &str = "Your account or password is incorrect.";

pub const EMAIL_ADDRESS_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Attribute names in each Assertion. Each attribute has one value.
pub const CLAIM_NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
pub const CLAIM_EMAIL_ADDRESS: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";
pub const CLAIM_GIVEN_NAME: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname";
pub const CLAIM_SURNAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname";
pub const CLAIM_TENANT_ID: &str = "http://schemas.microsoft.com/identity/claims/tenantid";
pub const CLAIM_OBJECT_ID: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
pub const CLAIM_DISPLAY_NAME: &str = "http://schemas.microsoft.com/identity/claims/displayname";
pub const CLAIM_IDENTITY_PROVIDER: &str =
    "http://schemas.microsoft.com/identity/claims/identityprovider";
pub const CLAIM_AUTHN_METHODS: &str = "http://schemas.microsoft.com/claims/authnmethodsreferences";

/// The value of [`CLAIM_TENANT_ID`], fixed in `idp.py`.
pub const TENANT_ID: &str = "5f0c6a52-8d1e-4b7a-9c3e-2a6d8e4f1b90";

/// A user of the IdP.
#[derive(Clone, Copy, Debug)]
pub struct IdpUser {
    /// The login name, the NameID and the value of [`CLAIM_NAME`] and
    /// [`CLAIM_EMAIL_ADDRESS`].
    pub email: &'static str,
    pub password: &'static str,
    pub given_name: &'static str,
    pub surname: &'static str,
    /// The value of [`CLAIM_OBJECT_ID`].
    pub object_id: &'static str,
}

pub const JANE: IdpUser = IdpUser {
    email: "jane@example.com",
    password: "jane-idp-password",
    given_name: "Jane",
    surname: "Doe",
    object_id: "3c1f9a7e-52d4-4b8e-a0f6-9e2d7c4b1a58",
};

pub const OMAR: IdpUser = IdpUser {
    email: "omar@example.com",
    password: "omar-idp-password",
    given_name: "Omar",
    surname: "Haddad",
    object_id: "8b6e2d41-c9a3-4f70-b5d8-1e7a3c9f6b24",
};

pub const USERS: [IdpUser; 2] = [JANE, OMAR];

/// A running pysaml2 IdP. Dropping it kills Python and deletes the run
/// folder.
pub struct Pysaml2Idp {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// The IdP entity ID, which is also the URL of its metadata.
    pub entity_id: String,
    /// The SingleSignOnService URL for the HTTP-Redirect binding.
    pub sso_url: String,
    /// PEM of the certificate whose key signs the Assertions.
    pub certificate_pem: String,
    process: PeerProcess,
}

impl Pysaml2Idp {
    /// Starts an IdP that sends its Responses to `acs_url` with the HTTP-POST
    /// binding, for the SP whose entity ID is `sp_entity_id`.
    ///
    /// Returns `None`, after printing why, when Python 3, pysaml2 or xmlsec1
    /// is missing, unless the environment variable `CI` is `true` or `1`.
    /// Then it panics, so that CI cannot pass without running the SAML tests.
    /// It also panics when three starts in a row do not serve the metadata
    /// within 30 s each.
    pub fn start(sp_entity_id: &str, acs_url: &str) -> Option<Self> {
        if let Err(reason) = check_installation() {
            return missing_peer(
                "SAML peer test",
                &format!("{reason}; {INSTALL_HINT} to run it"),
            );
        }

        let process = PeerProcess::start(&PEER, |root, port| {
            idp_command(root, port, sp_entity_id, acs_url)
        });
        let base_url = process.base_url();
        Some(Self {
            entity_id: format!("{base_url}/metadata"),
            sso_url: format!("{base_url}/sso"),
            certificate_pem: include_str!("../../peers/pysaml2/idp-pysaml2.crt").to_owned(),
            base_url,
            process,
        })
    }

    pub fn metadata_url(&self) -> String {
        self.entity_id.clone()
    }

    /// Fetches the IdP's SAML 2.0 metadata XML over HTTP. The request blocks
    /// the calling thread, which is brief on loopback.
    pub fn metadata_xml(&self) -> String {
        match self.process.http_get("/metadata") {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!(
                "GET {} returned HTTP status {status}\n{body}\n{}",
                self.entity_id,
                self.logs()
            ),
            Err(error) => panic!("GET {} failed: {error}\n{}", self.entity_id, self.logs()),
        }
    }

    /// Returns every `login_hint` query parameter that reached the
    /// SingleSignOnService URL, oldest first. The IdP records each hint
    /// before it checks the request, so hints of rejected requests are here
    /// too.
    pub fn login_hints(&self) -> Vec<String> {
        // idp.py writes each hint through urllib.parse.quote, one per line.
        read_login_hints(&self.process.run_dir().join("login-hints.txt"))
    }

    /// Returns the IdP's log: one line for each HTTP request, every
    /// AuthnRequest and Response in full, and every error.
    pub fn log(&self) -> String {
        self.process.read_log(IDP_LOG)
    }

    /// Returns the run folder, which contains `users.json`, `idp.log` and
    /// `login-hints.txt`.
    pub fn run_dir(&self) -> &Path {
        self.process.run_dir()
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// Writes the users file into the run folder `root` and builds the command
/// that runs `idp.py` on `port`.
fn idp_command(root: &Path, port: u16, sp_entity_id: &str, acs_url: &str) -> Command {
    let users_path = root.join("users.json");
    fs::write(&users_path, users_json(&USERS))
        .unwrap_or_else(|error| panic!("write {}: {error}", users_path.display()));

    let mut command = Command::new("python3");
    command
        .arg(IDP_SCRIPT)
        .arg("--port")
        .arg(port.to_string())
        .arg("--sp-entity-id")
        .arg(sp_entity_id)
        .arg("--acs-url")
        .arg(acs_url)
        .arg("--users")
        .arg(&users_path)
        .arg("--login-hints")
        .arg(root.join("login-hints.txt"))
        // Keep Python from writing __pycache__ folders into the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Checks that `python3` runs and can import pysaml2, and that pysaml2 finds
/// the xmlsec1 program, which it calls to sign.
fn check_installation() -> Result<(), String> {
    const PROBE: &str = "\
import sys
try:
    import saml2.sigver
except ImportError:
    sys.exit(3)
try:
    saml2.sigver.get_xmlsec_binary()
except Exception:
    sys.exit(4)
";
    let probe = Command::new("python3")
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Err(error) => Err(format!("python3 not found on PATH: {error}")),
        Ok(status) if status.code() == Some(3) => {
            Err("the Python module saml2 (PyPI package pysaml2) is missing".to_owned())
        }
        Ok(status) if status.code() == Some(4) => Err("xmlsec1 not found on PATH".to_owned()),
        Ok(status) if !status.success() => Err(format!("python3 -c exited with {status}")),
        Ok(_) => Ok(()),
    }
}

/// Renders the users file that `idp.py --users` reads.
fn users_json(users: &[IdpUser]) -> String {
    let entries: Vec<String> = users
        .iter()
        .map(|user| {
            format!(
                "{{\"email\": {}, \"password\": {}, \"given_name\": {}, \"surname\": {}, \"object_id\": {}}}",
                json_string(user.email),
                json_string(user.password),
                json_string(user.given_name),
                json_string(user.surname),
                json_string(user.object_id),
            )
        })
        .collect();
    format!("[\n  {}\n]\n", entries.join(",\n  "))
}

#[cfg(test)]
mod tests {
    //! Checks of the IdP peer itself, driven by hand-built AuthnRequests.

    use data_encoding::BASE64;
    use reqwest::StatusCode;

    use super::*;

    const SP_ENTITY_ID: &str = "http://127.0.0.1:9999/saml/metadata";
    const ACS_URL: &str = "http://127.0.0.1:9999/saml/acs";
    const RELAY_STATE: &str = "relay-state-1";

    /// Returns the base64 body of a PEM certificate on one line, as it
    /// appears in `X509Certificate` elements.
    fn pem_body(pem: &str) -> String {
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect()
    }

    /// Builds an AuthnRequest for the test SP and returns it encoded as the
    /// `SAMLRequest` value of the HTTP-Redirect binding. `extra_attributes`
    /// is added to the AuthnRequest element, for example `IsPassive="true"`.
    fn authn_request(idp: &Pysaml2Idp, id: &str, issuer: &str, extra_attributes: &str) -> String {
        let xml = format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{sso}" AssertionConsumerServiceURL="{ACS_URL}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" {extra_attributes}><saml:Issuer>{issuer}</saml:Issuer><samlp:NameIDPolicy Format="{EMAIL_ADDRESS_FORMAT}" AllowCreate="true"/></samlp:AuthnRequest>"#,
            now = issue_instant(),
            sso = idp.sso_url,
        );
        BASE64.encode(&raw_deflate_uncompressed(xml.as_bytes()))
    }

    /// Encodes `data` as raw DEFLATE (RFC 1951) in a single final block of
    /// type 00, which stores the bytes without compression. Any inflater
    /// reads it, and the test needs no compression library.
    fn raw_deflate_uncompressed(data: &[u8]) -> Vec<u8> {
        let length =
            u16::try_from(data.len()).expect("one uncompressed block contains at most 65535 bytes");
        // The first header bit marks the final block, and the next two bits
        // (zero) select the uncompressed block type.
        let mut encoded = vec![0b0000_0001];
        encoded.extend_from_slice(&length.to_le_bytes());
        encoded.extend_from_slice(&(!length).to_le_bytes());
        encoded.extend_from_slice(data);
        encoded
    }

    /// Returns the current UTC time as an `xs:dateTime` in whole seconds.
    fn issue_instant() -> String {
        let now = time::OffsetDateTime::now_utc();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        )
    }

    /// Returns the unescaped `value` of the first `<input>` whose `name` is
    /// `name`.
    fn input_value(html: &str, name: &str) -> Option<String> {
        let name_attribute = format!(" name=\"{name}\"");
        html.split("<input")
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
            .find(|tag| tag.contains(&name_attribute))
            .and_then(|tag| {
                let start = tag.find(" value=\"")? + " value=\"".len();
                let end = start + tag[start..].find('"')?;
                Some(unescape_html(&tag[start..end]))
            })
    }

    /// Undoes Python's `html.escape`.
    fn unescape_html(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// Returns the text of every `AttributeValue` of the attribute `name`,
    /// whatever namespace prefix the XML uses.
    fn attribute_values(xml: &str, name: &str) -> Vec<String> {
        let Some(start) = xml.find(&format!("Attribute Name=\"{name}\"")) else {
            return Vec::new();
        };
        let attribute = &xml[start..];
        let attribute = &attribute[..attribute.find("Attribute>").unwrap_or(attribute.len())];
        attribute
            .split("AttributeValue ")
            .skip(1)
            .filter_map(|rest| {
                let text = &rest[rest.find('>')? + 1..];
                Some(text[..text.find('<')?].to_owned())
            })
            .collect()
    }

    /// Sends an AuthnRequest to the SingleSignOnService URL and returns the
    /// response.
    async fn send_authn_request(
        client: &reqwest::Client,
        idp: &Pysaml2Idp,
        saml_request: &str,
        hint: Option<&str>,
    ) -> reqwest::Response {
        let mut query = vec![("SAMLRequest", saml_request), ("RelayState", RELAY_STATE)];
        if let Some(hint) = hint {
            query.push(("login_hint", hint));
        }
        client
            .get(&idp.sso_url)
            .query(&query)
            .send()
            .await
            .expect("GET SingleSignOnService")
    }

    /// Posts the login form with `state` and returns the response.
    async fn post_login(
        client: &reqwest::Client,
        idp: &Pysaml2Idp,
        state: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        client
            .post(format!("{}/login", idp.base_url))
            .form(&[
                (STATE_FIELD, state),
                (EMAIL_FIELD, email),
                (PASSWORD_FIELD, password),
            ])
            .send()
            .await
            .expect("POST login form")
    }

    /// Returns the decoded SAMLResponse of an HTTP-POST binding page, after
    /// checking that the page posts it to the ACS URL with the RelayState.
    fn saml_response_from(page: &str) -> String {
        assert!(
            page.contains(&format!("action=\"{ACS_URL}\"")),
            "the POST form does not post to the ACS URL:\n{page}"
        );
        assert!(
            page.contains("type=\"submit\""),
            "the POST form has no submit button for browsers without JavaScript:\n{page}"
        );
        assert_eq!(
            input_value(page, "RelayState").as_deref(),
            Some(RELAY_STATE),
            "RelayState in the POST form"
        );
        let encoded = input_value(page, "SAMLResponse").expect("SAMLResponse field");
        let xml = BASE64
            .decode(encoded.as_bytes())
            .expect("SAMLResponse is base64 on one line");
        String::from_utf8(xml).expect("SAMLResponse is UTF-8 XML")
    }

    /// Logs `user` in through the login form, starting from an AuthnRequest
    /// whose `login_hint` is `hint`, and returns the decoded Response XML.
    async fn log_in(idp: &Pysaml2Idp, user: IdpUser, hint: &str, request_id: &str) -> String {
        let client = reqwest::Client::new();
        let saml_request = authn_request(idp, request_id, SP_ENTITY_ID, "");

        let login_page = send_authn_request(&client, idp, &saml_request, Some(hint)).await;
        assert_eq!(
            login_page.status(),
            StatusCode::OK,
            "login page\n{}",
            idp.logs()
        );
        let login_html = login_page.text().await.expect("login page body");
        assert_eq!(
            input_value(&login_html, EMAIL_FIELD).as_deref(),
            Some(hint),
            "email field of the login form:\n{login_html}"
        );
        let state = input_value(&login_html, STATE_FIELD).expect("state field in the login form");

        let post_page = post_login(&client, idp, &state, user.email, user.password).await;
        assert_eq!(
            post_page.status(),
            StatusCode::OK,
            "after login\n{}",
            idp.logs()
        );
        saml_response_from(&post_page.text().await.expect("POST form body"))
    }

    /// Runs `xmlsec1 --verify` on `xml` with the IdP certificate and returns
    /// whether the Assertion signature is valid.
    fn xmlsec1_verifies(idp: &Pysaml2Idp, xml: &str) -> bool {
        let folder = tempfile::tempdir().expect("temporary folder for xmlsec1");
        let xml_path = folder.path().join("response.xml");
        let cert_path = folder.path().join("idp.crt");
        fs::write(&xml_path, xml).expect("write response.xml");
        fs::write(&cert_path, &idp.certificate_pem).expect("write idp.crt");
        let output = Command::new("xmlsec1")
            .arg("--verify")
            .arg("--pubkey-cert-pem")
            .arg(&cert_path)
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            ])
            .arg(&xml_path)
            .output()
            .expect("run xmlsec1");
        output.status.success()
    }

    #[test]
    fn metadata_lists_entity_certificate_sso() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };

        let xml = idp.metadata_xml();

        assert!(
            xml.contains(&format!("entityID=\"{}\"", idp.entity_id)),
            "entityID:\n{xml}"
        );
        assert!(
            xml.contains(&pem_body(&idp.certificate_pem)),
            "certificate:\n{xml}"
        );
        assert!(
            xml.contains(&format!(
                "SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{}\"",
                idp.sso_url
            )),
            "SingleSignOnService:\n{xml}"
        );
        assert!(
            xml.contains(&format!("NameIDFormat>{EMAIL_ADDRESS_FORMAT}</")),
            "NameIDFormat:\n{xml}"
        );
    }

    #[tokio::test]
    async fn login_signs_assertion_not_response() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };

        let xml = log_in(&idp, JANE, JANE.email, "_request-jane-1").await;

        assert!(
            xml.contains(&format!("Destination=\"{ACS_URL}\"")),
            "Destination:\n{xml}"
        );
        assert!(
            xml.contains(&format!("Recipient=\"{ACS_URL}\"")),
            "Recipient:\n{xml}"
        );
        assert_eq!(
            xml.matches("InResponseTo=\"_request-jane-1\"").count(),
            2,
            "InResponseTo of Response and SubjectConfirmationData:\n{xml}"
        );
        assert_eq!(
            xml.matches(&format!(">{}</", idp.entity_id)).count(),
            3,
            "Issuer of Response and Assertion, and the identityprovider claim:\n{xml}"
        );
        assert!(
            xml.contains(&format!("Audience>{SP_ENTITY_ID}</")),
            "Audience:\n{xml}"
        );
        assert!(
            xml.contains(&format!(
                "NameID Format=\"{EMAIL_ADDRESS_FORMAT}\">{}</",
                JANE.email
            )),
            "NameID:\n{xml}"
        );
        assert!(
            xml.contains("StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\""),
            "status:\n{xml}"
        );
        for (claim, value) in [
            (CLAIM_NAME, JANE.email),
            (CLAIM_EMAIL_ADDRESS, JANE.email),
            (CLAIM_GIVEN_NAME, JANE.given_name),
            (CLAIM_SURNAME, JANE.surname),
            (CLAIM_TENANT_ID, TENANT_ID),
            (CLAIM_OBJECT_ID, JANE.object_id),
            (CLAIM_DISPLAY_NAME, "Jane Doe"),
            (CLAIM_IDENTITY_PROVIDER, idp.entity_id.as_str()),
        ] {
            assert_eq!(
                attribute_values(&xml, claim),
                vec![value.to_owned()],
                "attribute {claim}:\n{xml}"
            );
        }

        assert_eq!(
            xml.matches(":Signature ").count(),
            1,
            "one signature:\n{xml}"
        );
        let signature = xml.find(":Signature ").expect("signature");
        let assertion = xml.find(":Assertion ").expect("assertion");
        assert!(
            signature > assertion,
            "the signature sits in the Assertion, not in the Response:\n{xml}"
        );
        assert!(
            xml.contains(
                "SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\""
            ),
            "signature algorithm:\n{xml}"
        );
        assert!(
            xml.contains("DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\""),
            "digest algorithm:\n{xml}"
        );
        assert!(
            xml.contains(&pem_body(&idp.certificate_pem)),
            "signing certificate in KeyInfo:\n{xml}"
        );
        assert_eq!(idp.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn assertion_signature_verifies_with_xmlsec1() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };

        let xml = log_in(&idp, OMAR, OMAR.email, "_request-omar-1").await;
        let tampered = xml.replace(&format!(">{}</", OMAR.email), &format!(">{}</", JANE.email));

        assert!(xmlsec1_verifies(&idp, &xml), "signature is invalid:\n{xml}");
        assert_ne!(tampered, xml, "tampering changed nothing");
        assert!(
            !xmlsec1_verifies(&idp, &tampered),
            "signature still verifies after the NameID changed:\n{tampered}"
        );
    }

    #[tokio::test]
    async fn login_hint_need_not_match_user() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };

        // The hint only fills in the form, so the user may log in as someone else.
        let xml = log_in(&idp, OMAR, JANE.email, "_request-mismatch-1").await;

        assert_eq!(
            attribute_values(&xml, CLAIM_NAME),
            vec![OMAR.email.to_owned()]
        );
        assert_eq!(idp.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn wrong_password_shows_form_again() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };
        let client = reqwest::Client::new();
        let saml_request = authn_request(&idp, "_request-retry-1", SP_ENTITY_ID, "");
        let login_html = send_authn_request(&client, &idp, &saml_request, None)
            .await
            .text()
            .await
            .expect("login page body");
        let state = input_value(&login_html, STATE_FIELD).expect("state field");

        let retry = post_login(&client, &idp, &state, JANE.email, OMAR.password).await;
        assert_eq!(retry.status(), StatusCode::OK);
        let retry_html = retry.text().await.expect("login page body");
        // Email addresses are compared without regard to case.
        let success = post_login(&client, &idp, &state, "Jane@Example.COM", JANE.password).await;
        let success_html = success.text().await.expect("POST form body");
        let reused = post_login(&client, &idp, &state, JANE.email, JANE.password).await;

        assert!(
            retry_html.contains(LOGIN_FAILED_MESSAGE),
            "error message:\n{retry_html}"
        );
        assert_eq!(input_value(&retry_html, "SAMLResponse"), None);
        assert_eq!(
            input_value(&retry_html, EMAIL_FIELD).as_deref(),
            Some(JANE.email)
        );
        assert_eq!(
            input_value(&retry_html, STATE_FIELD).as_deref(),
            Some(state.as_str())
        );
        let xml = saml_response_from(&success_html);
        assert!(
            xml.contains(&format!(
                "NameID Format=\"{EMAIL_ADDRESS_FORMAT}\">{}</",
                JANE.email
            )),
            "the NameID is the stored email, not the typed one:\n{xml}"
        );
        assert_eq!(
            reused.status(),
            StatusCode::BAD_REQUEST,
            "a second login with the same state"
        );
    }

    #[tokio::test]
    async fn is_passive_gets_no_passive_status() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };
        let client = reqwest::Client::new();
        let saml_request = authn_request(
            &idp,
            "_request-passive-1",
            SP_ENTITY_ID,
            r#"IsPassive="true""#,
        );

        let page = send_authn_request(&client, &idp, &saml_request, None).await;

        assert_eq!(page.status(), StatusCode::OK);
        let xml = saml_response_from(&page.text().await.expect("POST form body"));
        assert!(
            xml.contains("StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:NoPassive\""),
            "status:\n{xml}"
        );
        assert!(
            xml.contains("InResponseTo=\"_request-passive-1\""),
            "InResponseTo:\n{xml}"
        );
        assert!(!xml.contains(":Assertion"), "no Assertion:\n{xml}");
    }

    #[tokio::test]
    async fn force_authn_shows_login_form() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };
        let client = reqwest::Client::new();
        let saml_request = authn_request(
            &idp,
            "_request-force-1",
            SP_ENTITY_ID,
            r#"ForceAuthn="true""#,
        );

        let page = send_authn_request(&client, &idp, &saml_request, Some(OMAR.email)).await;

        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("login page body");
        assert_eq!(input_value(&html, EMAIL_FIELD).as_deref(), Some(OMAR.email));
    }

    #[tokio::test]
    async fn request_from_unknown_sp_is_rejected() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };
        let client = reqwest::Client::new();
        let saml_request = authn_request(
            &idp,
            "_request-stranger-1",
            "http://127.0.0.1:9998/other-sp",
            "",
        );

        let page = send_authn_request(&client, &idp, &saml_request, Some(JANE.email)).await;

        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        let html = page.text().await.expect("error page body");
        assert!(html.contains("unknown SP"), "error page:\n{html}");
        assert_eq!(idp.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn login_hints_keep_special_characters() {
        let Some(idp) = Pysaml2Idp::start(SP_ENTITY_ID, ACS_URL) else {
            return;
        };
        let client = reqwest::Client::new();
        let hints = [
            "jane@example.com",
            "two\nlines & 100% \"quoted\"",
            "",
            "zoë@example.com",
        ];

        // Without a SAMLRequest the IdP rejects each request, but it has
        // recorded the hint before that.
        for hint in hints {
            let response = client
                .get(&idp.sso_url)
                .query(&[("login_hint", hint)])
                .send()
                .await
                .expect("GET SingleSignOnService");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        client
            .get(&idp.sso_url)
            .send()
            .await
            .expect("GET SingleSignOnService");

        assert_eq!(idp.login_hints(), hints.map(str::to_owned).to_vec());
    }
}
