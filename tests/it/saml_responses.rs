//! SAML response validation against Entra-shaped responses that these tests
//! build and sign themselves with the test-only keys in tests/fixtures/keys,
//! including the attacks a service provider must reject.

use chrono::{DateTime, Duration, Utc};
use data_encoding::BASE64;
use unified_login::connector::saml::certs::{SigningCertificate, parse_certificates};
use unified_login::connector::saml::dsig::SignatureError;
use unified_login::connector::saml::response::{
    ResponseError, ValidationContext, VerifiedAssertion, decode_post_binding, validate,
};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use crate::saml_builder::{
    ACS, ENTRA_CERT, IDP, OTHER_CERT, OTHER_KEY, REQUEST_ID, SP, Shape, Signed, UPN, assertion_xml,
    build, build_with_key,
};

fn certificates(pems: &[&str]) -> Vec<SigningCertificate> {
    pems.iter()
        .flat_map(|pem| parse_certificates(pem).unwrap())
        .collect()
}

struct Check {
    certificates: Vec<SigningCertificate>,
    audiences: Vec<String>,
    expected_request_id: Option<&'static str>,
    allow_unsolicited: bool,
    allow_sha1: bool,
    skew: Duration,
    identity_attribute: Option<&'static str>,
    now: DateTime<Utc>,
}

impl Check {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            certificates: certificates(&[ENTRA_CERT]),
            audiences: vec![SP.to_owned()],
            expected_request_id: Some(REQUEST_ID),
            allow_unsolicited: false,
            allow_sha1: false,
            skew: Duration::seconds(120),
            identity_attribute: Some(ENTRA_UPN_CLAIM),
            now,
        }
    }

    fn run(&self, xml: &str) -> Result<VerifiedAssertion, ResponseError> {
        let context = ValidationContext {
            certificates: &self.certificates,
            idp_entity_id: IDP,
            acs_url: ACS,
            audiences: &self.audiences,
            expected_request_id: self.expected_request_id,
            allow_unsolicited: self.allow_unsolicited,
            clock_skew: self.skew,
            allow_sha1: self.allow_sha1,
            identity_attribute: self.identity_attribute,
            now: self.now,
        };
        validate(xml, &context)
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn entra_assertion_signed_is_accepted() {
    let verified = Check::new(now())
        .run(&build(&Shape::entra(now())))
        .expect("valid response");
    assert_eq!(verified.identity, UPN);
    assert_eq!(verified.name_id, UPN);
    assert_eq!(verified.in_response_to.as_deref(), Some(REQUEST_ID));
    assert_eq!(verified.not_on_or_after, now() + Duration::minutes(60));
}

#[test]
fn response_signed_only_is_accepted() {
    let shape = Shape {
        signed: Signed::Response,
        ..Shape::entra(now())
    };
    let verified = Check::new(now())
        .run(&build(&shape))
        .expect("valid response");
    assert_eq!(verified.identity, UPN);
}

#[test]
fn both_signed_is_accepted() {
    let shape = Shape {
        signed: Signed::Both,
        ..Shape::entra(now())
    };
    assert!(Check::new(now()).run(&build(&shape)).is_ok());
}

#[test]
fn unsigned_response_is_rejected() {
    let shape = Shape {
        signed: Signed::Nothing,
        ..Shape::entra(now())
    };
    assert_eq!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Signature)
    );
}

#[test]
fn other_key_is_rejected() {
    let xml = build_with_key(&Shape::entra(now()), "_other", OTHER_KEY);
    assert_eq!(Check::new(now()).run(&xml), Err(ResponseError::Signature));
}

#[test]
fn any_configured_certificate_verifies() {
    let xml = build_with_key(&Shape::entra(now()), "_other", OTHER_KEY);
    let mut check = Check::new(now());
    check.certificates = certificates(&[ENTRA_CERT, OTHER_CERT]);
    assert!(check.run(&xml).is_ok());
}

#[test]
fn no_certificate_verifies_nothing() {
    let mut check = Check::new(now());
    check.certificates.clear();
    assert_eq!(
        check.run(&build(&Shape::entra(now()))),
        Err(ResponseError::Signature)
    );
}

#[test]
fn tampered_name_id_is_rejected() {
    let xml = build(&Shape::entra(now())).replace(UPN, "admin@contoso.example");
    assert_eq!(Check::new(now()).run(&xml), Err(ResponseError::Signature));
}

#[test]
fn comment_in_name_id_is_rejected() {
    // Exclusive canonicalisation drops comments, so the signature still
    // verifies; a parser that reads only the first text node would see
    // "jane.doe@contoso.example" where the IdP meant something longer.
    let shape = Shape {
        name_id: "jane.doe@contoso.example.evil.example".into(),
        ..Shape::entra(now())
    };
    let xml = build(&shape).replace(
        ">jane.doe@contoso.example.evil.example</NameID>",
        ">jane.doe@contoso.example<!---->.evil.example</NameID>",
    );
    assert!(xml.contains("<!---->"));
    assert_eq!(Check::new(now()).run(&xml), Err(ResponseError::Comment));
}

#[test]
fn wrapped_assertion_is_rejected() {
    let genuine = build(&Shape {
        name_id: "guest@contoso.example".into(),
        ..Shape::entra(now())
    });
    let start = genuine.find("<Assertion").unwrap();
    let end = genuine.find("</Assertion>").unwrap() + "</Assertion>".len();
    let signed_assertion = &genuine[start..end];
    // The attacker adds an unsigned assertion for another user and hides the
    // signed one where a careless verifier still finds its ID.
    let forged = assertion_xml(&Shape::entra(now()), "_forged", false);
    let wrapped = format!(
        "{}<samlp:Extensions>{}</samlp:Extensions>{}{}",
        &genuine[..start],
        signed_assertion,
        forged,
        &genuine[end..]
    );
    assert_eq!(
        Check::new(now()).run(&wrapped),
        Err(ResponseError::AssertionCount(2))
    );
}

#[test]
fn two_assertions_are_rejected() {
    let xml = build(&Shape::entra(now()));
    let start = xml.find("<Assertion").unwrap();
    let end = xml.find("</Assertion>").unwrap() + "</Assertion>".len();
    let doubled = format!("{}{}{}", &xml[..end], &xml[start..end], &xml[end..]);
    assert_eq!(
        Check::new(now()).run(&doubled),
        Err(ResponseError::AssertionCount(2))
    );
}

#[test]
fn unsigned_assertion_in_signed_response_shell() {
    // The response is signed over an assertion that the attacker swaps out:
    // the response signature no longer verifies.
    let xml = build(&Shape {
        signed: Signed::Response,
        ..Shape::entra(now())
    });
    let forged = xml.replace(UPN, "ceo@contoso.example");
    assert_eq!(
        Check::new(now()).run(&forged),
        Err(ResponseError::Signature)
    );
}

#[test]
fn encrypted_assertion_is_rejected_clearly() {
    let xml = build(&Shape::entra(now()));
    let start = xml.find("<Assertion").unwrap();
    let end = xml.find("</Assertion>").unwrap() + "</Assertion>".len();
    let encrypted = format!(
        r#"{}<EncryptedAssertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion"><CipherData/></EncryptedAssertion>{}"#,
        &xml[..start],
        &xml[end..]
    );
    let error = Check::new(now()).run(&encrypted).unwrap_err();
    assert_eq!(error, ResponseError::EncryptedAssertion);
    assert!(error.to_string().contains("turn off token encryption"));
}

#[test]
fn wrong_issuer_is_rejected() {
    let shape = Shape {
        issuer: "https://evil.example/".into(),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Issuer { .. })
    ));
}

#[test]
fn wrong_audience_is_rejected() {
    let shape = Shape {
        audience: "https://other-sp.example/".into(),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Audience { .. })
    ));
}

#[test]
fn entra_spn_audience_is_accepted_when_configured() {
    let shape = Shape {
        audience: "spn:11111111-2222-4333-8444-555555555555".into(),
        ..Shape::entra(now())
    };
    let xml = build(&shape);
    let mut check = Check::new(now());
    assert!(matches!(
        check.run(&xml),
        Err(ResponseError::Audience { .. })
    ));
    check
        .audiences
        .push("spn:11111111-2222-4333-8444-555555555555".into());
    assert!(check.run(&xml).is_ok());
}

#[test]
fn wrong_destination_is_rejected() {
    let shape = Shape {
        destination: Some("https://broker.example.test/other".into()),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Destination { .. })
    ));
}

#[test]
fn wrong_recipient_is_rejected() {
    // Behind a TLS-terminating proxy the request arrives over plain HTTP, but
    // the Recipient must still equal the public https ACS URL.
    let shape = Shape {
        recipient: "http://broker.example.test/saml/acs".into(),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Recipient { .. })
    ));
}

#[test]
fn in_response_to_must_match() {
    let shape = Shape {
        in_response_to: Some("_someone_elses_request".into()),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::InResponseTo { .. })
    ));
}

#[test]
fn missing_in_response_to_is_rejected() {
    let shape = Shape {
        in_response_to: None,
        ..Shape::entra(now())
    };
    let error = Check::new(now()).run(&build(&shape)).unwrap_err();
    assert!(
        matches!(&error, ResponseError::InResponseTo { found, .. } if found == "(missing)"),
        "{error:?}"
    );
}

#[test]
fn unsolicited_only_when_allowed() {
    let shape = Shape {
        in_response_to: None,
        ..Shape::entra(now())
    };
    let xml = build(&shape);
    let mut check = Check::new(now());
    check.expected_request_id = None;
    assert_eq!(check.run(&xml), Err(ResponseError::Unsolicited));
    check.allow_unsolicited = true;
    assert!(check.run(&xml).is_ok());
}

#[test]
fn expired_assertion_respects_skew() {
    let shape = Shape::entra(now());
    let xml = build(&shape);
    let end = shape.not_on_or_after;
    // The IssueInstant limit would reject first, so widen the window.
    let mut check = Check::new(end + Duration::seconds(60));
    let fresh = Shape {
        issued: end,
        not_before: end - Duration::hours(2),
        ..shape.clone()
    };
    let fresh_xml = build(&fresh);
    assert!(check.run(&fresh_xml).is_ok(), "inside the skew");
    check.now = end + Duration::seconds(121);
    assert!(
        matches!(check.run(&fresh_xml), Err(ResponseError::Expired(_))),
        "past the skew"
    );
    check.skew = Duration::zero();
    check.now = end;
    assert!(
        matches!(check.run(&fresh_xml), Err(ResponseError::Expired(_))),
        "no skew"
    );
    drop(xml);
}

#[test]
fn not_yet_valid_respects_skew() {
    // An IdP whose clock runs ahead: NotBefore and IssueInstant lie in our future.
    let ahead = now() + Duration::seconds(90);
    let shape = Shape {
        issued: ahead,
        not_before: ahead,
        ..Shape::entra(ahead)
    };
    let xml = build(&shape);
    let mut check = Check::new(now());
    assert!(check.run(&xml).is_ok(), "90 s ahead is inside a 120 s skew");
    check.skew = Duration::seconds(60);
    assert!(matches!(
        check.run(&xml),
        Err(ResponseError::NotYetValid(_))
    ));
}

#[test]
fn old_issue_instant_is_rejected() {
    let shape = Shape {
        issued: now() - Duration::minutes(30),
        ..Shape::entra(now())
    };
    assert!(matches!(
        Check::new(now()).run(&build(&shape)),
        Err(ResponseError::Expired(_))
    ));
}

#[test]
fn sha1_needs_explicit_setting() {
    let shape = Shape {
        sha1: true,
        ..Shape::entra(now())
    };
    let xml = build(&shape);
    let mut check = Check::new(now());
    let error = check.run(&xml).unwrap_err();
    assert!(
        matches!(
            error,
            ResponseError::SignatureProfile(SignatureError::Sha1(_))
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("allow SHA-1"), "{error}");
    check.allow_sha1 = true;
    assert!(check.run(&xml).is_ok());
}

#[test]
fn failed_status_is_reported() {
    let shape = Shape {
        status: "urn:oasis:names:tc:SAML:2.0:status:Responder",
        ..Shape::entra(now())
    };
    let error = Check::new(now()).run(&build(&shape)).unwrap_err();
    assert!(
        matches!(&error, ResponseError::Status { status, .. } if status.ends_with("Responder")),
        "{error:?}"
    );
}

#[test]
fn doctype_is_rejected() {
    let xml = format!(
        "<!DOCTYPE r [<!ENTITY x \"y\">]>{}",
        build(&Shape::entra(now()))
    );
    assert_eq!(Check::new(now()).run(&xml), Err(ResponseError::Doctype));
}

#[test]
fn name_id_is_identity_without_attribute() {
    let mut check = Check::new(now());
    check.identity_attribute = None;
    let verified = check.run(&build(&Shape::entra(now()))).unwrap();
    assert_eq!(verified.identity, UPN);
    check.identity_attribute = Some("http://schemas.example/missing");
    assert!(matches!(
        check.run(&build(&Shape::entra(now()))),
        Err(ResponseError::NoIdentityAttribute(_))
    ));
}

#[test]
fn post_binding_decodes_crlf_wrapped_base64() {
    let xml = build(&Shape::entra(now()));
    let encoded = BASE64.encode(xml.as_bytes());
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect();
    let decoded = decode_post_binding(&wrapped.join("\r\n")).unwrap();
    assert_eq!(decoded, xml);
    assert!(Check::new(now()).run(&decoded).is_ok());
    assert_eq!(
        decode_post_binding("not base64!"),
        Err(ResponseError::Base64)
    );
}
