//! SimpleSAMLphp 1.19 as a SAML 2.0 identity provider (IdP) on a free
//! loopback port.
//!
//! [`SimpleSamlPhp::start`] copies the config templates from
//! `tests/peers/simplesamlphp/` and the test-only key pair from
//! `tests/fixtures/keys/` into a fresh temporary folder, writes the run's
//! parameters to `parameters.php` beside them, and serves SimpleSAMLphp's
//! `www/` folder with PHP's built-in web server. The IdP trusts exactly one
//! service provider (SP), and its users are [`JANE`] and [`OMAR`].
//!
//! Unlike stock SimpleSAMLphp, this IdP reads a `login_hint` query parameter
//! on its SingleSignOnService URL: the username field of its login form shows
//! the hint, and [`SimpleSamlPhp::login_hints`] returns every hint that
//! arrived.

// Not every test uses every helper of this API.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::{LogFile, Peer, PeerProcess, PortInUse, missing_peer};
use super::read_login_hints;

/// The web root of Debian's `simplesamlphp` package.
const SIMPLESAMLPHP_WWW: &str = "/usr/share/simplesamlphp/www";

const INSTALL_HINT: &str = "install the Debian packages simplesamlphp, php-cli and php-xml";

/// Where `php -S` writes one line for each request, and PHP's warnings and
/// errors.
const SERVER_LOG: &str = "server.log";
/// Where SimpleSAMLphp writes its own log, as `config/config.php` sets.
const SIMPLESAMLPHP_LOG: &str = "log/simplesamlphp.log";

const PEER: Peer = Peer {
    name: "the SimpleSAMLphp IdP",
    dir_prefix: "simplesamlphp-",
    ready_path: "/saml2/idp/metadata.php",
    logs: &[
        LogFile {
            heading: "php -S output",
            path: SERVER_LOG,
        },
        LogFile {
            heading: "SimpleSAMLphp log",
            path: SIMPLESAMLPHP_LOG,
        },
    ],
    // PHP 8.2's built-in web server exits with status 1 on a taken port and
    // on other start failures alike, so only its output distinguishes them.
    port_in_use: PortInUse::Output("Address already in use"),
};

/// Files copied unchanged into each run folder, by path inside that folder.
const RUN_FILES: &[(&str, &str)] = &[
    (
        "config/config.php",
        include_str!("../../peers/simplesamlphp/config/config.php"),
    ),
    (
        "config/authsources.php",
        include_str!("../../peers/simplesamlphp/config/authsources.php"),
    ),
    (
        "config/LoginHintUserPass.php",
        include_str!("../../peers/simplesamlphp/config/LoginHintUserPass.php"),
    ),
    (
        "metadata/saml20-idp-hosted.php",
        include_str!("../../peers/simplesamlphp/metadata/saml20-idp-hosted.php"),
    ),
    (
        "metadata/saml20-sp-remote.php",
        include_str!("../../peers/simplesamlphp/metadata/saml20-sp-remote.php"),
    ),
    (
        "router.php",
        include_str!("../../peers/simplesamlphp/router.php"),
    ),
    (
        "cert/idp.key",
        include_str!("../../fixtures/keys/idp-simplesamlphp.key"),
    ),
    (
        "cert/idp.crt",
        include_str!("../../fixtures/keys/idp-simplesamlphp.crt"),
    ),
];

/// Empty folders that config.php points SimpleSAMLphp at.
const RUN_FOLDERS: &[&str] = &["log", "data", "tmp", "sessions"];

/// A user of the IdP's `exampleauth:UserPass` source, with the attributes
/// that the IdP releases. The values must match
/// `tests/peers/simplesamlphp/config/authsources.php`.
#[derive(Clone, Copy, Debug)]
pub struct IdpUser {
    /// The login username, and the `email` and `upn` attributes and NameID.
    pub email: &'static str,
    pub password: &'static str,
    pub given_name: &'static str,
    /// The `sn` attribute.
    pub surname: &'static str,
}

pub const JANE: IdpUser = IdpUser {
    email: "jane@example.com",
    password: "jane-idp-password",
    given_name: "Jane",
    surname: "Doe",
};

pub const OMAR: IdpUser = IdpUser {
    email: "omar@example.com",
    password: "omar-idp-password",
    given_name: "Omar",
    surname: "Haddad",
};

/// The element of a successful SAML Response that the IdP signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// `<samlp:Response>` is signed and the assertion inside it is not.
    Response,
    /// `<saml:Assertion>` is signed and the Response around it is not.
    Assertion,
}

impl Signing {
    /// Returns the `signing` value that `metadata/saml20-sp-remote.php` reads.
    fn parameter(self) -> &'static str {
        match self {
            Signing::Response => "response",
            Signing::Assertion => "assertion",
        }
    }
}

/// A running SimpleSAMLphp IdP. Dropping it stops PHP and deletes the run
/// folder.
pub struct SimpleSamlPhp {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// The IdP entity ID, which is also the URL of its metadata.
    pub entity_id: String,
    /// The SingleSignOnService URL for the HTTP-Redirect binding.
    pub sso_url: String,
    /// PEM of the certificate whose key signs the Responses or Assertions.
    pub certificate_pem: String,
    process: PeerProcess,
}

impl SimpleSamlPhp {
    /// Starts an IdP that sends its Responses to `acs_url` with the HTTP-POST
    /// binding, for the SP whose entity ID is `sp_entity_id`.
    ///
    /// Returns `None`, after printing why, when PHP or SimpleSAMLphp is not
    /// installed, unless the environment variable `CI` is `true` or `1`. Then
    /// it panics, so that CI cannot pass without running the SAML tests.
    /// It also panics when three starts in a row do not serve the metadata
    /// within 30 s each.
    pub fn start(sp_entity_id: &str, acs_url: &str, signing: Signing) -> Option<Self> {
        Self::start_with(sp_entity_id, acs_url, signing, None)
    }

    /// Starts an IdP like [`SimpleSamlPhp::start`] that also checks the
    /// signature of every AuthnRequest with `sp_certificate_pem`, and shows
    /// an error page in place of the login form when it is invalid or missing.
    pub fn start_checking_requests(
        sp_entity_id: &str,
        acs_url: &str,
        signing: Signing,
        sp_certificate_pem: &str,
    ) -> Option<Self> {
        Self::start_with(sp_entity_id, acs_url, signing, Some(sp_certificate_pem))
    }

    fn start_with(
        sp_entity_id: &str,
        acs_url: &str,
        signing: Signing,
        sp_certificate_pem: Option<&str>,
    ) -> Option<Self> {
        if let Err(reason) = check_installation() {
            return missing_peer(
                "SAML peer test",
                &format!("{reason}; {INSTALL_HINT} to run it"),
            );
        }

        let process = PeerProcess::start(&PEER, |root, port| {
            write_run_folder(
                root,
                port,
                sp_entity_id,
                acs_url,
                signing,
                sp_certificate_pem,
            );
            php_server_command(root, port)
        });
        let base_url = process.base_url();
        Some(Self {
            entity_id: format!("{base_url}/saml2/idp/metadata.php"),
            sso_url: format!("{base_url}/saml2/idp/SSOService.php"),
            certificate_pem: include_str!("../../fixtures/keys/idp-simplesamlphp.crt").to_owned(),
            base_url,
            process,
        })
    }

    pub fn metadata_url(&self) -> String {
        self.entity_id.clone()
    }

    /// Fetches the IdP's SAML 2.0 metadata XML over HTTP.
    pub async fn metadata_xml(&self) -> String {
        let url = self.metadata_url();
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|error| panic!("GET {url} failed: {error}\n{}", self.logs()));
        let status = response.status();
        assert!(
            status.is_success(),
            "GET {url} returned HTTP status {status}\n{}",
            self.logs()
        );
        response
            .text()
            .await
            .unwrap_or_else(|error| panic!("reading the body of {url} failed: {error}"))
    }

    /// Returns every `login_hint` query parameter that reached the
    /// SingleSignOnService URL, oldest first. The hints are recorded whether
    /// or not the request was a valid SAML request.
    pub fn login_hints(&self) -> Vec<String> {
        // router.php writes each hint through rawurlencode, one per line.
        read_login_hints(&self.process.run_dir().join("login-hints.txt"))
    }

    /// Returns SimpleSAMLphp's own log, which includes every SAML message it
    /// sent or received.
    pub fn log(&self) -> String {
        self.process.read_log(SIMPLESAMLPHP_LOG)
    }

    /// Returns the output of PHP's built-in web server: one line for each
    /// request, and PHP warnings and errors.
    pub fn server_log(&self) -> String {
        self.process.read_log(SERVER_LOG)
    }

    /// Returns the run folder, which contains the generated config and the logs.
    pub fn run_dir(&self) -> &Path {
        self.process.run_dir()
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// Writes the config templates, the key pair and `parameters.php` for a
/// server on `port` into the run folder `root`.
fn write_run_folder(
    root: &Path,
    port: u16,
    sp_entity_id: &str,
    acs_url: &str,
    signing: Signing,
    sp_certificate_pem: Option<&str>,
) {
    for folder in RUN_FOLDERS {
        fs::create_dir_all(root.join(folder)).expect("create a SimpleSAMLphp run folder");
    }
    for (path, contents) in RUN_FILES {
        let target = root.join(path);
        fs::create_dir_all(target.parent().expect("run file has a parent folder"))
            .expect("create a SimpleSAMLphp config folder");
        fs::write(&target, contents)
            .unwrap_or_else(|error| panic!("write {}: {error}", target.display()));
    }

    let base_url = format!("http://127.0.0.1:{port}");
    fs::write(
        root.join("parameters.php"),
        parameters_php(
            &base_url,
            port,
            sp_entity_id,
            acs_url,
            signing,
            sp_certificate_pem,
        ),
    )
    .expect("write parameters.php");
}

/// Builds the `php -S` command that serves SimpleSAMLphp on `port` with the
/// config in the run folder `root`.
fn php_server_command(root: &Path, port: u16) -> Command {
    let mut command = Command::new("php");
    command
        // Keep warnings out of the HTML and in server.log, whatever
        // php.ini sets. Deprecation notices are left out because
        // SimpleSAMLphp 1.19 calls strftime(), deprecated since PHP 8.1,
        // for every line it logs.
        .args(["-d", "display_errors=0", "-d", "log_errors=1"])
        .args(["-d", "error_reporting=E_ALL & ~E_DEPRECATED"])
        .arg("-S")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-t")
        .arg(SIMPLESAMLPHP_WWW)
        .arg(root.join("router.php"))
        .env("SIMPLESAMLPHP_CONFIG_DIR", root.join("config"))
        // With workers, php -S forks children that kill() would not stop.
        .env_remove("PHP_CLI_SERVER_WORKERS");
    command
}

/// Checks that PHP with its DOM extension and SimpleSAMLphp are installed.
fn check_installation() -> Result<(), String> {
    let sso_service = PathBuf::from(SIMPLESAMLPHP_WWW).join("saml2/idp/SSOService.php");
    if !sso_service.is_file() {
        return Err(format!(
            "SimpleSAMLphp is missing: {} not found",
            sso_service.display()
        ));
    }

    // SimpleSAMLphp builds and signs SAML messages with DOMDocument, which
    // Debian ships in php-xml.
    let probe = Command::new("php")
        .args(["-r", "exit(extension_loaded('dom') ? 0 : 3);"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Err(error) => Err(format!("php not found on PATH: {error}")),
        Ok(status) if status.code() == Some(3) => Err("PHP's DOM extension is missing".to_owned()),
        Ok(status) if !status.success() => Err(format!("php -r exited with {status}")),
        Ok(_) => Ok(()),
    }
}

/// Renders `parameters.php`, which the copied config files read.
fn parameters_php(
    base_url: &str,
    port: u16,
    sp_entity_id: &str,
    acs_url: &str,
    signing: Signing,
    sp_certificate_pem: Option<&str>,
) -> String {
    // The base64 body of the PEM block, the form of `certData`.
    let sp_certificate: String = sp_certificate_pem
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let entries = [
        ("base_url", php_string(base_url)),
        ("port", port.to_string()),
        ("secret_salt", php_string(&random_hex(32))),
        ("admin_password", php_string(&random_hex(16))),
        ("sp_entity_id", php_string(sp_entity_id)),
        ("acs_url", php_string(acs_url)),
        ("signing", php_string(signing.parameter())),
        ("sp_certificate", php_string(&sp_certificate)),
    ];

    let mut php = String::from(
        "<?php\n\n// Parameters of one test run of the SimpleSAMLphp IdP.\nreturn [\n",
    );
    for (key, value) in entries {
        php.push_str(&format!("    '{key}' => {value},\n"));
    }
    php.push_str("];\n");
    php
}

/// Quotes `value` as a single-quoted PHP string literal, in which only the
/// backslash and the single quote need escaping.
fn php_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Returns `byte_count` random bytes from the kernel, hex-encoded.
fn random_hex(byte_count: usize) -> String {
    let mut bytes = vec![0_u8; byte_count];
    fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    //! Checks of the IdP peer itself, with a hand-built AuthnRequest.

    use data_encoding::BASE64;
    use reqwest::StatusCode;

    use super::*;

    const SP_ENTITY_ID: &str = "http://127.0.0.1:9999/saml/metadata";
    const ACS_URL: &str = "http://127.0.0.1:9999/saml/acs";
    const EMAIL_ADDRESS_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

    /// Returns the base64 body of a PEM certificate on one line, as it
    /// appears in `<ds:X509Certificate>`.
    fn pem_body(pem: &str) -> String {
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect()
    }

    /// Builds an AuthnRequest with the given ID for the test SP and returns
    /// it encoded as the `SAMLRequest` value of the HTTP-Redirect binding.
    fn authn_request(idp: &SimpleSamlPhp, id: &str) -> String {
        let xml = format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{sso}" AssertionConsumerServiceURL="{ACS_URL}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{SP_ENTITY_ID}</saml:Issuer><samlp:NameIDPolicy Format="{EMAIL_ADDRESS_FORMAT}" AllowCreate="true"/></samlp:AuthnRequest>"#,
            now = issue_instant(),
            sso = idp.sso_url,
        );
        BASE64.encode(&deflate_stored(xml.as_bytes()))
    }

    /// Wraps `data` in one uncompressed ("stored") raw DEFLATE block
    /// (RFC 1951, section 3.2.4), which every inflater accepts.
    fn deflate_stored(data: &[u8]) -> Vec<u8> {
        let length =
            u16::try_from(data.len()).expect("a stored DEFLATE block holds at most 65535 bytes");
        let mut block = vec![0b001]; // BFINAL = 1, BTYPE = 00 (stored)
        block.extend_from_slice(&length.to_le_bytes());
        block.extend_from_slice(&(!length).to_le_bytes());
        block.extend_from_slice(data);
        block
    }

    /// Returns the current UTC time as an `xs:dateTime`.
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
        html.split("<input")
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
            .find(|tag| attribute(tag, "name").as_deref() == Some(name))
            .and_then(|tag| attribute(tag, "value"))
    }

    /// Returns the unescaped value of `name="…"` in a tag's text.
    fn attribute(tag: &str, name: &str) -> Option<String> {
        let needle = format!("{name}=\"");
        let mut search_from = 0;
        while let Some(offset) = tag[search_from..].find(&needle) {
            let start = search_from + offset;
            let preceded_by_space = tag[..start].ends_with(char::is_whitespace);
            let value_start = start + needle.len();
            if preceded_by_space {
                let value_end = value_start + tag[value_start..].find('"')?;
                return Some(unescape_html(&tag[value_start..value_end]));
            }
            search_from = value_start;
        }
        None
    }

    /// Undoes PHP's htmlspecialchars with its default flags.
    fn unescape_html(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&#039;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// Logs `user` in through the IdP's login form, starting from an
    /// AuthnRequest with `login_hint` set to `hint`, and returns the decoded
    /// SAML Response XML.
    async fn log_in(idp: &SimpleSamlPhp, user: IdpUser, hint: &str, request_id: &str) -> String {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("HTTP client");

        let login_page = client
            .get(&idp.sso_url)
            .query(&[
                ("SAMLRequest", authn_request(idp, request_id).as_str()),
                ("RelayState", "relay-state-1"),
                ("login_hint", hint),
            ])
            .send()
            .await
            .expect("GET SingleSignOnService");
        assert_eq!(
            login_page.status(),
            StatusCode::OK,
            "login page\n{}",
            idp.logs()
        );
        let login_url = login_page.url().clone();
        let login_html = login_page.text().await.expect("login page body");
        assert!(
            login_url
                .path()
                .ends_with("/module.php/core/loginuserpass.php"),
            "SingleSignOnService led to {login_url}, expected the login form"
        );
        assert_eq!(
            input_value(&login_html, "username").as_deref(),
            Some(hint),
            "username field of the login form"
        );
        let auth_state =
            input_value(&login_html, "AuthState").expect("AuthState field in the login form");

        let post_page = client
            .post(login_url.as_str())
            .form(&[
                ("username", user.email),
                ("password", user.password),
                ("AuthState", auth_state.as_str()),
            ])
            .send()
            .await
            .expect("POST login form");
        assert_eq!(
            post_page.status(),
            StatusCode::OK,
            "after login\n{}",
            idp.logs()
        );
        let post_html = post_page.text().await.expect("auto-submit form body");
        assert!(
            post_html.contains(&format!("action=\"{ACS_URL}\"")),
            "the auto-submit form does not post to the ACS URL:\n{post_html}"
        );
        assert_eq!(
            input_value(&post_html, "RelayState").as_deref(),
            Some("relay-state-1"),
            "RelayState in the auto-submit form"
        );
        let saml_response = input_value(&post_html, "SAMLResponse").expect("SAMLResponse field");
        let xml = BASE64
            .decode(saml_response.as_bytes())
            .expect("SAMLResponse is base64");
        String::from_utf8(xml).expect("SAMLResponse is UTF-8 XML")
    }

    /// Checks the parts of a Response that do not depend on the signing mode.
    fn assert_response_for(idp: &SimpleSamlPhp, xml: &str, user: IdpUser, request_id: &str) {
        let issuer = format!("<saml:Issuer>{}</saml:Issuer>", idp.entity_id);
        assert_eq!(
            xml.matches(&issuer).count(),
            2,
            "Issuer of Response and Assertion:\n{xml}"
        );
        assert!(
            xml.contains(&format!("Destination=\"{ACS_URL}\"")),
            "Destination:\n{xml}"
        );
        assert!(
            xml.contains(&format!("Recipient=\"{ACS_URL}\"")),
            "Recipient:\n{xml}"
        );
        assert_eq!(
            xml.matches(&format!("InResponseTo=\"{request_id}\""))
                .count(),
            2,
            "InResponseTo of Response and SubjectConfirmationData:\n{xml}"
        );
        assert!(
            xml.contains(&format!("<saml:Audience>{SP_ENTITY_ID}</saml:Audience>")),
            "Audience:\n{xml}"
        );
        assert!(
            xml.contains(&format!(
                "<saml:NameID Format=\"{EMAIL_ADDRESS_FORMAT}\">{}</saml:NameID>",
                user.email
            )),
            "NameID:\n{xml}"
        );
        assert!(
            xml.contains("urn:oasis:names:tc:SAML:2.0:status:Success"),
            "status:\n{xml}"
        );
        for (name, value) in [
            ("email", user.email),
            ("upn", user.email),
            ("givenName", user.given_name),
            ("sn", user.surname),
        ] {
            let attribute = format!(
                "<saml:Attribute Name=\"{name}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\"><saml:AttributeValue xsi:type=\"xs:string\">{value}</saml:AttributeValue></saml:Attribute>"
            );
            assert!(xml.contains(&attribute), "attribute {name}:\n{xml}");
        }
        assert!(
            xml.contains("Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\""),
            "signature algorithm:\n{xml}"
        );
        assert!(
            xml.contains(&pem_body(&idp.certificate_pem)),
            "signing certificate in KeyInfo:\n{xml}"
        );
    }

    #[tokio::test]
    async fn metadata_lists_entity_certificate_sso() {
        let Some(idp) = SimpleSamlPhp::start(SP_ENTITY_ID, ACS_URL, Signing::Response) else {
            return;
        };

        let xml = idp.metadata_xml().await;

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
                "<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{}\"/>",
                idp.sso_url
            )),
            "SingleSignOnService:\n{xml}"
        );
        assert!(
            xml.contains(&format!(
                "<md:NameIDFormat>{EMAIL_ADDRESS_FORMAT}</md:NameIDFormat>"
            )),
            "NameIDFormat:\n{xml}"
        );
    }

    #[tokio::test]
    async fn response_signing_signs_response_only() {
        let Some(idp) = SimpleSamlPhp::start(SP_ENTITY_ID, ACS_URL, Signing::Response) else {
            return;
        };

        let xml = log_in(&idp, JANE, JANE.email, "_request-jane-1").await;

        assert_response_for(&idp, &xml, JANE, "_request-jane-1");
        assert_eq!(
            xml.matches("<ds:Signature ").count(),
            1,
            "one signature:\n{xml}"
        );
        let signature = xml.find("<ds:Signature ").expect("signature");
        let assertion = xml.find("<saml:Assertion ").expect("assertion");
        assert!(
            signature < assertion,
            "the signature sits in the Response, before the Assertion:\n{xml}"
        );
        assert_eq!(idp.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn assertion_signing_signs_assertion_only() {
        let Some(idp) = SimpleSamlPhp::start(SP_ENTITY_ID, ACS_URL, Signing::Assertion) else {
            return;
        };

        let xml = log_in(&idp, OMAR, OMAR.email, "_request-omar-1").await;

        assert_response_for(&idp, &xml, OMAR, "_request-omar-1");
        assert_eq!(
            xml.matches("<ds:Signature ").count(),
            1,
            "one signature:\n{xml}"
        );
        let signature = xml.find("<ds:Signature ").expect("signature");
        let assertion = xml.find("<saml:Assertion ").expect("assertion");
        assert!(
            signature > assertion,
            "the signature sits in the Assertion:\n{xml}"
        );
    }

    #[tokio::test]
    async fn login_hint_need_not_match_user() {
        let Some(idp) = SimpleSamlPhp::start(SP_ENTITY_ID, ACS_URL, Signing::Response) else {
            return;
        };

        // The hint only fills in the form, so the user may log in as someone else.
        let xml = log_in(&idp, OMAR, JANE.email, "_request-mismatch-1").await;

        assert_response_for(&idp, &xml, OMAR, "_request-mismatch-1");
        assert_eq!(idp.login_hints(), vec![JANE.email.to_owned()]);
    }

    #[tokio::test]
    async fn login_hints_keep_special_characters() {
        let Some(idp) = SimpleSamlPhp::start(SP_ENTITY_ID, ACS_URL, Signing::Response) else {
            return;
        };
        let client = reqwest::Client::new();
        let hints = [
            "jane@example.com",
            "two\nlines & 100% \"quoted\"",
            "",
            "zoë@example.com",
        ];

        // Without a SAMLRequest SimpleSAMLphp rejects each request, but the
        // router has recorded the hint before that.
        for hint in hints {
            client
                .get(&idp.sso_url)
                .query(&[("login_hint", hint)])
                .send()
                .await
                .expect("GET SingleSignOnService");
        }
        client
            .get(&idp.sso_url)
            .send()
            .await
            .expect("GET SingleSignOnService");

        assert_eq!(idp.login_hints(), hints.map(str::to_owned).to_vec());
    }
}
