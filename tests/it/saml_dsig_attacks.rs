//! Attacks on the XML signature checks behind `validate()`: forged
//! identities, signature wrapping, parser and canonicalisation confusion,
//! and messages built to make canonicalisation expensive. The file also
//! contains documents in the shapes other IdPs send, which libxmlsec1 and the
//! broker must both accept.

use chrono::{DateTime, Duration, Utc};
use openssl::x509::X509;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};
use unified_login::connector::saml::certs::{SigningCertificate, parse_certificates};
use unified_login::connector::saml::dsig::SignatureError;
use unified_login::connector::saml::response::{ResponseError, VerifiedAssertion};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use crate::saml_builder::{
    ACS, ENTRA_CERT, ENTRA_KEY, IDP, REQUEST_ID, SP, Shape, Signed, UPN, build, sign,
    validate_for_sp,
};

const ASSERTION_ID: &str = "_9f8e7d6c-1111-4000-8000-00000000bbbb";
const VICTIM: &str = "ceo@contoso.example";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn run_with(
    xml: &str,
    identity_attribute: Option<&str>,
) -> Result<VerifiedAssertion, ResponseError> {
    let certificates: Vec<SigningCertificate> = parse_certificates(ENTRA_CERT).unwrap();
    validate_for_sp(xml, &certificates, identity_attribute, now())
}

fn run(xml: &str) -> Result<VerifiedAssertion, ResponseError> {
    run_with(xml, Some(ENTRA_UPN_CLAIM))
}

fn identity(xml: &str) -> Result<String, ResponseError> {
    run(xml).map(|verified| verified.identity)
}

/// Returns whether libxmlsec1 (through samael) verifies the first signature in `xml`
/// with the Entra test certificate, treating `ID` attributes as IDs.
fn libxmlsec_verifies(xml: &str) -> bool {
    let der = X509::from_pem(ENTRA_CERT.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    Crypto::verify_signed_xml(xml, &CertificateDer::from(der), Some("ID")).is_ok()
}

fn strip_declaration(signed: &str) -> String {
    signed
        .replacen(r#"<?xml version="1.0"?>"#, "", 1)
        .trim()
        .to_owned()
}

/// Builds the Entra-shaped response with only the assertion signed.
fn entra() -> String {
    build(&Shape::entra(now()))
}

/// Builds the Entra-shaped response with only the Response signed.
fn entra_response_signed() -> String {
    let mut shape = Shape::entra(now());
    shape.signed = Signed::Response;
    build(&shape)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Builds an unsigned Shibboleth/Okta-shaped response: prefixed SAML names, `ds:`-prefixed
/// signature, an `ec:InclusiveNamespaces` list naming `xs`, and `xsi:type`
/// values. `assertion_extra` goes into the Assertion start tag,
/// `value_extra` into the UPN AttributeValue start tag and `transforms`
/// replaces the default transform list when given.
fn okta_template(assertion_extra: &str, value_extra: &str, transforms: Option<&str>) -> String {
    let issued = time(now());
    let end = time(now() + Duration::minutes(60));
    let not_before = time(now() - Duration::minutes(5));
    let transforms = transforms.map(str::to_owned).unwrap_or_else(|| {
        r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></ds:Transform>"#.to_owned()
    });
    format!(
        r##"<saml2p:Response xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" Destination="{ACS}" ID="_resp1" InResponseTo="{REQUEST_ID}" IssueInstant="{issued}" Version="2.0"><saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{IDP}</saml2:Issuer><saml2p:Status><saml2p:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></saml2p:Status><saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="{ASSERTION_ID}" IssueInstant="{issued}" Version="2.0"{assertion_extra}><saml2:Issuer>{IDP}</saml2:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{ASSERTION_ID}"><ds:Transforms>{transforms}</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature><saml2:Subject><saml2:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">{UPN}</saml2:NameID><saml2:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml2:SubjectConfirmationData InResponseTo="{REQUEST_ID}" NotOnOrAfter="{end}" Recipient="{ACS}"/></saml2:SubjectConfirmation></saml2:Subject><saml2:Conditions NotBefore="{not_before}" NotOnOrAfter="{end}"><saml2:AudienceRestriction><saml2:Audience>{SP}</saml2:Audience></saml2:AudienceRestriction></saml2:Conditions><saml2:AuthnStatement AuthnInstant="{issued}" SessionIndex="{ASSERTION_ID}"><saml2:AuthnContext><saml2:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml2:AuthnContextClassRef></saml2:AuthnContext></saml2:AuthnStatement><saml2:AttributeStatement><saml2:Attribute Name="{ENTRA_UPN_CLAIM}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri"><saml2:AttributeValue xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string"{value_extra}>{UPN}</saml2:AttributeValue></saml2:Attribute></saml2:AttributeStatement></saml2:Assertion></saml2p:Response>"##
    )
}

fn okta_signed(assertion_extra: &str, value_extra: &str) -> String {
    strip_declaration(&sign(
        &okta_template(assertion_extra, value_extra, None),
        ENTRA_KEY,
    ))
}

// ---------------------------------------------------------------------------
// Baselines
// ---------------------------------------------------------------------------

#[test]
fn attack_baselines_verify() {
    assert_eq!(identity(&entra()), Ok(UPN.to_owned()));
    assert_eq!(identity(&entra_response_signed()), Ok(UPN.to_owned()));
    let okta = okta_signed("", "");
    assert!(libxmlsec_verifies(&okta));
    assert_eq!(identity(&okta), Ok(UPN.to_owned()));
}

// ---------------------------------------------------------------------------
// Forgery and signature wrapping
// ---------------------------------------------------------------------------

/// Replaces the signed assertion's UPN everywhere inside it.
fn forge_identity(xml: &str) -> String {
    xml.replace(UPN, VICTIM)
}

#[test]
fn wrapping_forged_assertion_before_signed_one() {
    let xml = entra();
    let start = xml.find("<Assertion").unwrap();
    let end = xml.find("</Assertion>").unwrap() + "</Assertion>".len();
    let signed = &xml[start..end];
    let forged = forge_identity(signed).replace(ASSERTION_ID, "_forged");
    for wrapped in [
        // Forged assertion first, signed one after it.
        format!("{}{forged}{}", &xml[..start], &xml[start..]),
        // Signed assertion inside Extensions, forged one in its place.
        format!("{}{forged}{}", &xml[..start], &xml[end..]).replacen(
            "<samlp:Status>",
            &format!("<samlp:Extensions>{signed}</samlp:Extensions><samlp:Status>"),
            1,
        ),
        // Signed assertion in the forged one's Advice.
        format!(
            "{}{}{}",
            &xml[..start],
            forged.replacen(
                "<Subject>",
                &format!("<Advice>{signed}</Advice><Subject>"),
                1
            ),
            &xml[end..]
        ),
    ] {
        assert!(run(&wrapped).is_err(), "wrapped response accepted");
    }
}

#[test]
fn wrapping_with_original_hidden_by_escaped_namespace() {
    // A character reference in a namespace name must resolve to the same
    // namespace as the plain name, so that escaping cannot hide the signed
    // assertion from the assertion count.
    let xml = entra();
    let start = xml.find("<Assertion").unwrap();
    let end = xml.find("</Assertion>").unwrap() + "</Assertion>".len();
    let signed = &xml[start..end];
    let hidden = signed.replacen(
        r#"xmlns="urn:oasis:names:tc:SAML:2.0:assertion""#,
        r#"xmlns="urn:oasis:names:tc:SAML:2.0:assertio&#110;""#,
        1,
    );
    let hidden_signature = hidden.replacen(
        r#"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#""#,
        r#"<Signature xmlns="http://www.w3.org/2000/09/xmldsig&#x23;""#,
        1,
    );
    let forged = forge_identity(signed);
    for original in [&hidden, &hidden_signature] {
        for wrapped in [
            format!("{}{forged}{}", &xml[..start], &xml[end..]).replacen(
                "<samlp:Status>",
                &format!("<samlp:Extensions>{original}</samlp:Extensions><samlp:Status>"),
                1,
            ),
            format!(
                "{}{}{}",
                &xml[..start],
                forged.replacen(
                    "<Subject>",
                    &format!("<Advice>{original}</Advice><Subject>"),
                    1
                ),
                &xml[end..]
            ),
        ] {
            assert!(
                run(&wrapped).is_err(),
                "wrapped response accepted: {wrapped}"
            );
        }
    }
}

#[test]
fn forged_identity_in_response_signed_shell() {
    // Only the Response is signed, so a changed NameID must break the digest.
    let xml = entra_response_signed();
    assert!(run(&forge_identity(&xml)).is_err());
}

#[test]
fn duplicate_attributes_are_rejected() {
    let xml = entra();
    let doubled_id = xml.replacen(
        &format!(r#"ID="{ASSERTION_ID}""#),
        &format!(r#"ID="{ASSERTION_ID}" ID="_other""#),
        1,
    );
    assert!(matches!(run(&doubled_id), Err(ResponseError::Malformed(_))));
    let doubled_uri = xml.replacen(
        &format!(r##"URI="#{ASSERTION_ID}""##),
        &format!(r##"URI="#{ASSERTION_ID}" URI="#_x""##),
        1,
    );
    assert!(matches!(
        run(&doubled_uri),
        Err(ResponseError::Malformed(_))
    ));
}

#[test]
fn duplicate_namespace_declarations_are_rejected() {
    let xml = entra().replacen(
        r#"<Assertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion""#,
        r#"<Assertion xmlns="urn:evil" xmlns="urn:oasis:names:tc:SAML:2.0:assertion""#,
        1,
    );
    assert!(run(&xml).is_err());
}

#[test]
fn equivalent_encodings_keep_the_signed_identity() {
    // CDATA, character references and entity references leave the
    // canonical form unchanged, so they verify but cannot change the
    // identity.
    let xml = entra();
    let name_id_cdata = xml.replacen(
        &format!(">{UPN}</NameID>"),
        &format!("><![CDATA[{UPN}]]></NameID>"),
        1,
    );
    assert_eq!(identity(&name_id_cdata), Ok(UPN.to_owned()));
    let char_ref = xml.replace("jane.doe@", "&#x6A;ane.doe&#64;");
    assert_eq!(identity(&char_ref), Ok(UPN.to_owned()));
    // Splitting the NameID with an empty CDATA section also changes nothing.
    let split = xml.replacen("jane.doe@", "jane<![CDATA[]]>.doe@", 1);
    assert_eq!(
        run_with(&split, None).map(|v| v.name_id),
        Ok(UPN.to_owned())
    );
}

#[test]
fn comment_and_pi_in_signed_content_are_rejected() {
    let xml = entra();
    let comment = xml.replacen("jane.doe@", "jane.doe<!---->@", 1);
    assert_eq!(run(&comment), Err(ResponseError::Comment));
    let pi = xml.replacen("jane.doe@", "jane.doe<?x y?>@", 1);
    assert!(run(&pi).is_err());
    let doctype = format!("<!DOCTYPE r [<!ENTITY e \"x\">]>{xml}");
    assert_eq!(run(&doctype), Err(ResponseError::Doctype));
    let unknown_entity = xml.replacen("jane.doe@", "&e;jane.doe@", 1);
    assert!(matches!(
        run(&unknown_entity),
        Err(ResponseError::Malformed(_))
    ));
}

#[test]
fn rebinding_prefix_inside_signed_info_is_rejected() {
    let xml = okta_signed("", "");
    let rebound = xml.replacen("<ds:Reference ", r#"<ds:Reference xmlns:ds="urn:evil" "#, 1);
    assert!(run(&rebound).is_err());
    // A redundant redeclaration of the same binding leaves the canonical
    // form unchanged, so it must still verify and keep the identity.
    let redundant = xml.replacen(
        "<ds:Reference ",
        r#"<ds:Reference xmlns:ds="http://www.w3.org/2000/09/xmldsig#" "#,
        1,
    );
    assert_eq!(identity(&redundant), Ok(UPN.to_owned()));
}

#[test]
fn digest_value_with_child_element_is_rejected() {
    let xml = entra();
    let start = xml.find("<DigestValue>").unwrap() + "<DigestValue>".len();
    let split = format!("{}<x/>{}", &xml[..start + 4], &xml[start + 4..]);
    assert!(run(&split).is_err());
}

#[test]
fn key_info_ignored_object_rejected() {
    let xml = entra().replacen(
        "</SignatureValue>",
        "</SignatureValue><KeyInfo><KeyName>attacker</KeyName></KeyInfo>",
        1,
    );
    assert_eq!(identity(&xml), Ok(UPN.to_owned()));
    // The profile allows only KeyInfo after SignatureValue, so an Object is
    // rejected.
    // Keys from KeyInfo are covered by certificate_in_key_info_is_not_trusted.
    let object = entra().replacen(
        "</SignatureValue>",
        "</SignatureValue><Object><x/></Object>",
        1,
    );
    assert!(run(&object).is_err());
}

#[test]
fn xml_declaration_in_the_middle_is_rejected() {
    // An XML declaration is legal only at the very start, and libxml2
    // rejects one elsewhere.
    let xml = entra().replacen(
        "<samlp:Status>",
        r#"<?xml version="1.0"?><samlp:Status>"#,
        1,
    );
    assert!(
        run(&xml).is_err(),
        "a misplaced XML declaration was accepted"
    );
}

#[test]
fn less_than_in_attribute_value_is_rejected() {
    // XML forbids `<` in an attribute value, and libxml2 rejects the document.
    let xml = entra().replacen(
        r#"Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress""#,
        r#"Format="a<b""#,
        1,
    );
    assert!(
        run(&xml).is_err(),
        "a raw '<' in an attribute value was accepted"
    );
}

#[test]
fn forbidden_character_reference_is_rejected() {
    // &#0;, &#x1; and &#xFFFE; are not XML 1.0 characters, and libxml2
    // rejects them.
    for reference in ["&#0;", "&#xFFFE;", "&#x1;"] {
        let xml = entra().replacen("jane.doe@", &format!("jane{reference}.doe@"), 1);
        assert!(run(&xml).is_err(), "{reference} was accepted");
    }
}

// ---------------------------------------------------------------------------
// Cost before the signature is checked
// ---------------------------------------------------------------------------

/// Builds the Entra response with `filler` inserted at the start of the
/// AttributeStatement, which breaks the digest, so `validate()` must reject
/// it. Adds `root_extra` to the Response start tag and replaces the
/// Transforms element when `transforms` is given.
fn entra_with_filler(root_extra: &str, filler: &str, transforms: Option<&str>) -> String {
    let mut xml = entra().replacen(
        "<samlp:Response ",
        &format!("<samlp:Response {root_extra} "),
        1,
    );
    if let Some(transforms) = transforms {
        let start = xml.find("<Transforms>").unwrap();
        let end = xml.find("</Transforms>").unwrap() + "</Transforms>".len();
        xml = format!("{}{transforms}{}", &xml[..start], &xml[end..]);
    }
    xml.replacen(
        "<AttributeStatement>",
        &format!("<AttributeStatement>{filler}"),
        1,
    )
}

#[test]
fn canonical_form_amplification_is_bounded() {
    // Exclusive canonicalisation writes an inherited binding again on every
    // element that uses it when no output ancestor wrote it, so a long
    // namespace name used by many small elements would make the canonical
    // form far larger than the message.
    let long_name = format!("urn:{}", "a".repeat(20_000));
    let xml = entra_with_filler(
        &format!(r#"xmlns:p="{long_name}""#),
        &"<p:x/>".repeat(5_000),
        None,
    );
    assert!(xml.len() < 192 * 1024, "the message fits a POST");
    assert!(
        matches!(run(&xml), Err(ResponseError::Malformed(detail)) if detail.contains("longer than")),
        "a 20 kB namespace name was accepted"
    );

    // Names below the length limit still repeat; the canonical form stops
    // growing at its bound.
    let name = format!("urn:{}", "a".repeat(1_000));
    let xml = entra_with_filler(
        &format!(r#"xmlns:p="{name}""#),
        &"<p:x/>".repeat(25_000),
        None,
    );
    assert!(xml.len() < 192 * 1024, "the message fits a POST");
    assert_eq!(
        run(&xml),
        Err(ResponseError::SignatureProfile(
            SignatureError::CanonicalTooLarge
        ))
    );
}

#[test]
fn inclusive_prefix_list_and_declarations_are_bounded() {
    // Every listed prefix is looked up on every canonicalised element
    // through the declarations in scope, before the signature is checked.
    let prefixes: Vec<String> = (0..2_000).map(|i| format!("q{i:x}")).collect();
    let transforms = format!(
        r#"<Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><InclusiveNamespaces xmlns="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="{}"/></Transform></Transforms>"#,
        prefixes.join(" ")
    );
    let xml = entra_with_filler("", &"<x/>".repeat(2_000), Some(&transforms));
    assert_eq!(
        run(&xml),
        Err(ResponseError::SignatureProfile(
            SignatureError::TooManyPrefixes
        ))
    );

    let declarations: String = (0..300).map(|i| format!(r#" xmlns:d{i}="u""#)).collect();
    let xml = entra_with_filler(declarations.trim(), "", None);
    assert!(
        matches!(run(&xml), Err(ResponseError::Malformed(detail)) if detail.contains("namespace declarations")),
        "300 namespace declarations were accepted"
    );
}

// ---------------------------------------------------------------------------
// Interoperability: documents libxmlsec1 verifies
// ---------------------------------------------------------------------------

/// Asserts that libxmlsec1 verifies `xml` and that `validate()` accepts it
/// with the expected identity.
fn assert_interoperable(xml: &str) {
    assert!(libxmlsec_verifies(xml), "libxmlsec1 rejects the document");
    assert_eq!(identity(xml), Ok(UPN.to_owned()));
}

#[test]
fn interop_xml_declaration_with_encoding() {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\r\n{}",
        entra()
    );
    assert_interoperable(&xml);
}

#[test]
fn interop_byte_order_mark() {
    let xml = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}",
        entra()
    );
    assert_interoperable(&xml);
}

#[test]
fn interop_okta_shape_with_inclusive_namespaces() {
    assert_interoperable(&okta_signed("", ""));
}

#[test]
fn interop_xml_lang_and_xml_space_attributes() {
    assert_interoperable(&okta_signed(r#" xml:space="default""#, r#" xml:lang="en""#));
}

#[test]
fn interop_explicit_xml_prefix_declaration() {
    assert_interoperable(&okta_signed(
        r#" xmlns:xml="http://www.w3.org/XML/1998/namespace" xml:lang="en""#,
        "",
    ));
}

#[test]
fn interop_attribute_order_by_namespace_not_prefix() {
    // Prefix order (a < z) is the reverse of namespace order, so a sort by
    // prefix breaks the digest.
    assert_interoperable(&okta_signed(
        r#" xmlns:a="urn:z" xmlns:z="urn:a" a:one="1" z:two="2" plain="3""#,
        "",
    ));
}

#[test]
fn interop_default_namespace_in_prefix_list() {
    let transforms = r##"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="#default xs saml2p"/></ds:Transform>"##;
    let xml = strip_declaration(&sign(
        &okta_template("", "", Some(transforms)).replacen(
            "<saml2p:Response ",
            r#"<saml2p:Response xmlns="urn:default:ns" "#,
            1,
        ),
        ENTRA_KEY,
    ));
    assert_interoperable(&xml);
}

#[test]
fn interop_signed_info_prefix_list() {
    let xml = okta_template("", "", None).replacen(
        r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
        r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="saml2 xs"/></ds:CanonicalizationMethod>"#,
        1,
    );
    assert_interoperable(&strip_declaration(&sign(&xml, ENTRA_KEY)));
}

#[test]
fn interop_unicode_line_separators_in_text_and_attributes() {
    // XML 1.0 normalises only CR and CR LF; NEL and LINE SEPARATOR stay.
    assert_interoperable(&okta_signed(
        " FriendlyName=\"a\u{85}b\u{2028}c\"",
        " Label=\"x\u{85}y\u{2028}z\"",
    ));
    let xml = okta_template("", "", None).replacen(
        "<saml2:Attribute ",
        "<saml2:Attribute FriendlyName=\"n\u{85}\u{2028}\" ",
        1,
    );
    let xml = xml.replacen(
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
        "urn:x\u{85}y\u{2028}z",
        1,
    );
    assert_interoperable(&strip_declaration(&sign(&xml, ENTRA_KEY)));
}

#[test]
fn interop_carriage_returns_in_signature_value() {
    // Some signers wrap base64 lines with "&#13;\n" instead of "\n".
    let xml = okta_signed("", "");
    let start = xml.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
    let end = xml.find("</ds:SignatureValue>").unwrap();
    let compact: String = xml[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let wrapped: Vec<String> = compact
        .as_bytes()
        .chunks(76)
        .map(|chunk| String::from_utf8(chunk.to_vec()).unwrap())
        .collect();
    let xml = format!(
        "{}{}{}",
        &xml[..start],
        wrapped.join("&#13;\n"),
        &xml[end..]
    );
    assert_interoperable(&xml);
}

#[test]
fn interop_escaped_namespace_name() {
    // A character reference in a namespace declaration is legal XML, and
    // libxmlsec1 verifies the signature unchanged.
    let xml = okta_signed("", "").replacen(
        r#"xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs"#,
        r#"xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertio&#110;" xmlns:xs"#,
        1,
    );
    assert_interoperable(&xml);
}

#[test]
fn interop_escaped_signature_namespace_name() {
    let xml = okta_signed("", "").replacen(
        r#"xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#,
        r#"xmlns:ds="http://www.w3.org/2000/09/xmldsig&#35;""#,
        1,
    );
    assert_interoperable(&xml);
}

#[test]
fn enveloped_transform_alone_rejected() {
    // libxmlsec1 applies inclusive canonicalisation when no canonicalisation
    // transform follows the enveloped one. The profile requires exclusive
    // canonicalisation, which every IdP tested sends.
    let transforms =
        r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#;
    let xml = strip_declaration(&sign(&okta_template("", "", Some(transforms)), ENTRA_KEY));
    assert!(libxmlsec_verifies(&xml));
    let error = run(&xml).unwrap_err();
    assert_eq!(
        error,
        ResponseError::SignatureProfile(SignatureError::Transforms)
    );
    assert!(
        error.to_string().contains("exclusive canonicalisation"),
        "{error}"
    );
}

#[test]
fn interop_pretty_printed_okta_with_crlf() {
    let xml = okta_template("", "", None).replace("><", ">\r\n  <");
    let signed = strip_declaration(&sign(&xml, ENTRA_KEY));
    assert_interoperable(&signed);
}
