//! The SAML SP key pair kept in the database. Instances that share the
//! database publish one certificate and sign their AuthnRequests with its
//! key. The first start after an upgrade imports the key files that earlier
//! versions created at the default path.
//!
//! Tests with two instances at once run on PostgreSQL whatever engine the
//! other tests use, because only one instance may serve a SQLite file.
//!
//! Most tests check the signatures here as an IdP checks the HTTP-Redirect
//! binding, against the certificate in the SP metadata, so they need no IdP
//! process, and their IdP settings point at a closed port that is never
//! contacted. One test has SimpleSAMLphp check them.

use data_encoding::BASE64;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;
use reqwest::StatusCode;
use unified_login::connector::saml::sp_keys::generate_self_signed;

use crate::harness::{Broker, Options};
use crate::outage::postgres_options;
use crate::peers::simplesamlphp::{Signing, SimpleSamlPhp};
use crate::saml_flow::{Client, IdpFields, add_cl_auth_user, configure_idp};

const EMAIL: &str = "jane@example.com";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// Prepares a broker with an IdP configured and `jane` enabled for CL Auth,
/// without starting it.
fn prepare_with_idp(options: Options) -> Broker {
    let broker = Broker::prepare(options);
    configure_idp(
        &broker,
        &IdpFields {
            sso_url: "http://127.0.0.1:9/sso",
            entity_id: "http://127.0.0.1:9/metadata",
            certificate_pem: include_str!("../fixtures/keys/idp-simplesamlphp.crt"),
        },
        &[],
    );
    add_cl_auth_user(&broker, "jane", EMAIL);
    broker
}

/// Fetches the broker's SP metadata and returns the certificate in it.
async fn metadata_certificate(broker: &Broker) -> X509 {
    let url = broker.url("/saml/metadata");
    let response = reqwest::get(&url).await.expect("GET /saml/metadata");
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    let xml = response.text().await.expect("metadata body");
    let start = xml
        .find("X509Certificate>")
        .unwrap_or_else(|| panic!("no certificate in the metadata: {xml}"))
        + "X509Certificate>".len();
    let end = xml[start..].find("</").expect("end of the certificate") + start;
    let body: String = xml[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = BASE64.decode(body.as_bytes()).expect("base64 certificate");
    X509::from_der(&der).expect("DER certificate")
}

fn der(certificate: &X509) -> Vec<u8> {
    certificate.to_der().expect("DER of the certificate")
}

/// Starts a sign-in for `jane` at `broker` and returns the URL that sends
/// the browser to the IdP with the signed AuthnRequest.
async fn authn_redirect(broker: &Broker) -> String {
    let redirect = Client::new().identify(broker, EMAIL).await;
    assert_eq!(
        redirect.status,
        StatusCode::SEE_OTHER,
        "{}\nlog:\n{}",
        redirect.body,
        broker.log()
    );
    assert!(
        redirect.location.starts_with("http://127.0.0.1:9/sso?"),
        "redirect to the IdP: {}",
        redirect.location
    );
    redirect.location
}

/// Checks the signature of an HTTP-Redirect binding URL as the IdP does:
/// RSA-SHA256 over the URL-encoded `SAMLRequest`, `RelayState` and `SigAlg`
/// parameters exactly as sent, verified with `certificate`'s public key.
fn redirect_signature_verifies(redirect_url: &str, certificate: &X509) -> bool {
    let url = url::Url::parse(redirect_url).expect("absolute URL");
    let query = url.query().expect("query string");
    let raw = |name: &str| {
        query
            .split('&')
            .find(|pair| pair.split_once('=').is_some_and(|(key, _)| key == name))
    };
    let decoded = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {redirect_url}"))
    };
    assert_eq!(decoded("SigAlg"), RSA_SHA256, "signature algorithm");
    let signed_part = ["SAMLRequest", "RelayState", "SigAlg"]
        .iter()
        .filter_map(|name| raw(name))
        .collect::<Vec<_>>()
        .join("&");
    let signature = BASE64
        .decode(decoded("Signature").as_bytes())
        .expect("base64 signature");
    let public_key = certificate.public_key().expect("public key");
    let mut verifier = Verifier::new(MessageDigest::sha256(), &public_key).expect("verifier");
    verifier
        .update(signed_part.as_bytes())
        .expect("hash the signed part");
    verifier.verify(&signature).unwrap_or(false)
}

/// Writes a new key pair to `certs/` in `broker`'s working folder, where
/// earlier versions created it by default, and returns the certificate.
fn write_default_key_files(broker: &Broker, common_name: &str) -> X509 {
    let (key_pem, certificate_pem) = generate_self_signed(common_name).expect("key pair");
    let certs = broker.data_dir().join("certs");
    std::fs::create_dir_all(&certs).expect("create certs folder");
    std::fs::write(certs.join("saml-sp.key"), key_pem).expect("write key");
    std::fs::write(certs.join("saml-sp.crt"), &certificate_pem).expect("write certificate");
    X509::from_pem(certificate_pem.as_bytes()).expect("PEM certificate")
}

#[tokio::test]
async fn instances_sign_with_one_sp_key() {
    let Some((_database, options)) = postgres_options() else {
        return;
    };
    let mut a = prepare_with_idp(options);
    a.serve();
    let mut b = Broker::prepare_sibling(&a);
    b.serve();

    let certificate = metadata_certificate(&a).await;
    assert_eq!(
        der(&metadata_certificate(&b).await),
        der(&certificate),
        "both instances publish the same SP certificate\nA log:\n{}\nB log:\n{}",
        a.log(),
        b.log()
    );
    for (name, broker) in [("A", &a), ("B", &b)] {
        let redirect = authn_redirect(broker).await;
        assert!(
            redirect_signature_verifies(&redirect, &certificate),
            "the metadata certificate verifies the AuthnRequest of instance {name}: {redirect}"
        );
        assert!(
            !broker.data_dir().join("certs").exists(),
            "instance {name} keeps the key pair in the database, not in files"
        );
    }

    let show = b.cli(&["saml", "show"], "");
    let show = String::from_utf8_lossy(&show.stdout);
    let digest = certificate
        .digest(MessageDigest::sha256())
        .expect("fingerprint");
    let line = format!(
        "SP certificate:             SHA-256 {} (in the database)",
        data_encoding::HEXLOWER.encode(&digest)
    );
    assert!(show.contains(&line), "`saml show` prints {line:?}: {show}");
}

#[tokio::test]
async fn default_key_files_imported_on_upgrade() {
    let mut a = prepare_with_idp(Options::default());
    let imported = write_default_key_files(&a, "upgraded-instance");
    a.serve();

    assert_eq!(
        der(&metadata_certificate(&a).await),
        der(&imported),
        "the certificate of the default files is published\nlog:\n{}",
        a.log()
    );
    assert!(
        a.log()
            .contains("imported the SAML SP key pair from files into the database"),
        "the import is logged:\n{}",
        a.log()
    );
    let redirect = authn_redirect(&a).await;
    assert!(
        redirect_signature_verifies(&redirect, &imported),
        "the imported key signs: {redirect}"
    );

    // A second instance with its own, different files uses the imported
    // pair. It takes over from the first, which may share a SQLite file.
    a.stop();
    let mut b = Broker::prepare_sibling(&a);
    let ignored = write_default_key_files(&b, "other-instance");
    b.serve();
    assert_ne!(der(&ignored), der(&imported));
    assert_eq!(
        der(&metadata_certificate(&b).await),
        der(&imported),
        "the pair in the database wins over different files\nlog:\n{}",
        b.log()
    );
    let redirect = authn_redirect(&b).await;
    assert!(
        redirect_signature_verifies(&redirect, &imported),
        "instance B signs with the imported key: {redirect}"
    );
    let warning = b
        .log()
        .lines()
        .find(|line| line.contains("ignoring SAML SP key files"))
        .unwrap_or_else(|| panic!("no warning about the ignored files:\n{}", b.log()))
        .to_owned();
    assert!(warning.contains("WARN"), "logged as a warning: {warning}");
    assert!(
        warning.contains("certs/saml-sp.key"),
        "names the key file: {warning}"
    );
    assert!(
        warning.contains("certs/saml-sp.crt"),
        "names the certificate file: {warning}"
    );
    assert!(
        !warning.contains("PRIVATE KEY"),
        "no key material: {warning}"
    );
    assert!(
        !a.log().contains("PRIVATE KEY") && !b.log().contains("PRIVATE KEY"),
        "no instance logs key material"
    );
}

/// Sends a browser to `redirect_url` at SimpleSAMLphp and returns whether it
/// shows its login form, which it does only for an AuthnRequest it accepts.
async fn simplesamlphp_shows_login(idp: &SimpleSamlPhp, redirect_url: &str) -> bool {
    // Redirects are followed because they all stay within the IdP.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("HTTP client");
    let response = http.get(redirect_url).send().await.expect("GET at the IdP");
    let status = response.status();
    let body = response.text().await.expect("IdP page body");
    let shows_login = status == StatusCode::OK && body.contains("name=\"AuthState\"");
    if !shows_login {
        eprintln!(
            "SimpleSAMLphp returned {status} without a login form; log:\n{}",
            idp.log()
        );
    }
    shows_login
}

/// Returns `redirect_url` with its `Signature` parameter taken from
/// `other_url`, a signature by the right key over a different request.
fn with_signature_of(redirect_url: &str, other_url: &str) -> String {
    let signature_of = |url: &str| {
        let query = url.split_once('?').expect("query string").1;
        query
            .split('&')
            .find(|pair| pair.starts_with("Signature="))
            .expect("Signature parameter")
            .to_owned()
    };
    redirect_url.replace(&signature_of(redirect_url), &signature_of(other_url))
}

#[tokio::test]
async fn simplesamlphp_accepts_both_instances() {
    let Some((_database, options)) = postgres_options() else {
        return;
    };
    let mut a = Broker::prepare(options);
    add_cl_auth_user(&a, "jane", EMAIL);
    a.serve();
    let certificate = metadata_certificate(&a).await;
    let certificate_pem = String::from_utf8(certificate.to_pem().expect("PEM")).expect("UTF-8 PEM");
    let Some(idp) = SimpleSamlPhp::start_checking_requests(
        &a.url("/saml/metadata"),
        &a.url("/saml/acs"),
        Signing::Assertion,
        &certificate_pem,
    ) else {
        return;
    };
    configure_idp(
        &a,
        &IdpFields {
            sso_url: &idp.sso_url,
            entity_id: &idp.entity_id,
            certificate_pem: &idp.certificate_pem,
        },
        &[],
    );
    // A restart loads the new IdP settings without waiting for the cache.
    a.stop();
    a.serve();
    let mut b = Broker::prepare_sibling(&a);
    b.serve();

    let from_a = Client::new().identify(&a, EMAIL).await.location;
    let from_b = Client::new().identify(&b, EMAIL).await.location;
    assert!(
        from_a.starts_with(&idp.sso_url),
        "A redirects to the IdP: {from_a}"
    );
    assert!(
        from_b.starts_with(&idp.sso_url),
        "B redirects to the IdP: {from_b}"
    );
    assert!(
        simplesamlphp_shows_login(&idp, &from_a).await,
        "SimpleSAMLphp accepts the AuthnRequest of instance A"
    );
    assert!(
        simplesamlphp_shows_login(&idp, &from_b).await,
        "SimpleSAMLphp accepts the AuthnRequest of instance B\nB log:\n{}",
        b.log()
    );

    // The IdP does check: a valid signature over another request fails.
    let forged = with_signature_of(&from_b, &from_a);
    assert!(
        !simplesamlphp_shows_login(&idp, &forged).await,
        "SimpleSAMLphp rejects a request whose signature does not match it"
    );
}
