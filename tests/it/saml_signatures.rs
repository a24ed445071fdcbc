//! The XML signature profile the ACS accepts: signatures made by libxmlsec1
//! in the shapes real IdPs produce verify, and every departure from the
//! profile is rejected with a reason before any claim is read.

use chrono::{DateTime, Utc};
use data_encoding::BASE64;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509, X509NameBuilder};
use unified_login::connector::saml::certs::{SigningCertificate, parse_certificates};
use unified_login::connector::saml::dsig::SignatureError;
use unified_login::connector::saml::response::{ResponseError, VerifiedAssertion};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use crate::saml_builder::{
    ENTRA_CERT, ENTRA_KEY, OTHER_CERT, OTHER_KEY, Shape, UPN, assertion_xml, build, response_xml,
    sign, validate_for_sp,
};

const ASSERTION_ID: &str = "_9f8e7d6c-1111-4000-8000-00000000bbbb";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn run(xml: &str, certificate_pem: &str) -> Result<VerifiedAssertion, ResponseError> {
    let certificates: Vec<SigningCertificate> = parse_certificates(certificate_pem).unwrap();
    validate_for_sp(xml, &certificates, Some(ENTRA_UPN_CLAIM), now())
}

fn profile_error(result: Result<VerifiedAssertion, ResponseError>) -> SignatureError {
    match result {
        Err(ResponseError::SignatureProfile(error)) => error,
        other => panic!("expected a rejected signature, got {other:?}"),
    }
}

/// Builds the assertion's signature template with the given parts.
fn template(signature_method: &str, transforms: &str) -> String {
    format!(
        r##"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><SignatureMethod Algorithm="{signature_method}"/><Reference URI="#{ASSERTION_ID}"><Transforms>{transforms}</Transforms><DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue></DigestValue></Reference></SignedInfo><SignatureValue></SignatureValue></Signature>"##
    )
}

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ENVELOPED: &str =
    r#"<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#;
const EXCLUSIVE: &str = r#"<Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#;

/// Signs `assertion`, which contains an empty template, inside an unsigned
/// response, as an IdP that signs only the assertion does.
fn signed_response(assertion: &str, key_pem: &str) -> String {
    let shape = Shape::entra(now());
    sign(&response_xml(&shape, assertion, false), key_pem)
        .replacen(r#"<?xml version="1.0"?>"#, "", 1)
        .trim()
        .to_owned()
}

/// Builds the Entra-shaped assertion with `signature` after its Issuer.
fn assertion_with(signature: &str) -> String {
    let plain = assertion_xml(&Shape::entra(now()), ASSERTION_ID, false);
    let issuer_end = plain.find("</Issuer>").unwrap() + "</Issuer>".len();
    format!(
        "{}{signature}{}",
        &plain[..issuer_end],
        &plain[issuer_end..]
    )
}

#[test]
fn pretty_printed_response_with_escapes_verifies() {
    // Line breaks, indentation, escaped characters and non-ASCII text all
    // pass through canonicalisation; a mismatch with libxmlsec1 on any of
    // them breaks the digest.
    let assertion = assertion_with(&template(RSA_SHA256, &format!("{ENVELOPED}{EXCLUSIVE}")))
        .replace("><", ">\n    <")
        .replace(
            "<AttributeValue>Jane</AttributeValue>",
            "<AttributeValue>J&amp;ne &lt;Zoë&gt; \"ß\" &#13;&#x9;é</AttributeValue>",
        )
        .replace(
            r#"Name="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname""#,
            "Name=\"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname\" \
             FriendlyName=\"a&quot;b&#10;c\td\"",
        );
    let xml = signed_response(&assertion, ENTRA_KEY).replace('\n', "\r\n");
    let verified = run(&xml, ENTRA_CERT).expect("libxmlsec1's signature verifies");
    assert_eq!(verified.identity, UPN);

    let tampered = xml.replace("Zoë", "Zoe");
    assert_eq!(run(&tampered, ENTRA_CERT), Err(ResponseError::Signature));
}

#[test]
fn inclusive_namespace_prefix_list_is_honoured() {
    // The xs prefix appears only in an attribute value, so exclusive
    // canonicalisation writes its binding only because the list names it.
    let transforms = format!(
        r#"{ENVELOPED}<Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><InclusiveNamespaces xmlns="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs xsi"/></Transform>"#
    );
    let assertion = assertion_with(&template(RSA_SHA256, &transforms)).replace(
        "<AttributeValue>Jane</AttributeValue>",
        r#"<AttributeValue xsi:type="xs:string">Jane</AttributeValue>"#,
    );
    let unsigned = response_xml(&Shape::entra(now()), &assertion, false).replacen(
        "<samlp:Response ",
        r#"<samlp:Response xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" "#,
        1,
    );
    let signed = sign(&unsigned, ENTRA_KEY).replacen(r#"<?xml version="1.0"?>"#, "", 1);
    assert_eq!(
        run(&signed, ENTRA_CERT).map(|v| v.identity),
        Ok(UPN.to_owned())
    );
}

#[test]
fn ecdsa_signature_verifies() {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "ecdsa-idp").unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder
        .set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(Asn1Time::days_from_now(0).unwrap().as_ref())
        .unwrap();
    builder
        .set_not_after(Asn1Time::days_from_now(30).unwrap().as_ref())
        .unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let certificate = String::from_utf8(builder.build().to_pem().unwrap()).unwrap();
    let key_pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();

    let assertion = assertion_with(&template(
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        &format!("{ENVELOPED}{EXCLUSIVE}"),
    ));
    let xml = signed_response(&assertion, &key_pem);
    assert_eq!(
        run(&xml, &certificate).map(|v| v.identity),
        Ok(UPN.to_owned())
    );
    assert_eq!(
        run(&xml.replace(UPN, "ceo@contoso.example"), &certificate),
        Err(ResponseError::Signature)
    );
    assert_eq!(run(&xml, ENTRA_CERT), Err(ResponseError::Signature));

    // r and s are each exactly as wide as the curve order (32 bytes for
    // P-256). Padding both with a zero byte encodes the same numbers, but
    // is not an XML-DSig signature value, and libxmlsec1 rejects it.
    let start = xml.find("<SignatureValue>").unwrap() + "<SignatureValue>".len();
    let end = xml.find("</SignatureValue>").unwrap();
    let compact: String = xml[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let value = BASE64.decode(compact.as_bytes()).unwrap();
    assert_eq!(value.len(), 64);
    let (r, s) = value.split_at(32);
    let padded = [&[0][..], r, &[0][..], s].concat();
    let altered = format!("{}{}{}", &xml[..start], BASE64.encode(&padded), &xml[end..]);
    assert_eq!(run(&altered, &certificate), Err(ResponseError::Signature));
}

#[test]
fn certificate_in_key_info_is_not_trusted() {
    // An attacker signs with their own key and ships their certificate in
    // KeyInfo, which is outside the signed bytes.
    let xml = crate::saml_builder::build_with_key(&Shape::entra(now()), ASSERTION_ID, OTHER_KEY);
    let body: String = OTHER_CERT
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let with_key_info = xml.replacen(
        "</SignatureValue>",
        &format!("</SignatureValue><KeyInfo><X509Data><X509Certificate>{body}</X509Certificate></X509Data></KeyInfo>"),
        1,
    );
    assert!(run(&with_key_info, OTHER_CERT).is_ok());
    assert_eq!(
        run(&with_key_info, ENTRA_CERT),
        Err(ResponseError::Signature)
    );
}

#[test]
fn reference_to_other_element_rejected() {
    let xml = build(&Shape::entra(now()));
    let moved = xml.replace(
        &format!(r##"URI="#{ASSERTION_ID}""##),
        r##"URI="#_a1b2c3d4-0000-4000-8000-00000000aaaa""##,
    );
    assert!(matches!(
        profile_error(run(&moved, ENTRA_CERT)),
        SignatureError::ReferenceUri { .. }
    ));
    let whole_document = xml.replace(&format!(r##"URI="#{ASSERTION_ID}""##), r#"URI="""#);
    assert!(matches!(
        profile_error(run(&whole_document, ENTRA_CERT)),
        SignatureError::ReferenceUri { .. }
    ));
}

#[test]
fn duplicate_id_rejected() {
    // A second element with the signed ID is how wrapping attacks make a
    // verifier digest one element and the application read another.
    let xml = build(&Shape::entra(now())).replacen(
        "<samlp:Status>",
        &format!(r#"<samlp:Extensions><Decoy xmlns="urn:decoy" ID="{ASSERTION_ID}"/></samlp:Extensions><samlp:Status>"#),
        1,
    );
    assert_eq!(
        profile_error(run(&xml, ENTRA_CERT)),
        SignatureError::DuplicateId(ASSERTION_ID.to_owned())
    );
}

#[test]
fn transforms_outside_profile_rejected() {
    let xml = build(&Shape::entra(now()));
    let xpath = xml.replacen(
        ENVELOPED,
        r#"<Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><XPath>not(ancestor-or-self::*)</XPath></Transform>"#,
        1,
    );
    assert_eq!(
        profile_error(run(&xpath, ENTRA_CERT)),
        SignatureError::Transforms
    );

    let inclusive = xml.replacen(
        r#"<CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
        r#"<CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>"#,
        1,
    );
    assert!(matches!(
        profile_error(run(&inclusive, ENTRA_CERT)),
        SignatureError::Algorithm { .. }
    ));
}

#[test]
fn second_reference_rejected() {
    let xml = build(&Shape::entra(now()));
    let start = xml.find("<Reference ").unwrap();
    let end = xml.find("</Reference>").unwrap() + "</Reference>".len();
    let doubled = format!("{}{}{}", &xml[..end], &xml[start..end], &xml[end..]);
    assert_eq!(
        profile_error(run(&doubled, ENTRA_CERT)),
        SignatureError::ReferenceCount(2)
    );
}

#[test]
fn misplaced_signature_rejected() {
    let xml = build(&Shape::entra(now()));
    let start = xml.find("<Signature ").unwrap();
    let end = xml.find("</Signature>").unwrap() + "</Signature>".len();
    let signature = &xml[start..end];
    let moved = format!("{}{}", &xml[..start], &xml[end..]).replacen(
        "<samlp:Status>",
        &format!("<samlp:Extensions>{signature}</samlp:Extensions><samlp:Status>"),
        1,
    );
    assert_eq!(
        run(&moved, ENTRA_CERT),
        Err(ResponseError::SignaturePlacement)
    );
}
