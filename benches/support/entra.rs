//! Builds SAML responses shaped like Microsoft Entra ID's defaults for an
//! enterprise application, and signs them with a key pair made at run time.
//!
//! The shape: an unsigned Response around one Assertion signed with
//! RSA-SHA256, a SHA-256 digest and exclusive canonicalization, the signing
//! certificate in KeyInfo, an emailAddress NameID, a bearer
//! SubjectConfirmation with InResponseTo, and Entra's claim URIs as
//! attributes. Entra's issuer is `https://sts.windows.net/<tenant ID>/`; the
//! tenant ID here is a placeholder.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use data_encoding::BASE64;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use samael::crypto::{Crypto, CryptoProvider};

/// Placeholder directory (tenant) ID.
pub const TENANT_ID: &str = "00000000-0000-4000-8000-0000000000e1";

/// Returns Entra's issuer (IdP entity ID) for the placeholder tenant.
pub fn idp_entity_id() -> String {
    format!("https://sts.windows.net/{TENANT_ID}/")
}

/// A test IdP's RSA-2048 signing key and self-signed certificate.
pub struct IdpKey {
    key_der: Vec<u8>,
    pub certificate_pem: String,
    /// The certificate's DER in base64, as KeyInfo and IdP metadata carry it.
    pub certificate_base64: String,
}

impl IdpKey {
    /// Generates a fresh key pair and a certificate valid for one day.
    pub fn generate() -> Self {
        let rsa = Rsa::generate(2048).expect("RSA key");
        let key: PKey<Private> = PKey::from_rsa(rsa).expect("key");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "unified-login benchmark IdP")
            .expect("CN");
        let name = name.build();
        let mut builder = X509::builder().expect("certificate builder");
        builder.set_version(2).expect("version");
        let serial = BigNum::from_u32(rand::random::<u32>())
            .and_then(|number| number.to_asn1_integer())
            .expect("serial");
        builder.set_serial_number(&serial).expect("serial");
        builder.set_subject_name(&name).expect("subject");
        builder.set_issuer_name(&name).expect("issuer");
        builder.set_pubkey(&key).expect("public key");
        builder
            .set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        builder
            .set_not_after(&Asn1Time::days_from_now(1).expect("time"))
            .expect("not after");
        builder
            .sign(&key, MessageDigest::sha256())
            .expect("self-sign");
        let certificate = builder.build();
        Self {
            key_der: key.private_key_to_der().expect("key DER"),
            certificate_pem: String::from_utf8(certificate.to_pem().expect("PEM")).expect("UTF-8"),
            certificate_base64: BASE64.encode(&certificate.to_der().expect("DER")),
        }
    }
}

/// The values of one response that differ between sign-ins.
pub struct ResponseFields<'a> {
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    pub request_id: &'a str,
    pub email: &'a str,
    pub given_name: &'a str,
    pub surname: &'a str,
    pub object_id: &'a str,
    pub now: DateTime<Utc>,
}

fn instant(at: DateTime<Utc>) -> String {
    // Entra writes seven fractional digits; RFC 3339 with microseconds is
    // the closest that chrono offers and all three validators accept it.
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn new_id() -> String {
    format!("_{}", uuid::Uuid::new_v4())
}

fn attribute(name: &str, value: &str) -> String {
    format!(r#"<Attribute Name="{name}"><AttributeValue>{value}</AttributeValue></Attribute>"#)
}

fn signature_template(reference: &str) -> String {
    format!(
        r##"<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><Reference URI="#{reference}"><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></Transforms><DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue></DigestValue></Reference></SignedInfo><SignatureValue></SignatureValue></Signature>"##
    )
}

fn assertion(fields: &ResponseFields<'_>, assertion_id: &str, issuer: &str) -> String {
    let issued = instant(fields.now);
    let not_before = instant(fields.now - Duration::minutes(5));
    let not_on_or_after = instant(fields.now + Duration::minutes(70));
    let display_name = format!("{} {}", fields.given_name, fields.surname);
    let attributes = [
        attribute(
            "http://schemas.microsoft.com/identity/claims/tenantid",
            TENANT_ID,
        ),
        attribute(
            "http://schemas.microsoft.com/identity/claims/objectidentifier",
            fields.object_id,
        ),
        attribute(
            "http://schemas.microsoft.com/identity/claims/displayname",
            &display_name,
        ),
        attribute(
            "http://schemas.microsoft.com/identity/claims/identityprovider",
            issuer,
        ),
        attribute(
            "http://schemas.microsoft.com/claims/authnmethodsreferences",
            "http://schemas.microsoft.com/ws/2008/06/identity/authenticationmethod/password",
        ),
        attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
            fields.given_name,
        ),
        attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
            fields.surname,
        ),
        attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            fields.email,
        ),
        attribute(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            fields.email,
        ),
    ]
    .concat();
    format!(
        r#"<Assertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion" ID="{assertion_id}" IssueInstant="{issued}" Version="2.0"><Issuer>{issuer}</Issuer>{template}<Subject><NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{email}</NameID><SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><SubjectConfirmationData InResponseTo="{request_id}" NotOnOrAfter="{not_on_or_after}" Recipient="{acs_url}"/></SubjectConfirmation></Subject><Conditions NotBefore="{not_before}" NotOnOrAfter="{not_on_or_after}"><AudienceRestriction><Audience>{sp_entity_id}</Audience></AudienceRestriction></Conditions><AttributeStatement>{attributes}</AttributeStatement><AuthnStatement AuthnInstant="{issued}" SessionIndex="{assertion_id}"><AuthnContext><AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</AuthnContextClassRef></AuthnContext></AuthnStatement></Assertion>"#,
        template = signature_template(assertion_id),
        email = fields.email,
        request_id = fields.request_id,
        acs_url = fields.acs_url,
        sp_entity_id = fields.sp_entity_id,
    )
}

fn response(
    fields: &ResponseFields<'_>,
    response_id: &str,
    issuer: &str,
    assertion: &str,
) -> String {
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{response_id}" Version="2.0" IssueInstant="{issued}" Destination="{acs_url}" InResponseTo="{request_id}"><Issuer xmlns="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{assertion}</samlp:Response>"#,
        issued = instant(fields.now),
        acs_url = fields.acs_url,
        request_id = fields.request_id,
    )
}

/// Builds and signs one response, and returns its XML without an XML
/// declaration, as Entra sends it.
pub fn signed_response(key: &IdpKey, fields: &ResponseFields<'_>) -> String {
    let issuer = idp_entity_id();
    let assertion_id = new_id();
    let response_id = new_id();
    let unsigned = response(
        fields,
        &response_id,
        &issuer,
        &assertion(fields, &assertion_id, &issuer),
    );
    let signed = Crypto::sign_xml(&unsigned, &key.key_der).expect("xmlsec signing");

    // KeyInfo sits outside SignedInfo, so adding it after signing leaves the
    // signature valid.
    let key_info = format!(
        "</SignatureValue><KeyInfo><X509Data><X509Certificate>{}</X509Certificate></X509Data></KeyInfo>",
        key.certificate_base64
    );
    let with_key_info = signed.replacen("</SignatureValue>", &key_info, 1);
    let start = with_key_info
        .find("<samlp:Response")
        .expect("signed response has its root element");
    with_key_info[start..].trim().to_owned()
}

/// Returns IdP metadata that lists `key`'s certificate for signing, for
/// validators that read the IdP from metadata.
pub fn idp_metadata(key: &IdpKey, sso_url: &str) -> String {
    format!(
        r#"<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data><X509Certificate>{certificate}</X509Certificate></X509Data></KeyInfo></KeyDescriptor><NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</NameIDFormat><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}"/></IDPSSODescriptor></EntityDescriptor>"#,
        entity_id = idp_entity_id(),
        certificate = key.certificate_base64,
    )
}
