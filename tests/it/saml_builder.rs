//! Builds Entra-shaped SAML responses and signs them at run time with the
//! test-only keys in tests/fixtures/keys. Shared by the response tests and
//! the validation benchmark.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use samael::crypto::{Crypto, CryptoProvider};
use unified_login::connector::saml::certs::SigningCertificate;
use unified_login::connector::saml::response::{
    ResponseError, ValidationContext, VerifiedAssertion, validate,
};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

pub const ENTRA_KEY: &str = include_str!("../fixtures/keys/entra-test.key");
pub const ENTRA_CERT: &str = include_str!("../fixtures/keys/entra-test.crt");
pub const OTHER_KEY: &str = include_str!("../fixtures/keys/other-idp.key");
pub const OTHER_CERT: &str = include_str!("../fixtures/keys/other-idp.crt");

pub const IDP: &str = "https://sts.windows.net/00000000-0000-4000-8000-000000000001/";
pub const SP: &str = "https://broker.example.test/saml/metadata";
pub const ACS: &str = "https://broker.example.test/saml/acs";
pub const REQUEST_ID: &str = "_4f1c0e2a9b7d4c3e8a6f5d2b1c0e9f8a";
pub const UPN: &str = "jane.doe@contoso.example";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    Assertion,
    Response,
    Both,
    Nothing,
}

/// The parts of an Entra-shaped response that tests vary.
#[derive(Clone)]
pub struct Shape {
    pub issued: DateTime<Utc>,
    pub issuer: String,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub recipient: String,
    pub audience: String,
    pub not_before: DateTime<Utc>,
    pub not_on_or_after: DateTime<Utc>,
    pub name_id: String,
    pub signed: Signed,
    pub sha1: bool,
    pub status: &'static str,
}

impl Shape {
    pub fn entra(now: DateTime<Utc>) -> Self {
        Self {
            issued: now,
            issuer: IDP.to_owned(),
            destination: Some(ACS.to_owned()),
            in_response_to: Some(REQUEST_ID.to_owned()),
            recipient: ACS.to_owned(),
            audience: SP.to_owned(),
            not_before: now - Duration::minutes(5),
            not_on_or_after: now + Duration::minutes(60),
            name_id: UPN.to_owned(),
            signed: Signed::Assertion,
            sha1: false,
            status: "urn:oasis:names:tc:SAML:2.0:status:Success",
        }
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn signature_template(reference: &str, sha1: bool) -> String {
    let (signature_method, digest_method) = if sha1 {
        (
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        )
    } else {
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
        )
    };
    format!(
        r##"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><SignatureMethod Algorithm="{signature_method}"/><Reference URI="#{reference}"><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></Transforms><DigestMethod Algorithm="{digest_method}"/><DigestValue></DigestValue></Reference></SignedInfo><SignatureValue></SignatureValue></Signature>"##
    )
}

pub fn assertion_xml(shape: &Shape, assertion_id: &str, with_template: bool) -> String {
    let in_response_to = shape
        .in_response_to
        .as_ref()
        .map(|id| format!(r#" InResponseTo="{id}""#))
        .unwrap_or_default();
    let template = if with_template {
        signature_template(assertion_id, shape.sha1)
    } else {
        String::new()
    };
    format!(
        r#"<Assertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion" ID="{assertion_id}" IssueInstant="{issued}" Version="2.0"><Issuer>{issuer}</Issuer>{template}<Subject><NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</NameID><SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><SubjectConfirmationData{in_response_to} NotOnOrAfter="{end}" Recipient="{recipient}"/></SubjectConfirmation></Subject><Conditions NotBefore="{not_before}" NotOnOrAfter="{end}"><AudienceRestriction><Audience>{audience}</Audience></AudienceRestriction></Conditions><AttributeStatement><Attribute Name="http://schemas.microsoft.com/identity/claims/tenantid"><AttributeValue>00000000-0000-4000-8000-000000000001</AttributeValue></Attribute><Attribute Name="{upn_claim}"><AttributeValue>{name_id}</AttributeValue></Attribute><Attribute Name="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"><AttributeValue>Jane</AttributeValue></Attribute><Attribute Name="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"><AttributeValue>Doe</AttributeValue></Attribute></AttributeStatement><AuthnStatement AuthnInstant="{issued}" SessionIndex="{assertion_id}"><AuthnContext><AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</AuthnContextClassRef></AuthnContext></AuthnStatement></Assertion>"#,
        issued = time(shape.issued),
        issuer = shape.issuer,
        name_id = shape.name_id,
        end = time(shape.not_on_or_after),
        recipient = shape.recipient,
        not_before = time(shape.not_before),
        audience = shape.audience,
        upn_claim = ENTRA_UPN_CLAIM,
    )
}

pub fn response_xml(shape: &Shape, assertion: &str, with_template: bool) -> String {
    let response_id = "_a1b2c3d4-0000-4000-8000-00000000aaaa";
    let destination = shape
        .destination
        .as_ref()
        .map(|d| format!(r#" Destination="{d}""#))
        .unwrap_or_default();
    let in_response_to = shape
        .in_response_to
        .as_ref()
        .map(|id| format!(r#" InResponseTo="{id}""#))
        .unwrap_or_default();
    let template = if with_template {
        signature_template(response_id, shape.sha1)
    } else {
        String::new()
    };
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{response_id}" Version="2.0" IssueInstant="{issued}"{destination}{in_response_to}><Issuer xmlns="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</Issuer>{template}<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertion}</samlp:Response>"#,
        issued = time(shape.issued),
        issuer = shape.issuer,
        status = shape.status,
    )
}

fn key_der(pem: &str) -> Vec<u8> {
    openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())
        .unwrap()
        .private_key_to_der()
        .unwrap()
}

/// Signs every empty signature template in `xml` with libxmlsec1.
pub fn sign(xml: &str, key_pem: &str) -> String {
    Crypto::sign_xml(xml, &key_der(key_pem)).expect("xmlsec signing")
}

/// Builds the response for `shape`, signed as `shape.signed` requests with `key_pem`.
pub fn build_with_key(shape: &Shape, assertion_id: &str, key_pem: &str) -> String {
    let sign_assertion = matches!(shape.signed, Signed::Assertion | Signed::Both);
    let sign_response = matches!(shape.signed, Signed::Response | Signed::Both);
    let mut assertion = assertion_xml(shape, assertion_id, sign_assertion);
    if sign_assertion {
        // Sign the assertion on its own, so that the response signature (if
        // any) covers the finished assertion signature.
        let signed = sign(&response_xml(shape, &assertion, false), key_pem);
        let start = signed.find("<Assertion").unwrap();
        let end = signed.find("</Assertion>").unwrap() + "</Assertion>".len();
        assertion = signed[start..end].to_owned();
    }
    let response = response_xml(shape, &assertion, sign_response);
    let signed = if sign_response {
        sign(&response, key_pem)
    } else {
        response
    };
    // Drop the XML declaration libxml2 adds, as IdPs send none.
    signed
        .trim_start_matches(|c| c != '<')
        .replacen(r#"<?xml version="1.0"?>"#, "", 1)
        .trim()
        .to_owned()
}

pub fn build(shape: &Shape) -> String {
    build_with_key(shape, "_9f8e7d6c-1111-4000-8000-00000000bbbb", ENTRA_KEY)
}

/// Validates `xml` as the ACS of the SP above does for the pending request
/// `REQUEST_ID`, trusting `certificates`, with the identity read from
/// `identity_attribute` (the NameID when `None`).
pub fn validate_for_sp(
    xml: &str,
    certificates: &[SigningCertificate],
    identity_attribute: Option<&str>,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, ResponseError> {
    let audiences = [SP.to_owned()];
    let context = ValidationContext {
        certificates,
        idp_entity_id: IDP,
        acs_url: ACS,
        audiences: &audiences,
        expected_request_id: Some(REQUEST_ID),
        allow_unsolicited: false,
        clock_skew: Duration::seconds(120),
        allow_sha1: false,
        identity_attribute,
        now,
    };
    validate(xml, &context)
}
