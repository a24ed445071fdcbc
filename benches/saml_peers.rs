//! SAML response validation per second on one core: the broker against
//! pysaml2 and python3-saml, all three on the same Entra-shaped response
//! bytes in the same run.
//!
//! The broker's figure is `decode_post_binding` plus `response::validate`,
//! the checks its ACS makes (signature, issuer, status, destination,
//! conditions, audience, bearer confirmation, InResponseTo). Each peer runs
//! bench/peers/validate_saml.py, which first checks that the library
//! accepts the response and rejects a tampered copy. The broker is measured
//! before and after the peers, and its figure is the mean of both runs.
//! samael's signature check and reduction, which the broker used before it
//! verified signatures itself, is timed on the same response for reference.
//!
//! The Python comes from `BENCH_PYTHON` (bench/run sets it to a virtual
//! environment with the pinned peers), or `python3`. With `taskset` on the
//! PATH, each peer is pinned to the CPU in `BENCH_CPU` (default 1).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use data_encoding::BASE64;
use unified_login::connector::saml::certs::{SigningCertificate, parse_certificates};
use unified_login::connector::saml::request::new_request_id;
use unified_login::connector::saml::response::{
    ResponseError, ValidationContext, decode_post_binding, validate,
};
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use samael::crypto::{AllowedSignatureAlgorithm, Crypto, CryptoProvider, ReduceMode};
use support::entra::{self, IdpKey, ResponseFields};

const SP_ENTITY_ID: &str = "http://127.0.0.1:8080/saml/metadata";
const ACS_URL: &str = "http://127.0.0.1:8080/saml/acs";
const IDP_SSO_URL: &str = "http://127.0.0.1:8080/placeholder-idp/saml2";
const EMAIL: &str = "jane.doe@contoso.example";
/// The broker's goal: at least this many times the faster peer.
const GOAL_RATIO: f64 = 10.0;

struct Case {
    response_base64: String,
    tampered_base64: String,
    request_id: String,
    certificates: Vec<SigningCertificate>,
}

/// Validates `encoded` as the broker's ACS does and returns the identity.
fn broker_validate(case: &Case, encoded: &str) -> Result<String, ResponseError> {
    let audiences = vec![SP_ENTITY_ID.to_owned()];
    let idp_entity_id = entra::idp_entity_id();
    let context = ValidationContext {
        certificates: &case.certificates,
        idp_entity_id: &idp_entity_id,
        acs_url: ACS_URL,
        audiences: &audiences,
        expected_request_id: Some(&case.request_id),
        allow_unsolicited: false,
        clock_skew: chrono::Duration::seconds(120),
        allow_sha1: false,
        identity_attribute: Some(ENTRA_UPN_CLAIM),
        now: Utc::now(),
    };
    let xml = decode_post_binding(encoded)?;
    validate(&xml, &context).map(|verified| verified.identity)
}

/// Runs per second of wall-clock time and per second of CPU time.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

impl Rate {
    fn mean(&self, other: &Rate) -> Rate {
        Rate {
            wall: (self.wall + other.wall) / 2.0,
            cpu: (self.cpu + other.cpu) / 2.0,
        }
    }
}

/// Runs `work` on this thread for `seconds` and returns its rate. The CPU
/// time is this process's, which runs no other thread meanwhile.
fn per_second(seconds: u64, mut work: impl FnMut()) -> Rate {
    let deadline = Duration::from_secs(seconds);
    let ticks_started = support::cpu::process_ticks(std::process::id());
    let started = Instant::now();
    let mut iterations: u64 = 0;
    loop {
        work();
        iterations += 1;
        if started.elapsed() >= deadline {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let ticks = support::cpu::process_ticks(std::process::id()) - ticks_started;
    let cpu = ticks as f64 / support::cpu::clock_ticks_per_second();
    Rate {
        wall: iterations as f64 / wall,
        cpu: iterations as f64 / cpu,
    }
}

fn measure_broker(case: &Case, seconds: u64) -> Rate {
    per_second(seconds, || {
        let identity = broker_validate(case, std::hint::black_box(&case.response_base64));
        std::hint::black_box(identity.expect("valid response"));
    })
}

/// Measures samael's signature check and reduction to signed content alone,
/// a part of the work that the broker's whole validation also does.
fn measure_samael_reduction(case: &Case, xml: &str, seconds: u64) -> Rate {
    let certificates: Vec<_> = case
        .certificates
        .iter()
        .map(|certificate| certificate.der.clone())
        .collect();
    per_second(seconds, || {
        let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            std::hint::black_box(xml),
            &certificates,
            ReduceMode::ValidateAndMarkNoAncestors,
            Some(&[AllowedSignatureAlgorithm::RsaSha256]),
        );
        std::hint::black_box(reduced.expect("signature verifies"));
    })
}

struct PeerResult {
    library: String,
    version: String,
    rate: Rate,
    tampered_error: String,
}

fn run_peer(library: &str, case_path: &std::path::Path, seconds: u64) -> PeerResult {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/validate_saml.py");
    let cpu = std::env::var("BENCH_CPU").unwrap_or_else(|_| "1".to_owned());
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    let mut command = if pinned {
        let mut command = Command::new("taskset");
        command.args(["--cpu-list", &cpu, &python]);
        command
    } else {
        Command::new(&python)
    };
    let output = command
        .arg(script)
        .args([
            "--library",
            library,
            "--seconds",
            &seconds.to_string(),
            "--case",
        ])
        .arg(case_path)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {python}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{library} peer failed ({}); run bench/run to install the pinned peers: {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{library} peer printed no JSON ({error}): {stdout}"));
    PeerResult {
        library: library.to_owned(),
        version: report["version"].as_str().unwrap_or("?").to_owned(),
        rate: Rate {
            wall: report["per_second"].as_f64().expect("per_second"),
            cpu: report["per_cpu_second"].as_f64().expect("per_cpu_second"),
        },
        tampered_error: report["tampered_rejected_with"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn main() {
    if !support::bench_mode() {
        println!("saml_peers: not run outside `cargo bench`");
        return;
    }
    let seconds = support::seconds(5);

    let key = IdpKey::generate();
    let request_id = new_request_id();
    let xml = entra::signed_response(
        &key,
        &ResponseFields {
            sp_entity_id: SP_ENTITY_ID,
            acs_url: ACS_URL,
            request_id: &request_id,
            email: EMAIL,
            given_name: "Jane",
            surname: "Doe",
            object_id: "7d3e5f1a-2b4c-4d6e-8f0a-1b2c3d4e5f60",
            now: Utc::now(),
        },
    );
    // The NameID and the name claim both change, so only the signature can
    // tell the tampered copy from the original.
    let tampered = xml.replace(EMAIL, "mallory@contoso.example");
    let certificates = parse_certificates(&key.certificate_pem).expect("generated certificate");
    let case = Case {
        response_base64: BASE64.encode(xml.as_bytes()),
        tampered_base64: BASE64.encode(tampered.as_bytes()),
        request_id,
        certificates,
    };

    assert_eq!(
        broker_validate(&case, &case.response_base64).as_deref(),
        Ok(EMAIL),
        "the broker rejects the generated response"
    );
    assert_eq!(
        broker_validate(&case, &case.tampered_base64),
        Err(ResponseError::Signature),
        "the broker accepts the tampered response"
    );

    let dir = tempfile::tempdir().expect("temporary folder");
    let case_path = dir.path().join("case.json");
    let case_json = serde_json::json!({
        "response_base64": case.response_base64,
        "tampered_base64": case.tampered_base64,
        "request_id": case.request_id,
        "name_id": EMAIL,
        "sp_entity_id": SP_ENTITY_ID,
        "acs_url": ACS_URL,
        "idp_entity_id": entra::idp_entity_id(),
        "idp_sso_url": IDP_SSO_URL,
        "certificate_base64": key.certificate_base64,
        "idp_metadata": entra::idp_metadata(&key, IDP_SSO_URL),
    });
    std::fs::write(&case_path, case_json.to_string()).expect("write case file");

    println!(
        "saml_peers: response of {} bytes ({} base64), {seconds} s per measurement",
        xml.len(),
        case.response_base64.len()
    );
    let broker_before = measure_broker(&case, seconds);
    let peers = [
        run_peer("pysaml2", &case_path, seconds),
        run_peer("python3-saml", &case_path, seconds),
    ];
    let broker_after = measure_broker(&case, seconds);
    let broker = broker_before.mean(&broker_after);
    let reduction = measure_samael_reduction(&case, &xml, seconds);

    println!(
        "saml_peers: broker {:.0} validations/s ({:.1} µs each; runs {:.0} and {:.0}), {:.0} per CPU second",
        broker.wall,
        1e6 / broker.wall,
        broker_before.wall,
        broker_after.wall,
        broker.cpu
    );
    println!(
        "saml_peers: samael's signature check and reduction alone {:.1} µs; the broker's whole validation is {:.1}x faster",
        1e6 / reduction.wall,
        broker.wall / reduction.wall
    );
    for peer in &peers {
        println!(
            "saml_peers: {} {} {:.1} validations/s ({:.1} µs each), {:.1} per CPU second; rejected the tampered copy with {}",
            peer.library,
            peer.version,
            peer.rate.wall,
            1e6 / peer.rate.wall,
            peer.rate.cpu,
            peer.tampered_error
        );
    }
    for peer in &peers {
        let ratio = broker.wall / peer.rate.wall;
        let cpu_ratio = broker.cpu / peer.rate.cpu;
        let verdict = if ratio >= GOAL_RATIO { "met" } else { "missed" };
        println!(
            "summary: SAML validation, broker vs {}: {ratio:.1}x ({:.0}/s vs {:.1}/s, one core each; goal {GOAL_RATIO}x {verdict}); per CPU second {cpu_ratio:.1}x{}",
            peer.library,
            broker.wall,
            peer.rate.wall,
            support::spread_note(broker_before.wall, broker_after.wall)
        );
    }
}
