//! Validation of one Entra-shaped SAML response (assertion signed with
//! RSA-SHA256, UPN as NameID and claim), single-threaded, so the inverse of
//! the time per iteration is responses per second per core.

#[allow(dead_code)]
#[path = "../tests/it/saml_builder.rs"]
mod saml_builder;

use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use unified_login::connector::saml::certs::parse_certificates;
use unified_login::connector::saml::response::{ValidationContext, decode_post_binding, validate};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use saml_builder::{ACS, ENTRA_CERT, IDP, REQUEST_ID, SP, Shape, build};

fn validation(c: &mut Criterion) {
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let xml = build(&Shape::entra(now));
    let encoded = data_encoding::BASE64.encode(xml.as_bytes());
    let certificates = parse_certificates(ENTRA_CERT).expect("certificate");
    let audiences = vec![SP.to_owned()];
    let context = ValidationContext {
        certificates: &certificates,
        idp_entity_id: IDP,
        acs_url: ACS,
        audiences: &audiences,
        expected_request_id: Some(REQUEST_ID),
        allow_unsolicited: false,
        clock_skew: Duration::seconds(120),
        allow_sha1: false,
        identity_attribute: Some(ENTRA_UPN_CLAIM),
        now,
    };

    c.bench_function("saml_validate_entra_response", |b| {
        b.iter(|| {
            let decoded = decode_post_binding(&encoded).expect("base64");
            validate(&decoded, &context).expect("valid response")
        });
    });
}

criterion_group!(benches, validation);
criterion_main!(benches);
