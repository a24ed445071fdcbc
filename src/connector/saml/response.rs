//! Validation of a SAML Response posted to the ACS.
//!
//! Each rule is its own function and the first failure rejects the response.
//! The identity is read only from the canonical bytes whose digest a
//! signature under one of the configured certificates covers, so unsigned
//! elements wrapped around or beside a signed assertion are never trusted.
//! The envelope checks on the raw document only add restrictions.

use chrono::{DateTime, Duration, Utc};
use data_encoding::BASE64;
use openssl::pkey::{PKey, Public};
use samael::schema::{Assertion, Response};

use super::certs::SigningCertificate;
use super::dsig::tree::{Tree, TreeError};
use super::dsig::{self, SignatureError};

const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Largest SAMLResponse accepted, base64-encoded; real ones are a few KiB.
pub const MAX_ENCODED_BYTES: usize = 256 * 1024;
/// Oldest IssueInstant accepted, on top of the clock skew.
const MAX_ASSERTION_AGE_SECONDS: i64 = 300;

/// Reason a response was rejected. The message is for logs and administrators.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("SAMLResponse is larger than {MAX_ENCODED_BYTES} bytes")]
    TooLarge,
    #[error("SAMLResponse is not valid base64")]
    Base64,
    #[error("SAMLResponse is not well-formed XML: {0}")]
    Malformed(String),
    #[error("SAMLResponse contains a DOCTYPE declaration")]
    Doctype,
    #[error("SAMLResponse contains an XML comment, which could alter the NameID")]
    Comment,
    #[error("the document is not a SAML protocol Response")]
    NotAResponse,
    #[error("the IdP returned status {status}: {message}")]
    Status { status: String, message: String },
    #[error("expected exactly one assertion, found {0}")]
    AssertionCount(usize),
    #[error("encrypted assertions are not supported: turn off token encryption at the IdP")]
    EncryptedAssertion,
    #[error("no valid signature from a configured IdP certificate covers the assertion")]
    Signature,
    #[error("the signature was rejected: {0}")]
    SignatureProfile(SignatureError),
    #[error(
        "a Signature element sits outside the Response and the Assertion, or one of them has two"
    )]
    SignaturePlacement,
    #[error("issuer '{found}' is not the IdP entity ID '{expected}'")]
    Issuer { found: String, expected: String },
    #[error("Destination '{found}' is not this ACS URL '{expected}'")]
    Destination { found: String, expected: String },
    #[error(
        "no bearer SubjectConfirmation for this ACS URL (Recipient '{found}', expected '{expected}')"
    )]
    Recipient { found: String, expected: String },
    #[error(
        "the response answers no request (InResponseTo missing) and unsolicited responses are not allowed"
    )]
    Unsolicited,
    #[error("InResponseTo '{found}' does not match the pending request '{expected}'")]
    InResponseTo { found: String, expected: String },
    #[error("the assertion is not valid before {0}")]
    NotYetValid(String),
    #[error("the assertion expired at {0}")]
    Expired(String),
    #[error("the assertion has no AudienceRestriction")]
    NoAudience,
    #[error("audience {found:?} does not include this SP ({expected:?})")]
    Audience {
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("the assertion has no NameID")]
    NoNameId,
    #[error("the assertion has no attribute '{0}'")]
    NoIdentityAttribute(String),
}

/// Facts about this SP and the IdP that response validation needs.
pub struct ValidationContext<'a> {
    pub certificates: &'a [SigningCertificate],
    pub idp_entity_id: &'a str,
    pub acs_url: &'a str,
    /// The SP entity ID first, then any extra accepted audiences.
    pub audiences: &'a [String],
    /// The pending request this browser made, or `None` for an unsolicited response.
    pub expected_request_id: Option<&'a str>,
    pub allow_unsolicited: bool,
    pub clock_skew: Duration,
    pub allow_sha1: bool,
    pub identity_attribute: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// The verified result of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub assertion_id: String,
    pub name_id: String,
    /// The value the identity mapping uses: the NameID or the configured attribute.
    pub identity: String,
    /// When the assertion stops being valid; replay records may be dropped after it.
    pub not_on_or_after: DateTime<Utc>,
    pub in_response_to: Option<String>,
}

/// Decodes the HTTP-POST binding's SAMLResponse value. IdPs wrap base64 at 76
/// columns with CRLF, so all ASCII whitespace is ignored.
pub fn decode_post_binding(encoded: &str) -> Result<String, ResponseError> {
    if encoded.len() > MAX_ENCODED_BYTES {
        return Err(ResponseError::TooLarge);
    }
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = BASE64
        .decode(compact.as_bytes())
        .map_err(|_| ResponseError::Base64)?;
    String::from_utf8(bytes).map_err(|_| ResponseError::Malformed("not UTF-8".into()))
}

/// Returns the InResponseTo of the (unverified) Response element, used only
/// to find the pending request; validation checks it again.
pub fn claimed_in_response_to(xml: &str) -> Option<String> {
    xml.parse::<Response>()
        .ok()
        .and_then(|response| response.in_response_to)
}

/// Validates `xml` against every rule and returns the verified assertion.
pub fn validate(
    xml: &str,
    context: &ValidationContext<'_>,
) -> Result<VerifiedAssertion, ResponseError> {
    let tree = Tree::parse(xml).map_err(|error| match error {
        TreeError::Doctype => ResponseError::Doctype,
        TreeError::Comment => ResponseError::Comment,
        TreeError::Malformed(detail) => ResponseError::Malformed(detail),
        other => ResponseError::Malformed(format!("it contains {other}")),
    })?;
    let assertion_index = check_structure(&tree)?;
    check_status(&tree)?;
    check_envelope(&tree, context)?;

    let assertion = verified_assertion(&tree, assertion_index, context)?;
    check_issuer(assertion.issuer.value.as_deref(), context)?;
    check_issue_instant(&assertion, context)?;
    let not_on_or_after = check_conditions(&assertion, context)?;
    let in_response_to = check_subject_confirmation(&assertion, context)?;
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|subject| subject.name_id.as_ref())
        .map(|name_id| name_id.value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or(ResponseError::NoNameId)?;
    let identity = match context.identity_attribute {
        None => name_id.clone(),
        Some(attribute) => attribute_value(&assertion, attribute)
            .ok_or_else(|| ResponseError::NoIdentityAttribute(attribute.to_owned()))?,
    };
    Ok(VerifiedAssertion {
        assertion_id: assertion.id.clone(),
        name_id,
        identity,
        not_on_or_after,
        in_response_to,
    })
}

/// Checks that the root is a protocol Response and counts assertions at any
/// depth, so that an extra assertion hidden in an extension cannot slip
/// past. Returns the one assertion.
fn check_structure(tree: &Tree) -> Result<usize, ResponseError> {
    if !tree.element(tree.root()).is(PROTOCOL_NS, "Response") {
        return Err(ResponseError::NotAResponse);
    }
    let mut assertions = Vec::new();
    for index in tree.indices() {
        let element = tree.element(index);
        if element.is(ASSERTION_NS, "EncryptedAssertion") {
            return Err(ResponseError::EncryptedAssertion);
        }
        if element.is(ASSERTION_NS, "Assertion") {
            assertions.push(index);
        }
    }
    match assertions[..] {
        [assertion] => Ok(assertion),
        _ => Err(ResponseError::AssertionCount(assertions.len())),
    }
}

/// Finds the first child element of `parent` named `local` in `namespace`.
fn child(tree: &Tree, parent: usize, namespace: &str, local: &str) -> Option<usize> {
    tree.child_elements(parent)
        .find(|&index| tree.element(index).is(namespace, local))
}

fn check_status(tree: &Tree) -> Result<(), ResponseError> {
    let status = child(tree, tree.root(), PROTOCOL_NS, "Status");
    let code = status
        .and_then(|status| child(tree, status, PROTOCOL_NS, "StatusCode"))
        .and_then(|code| tree.element(code).attribute("Value"));
    match code {
        Some(STATUS_SUCCESS) => Ok(()),
        other => Err(ResponseError::Status {
            status: other.unwrap_or("(missing)").to_owned(),
            message: status
                .and_then(|status| child(tree, status, PROTOCOL_NS, "StatusMessage"))
                .map(|message| tree.text(message))
                .unwrap_or_default(),
        }),
    }
}

/// Checks the Response element's own claims. They may be unsigned, so they
/// can only reject, never vouch for anything.
fn check_envelope(tree: &Tree, context: &ValidationContext<'_>) -> Result<(), ResponseError> {
    let response = tree.element(tree.root());
    if let Some(destination) = response.attribute("Destination")
        && destination != context.acs_url
    {
        return Err(ResponseError::Destination {
            found: destination.to_owned(),
            expected: context.acs_url.to_owned(),
        });
    }
    if let Some(issuer) = child(tree, tree.root(), ASSERTION_NS, "Issuer") {
        check_issuer(Some(&tree.text(issuer)), context)?;
    }
    check_in_response_to(response.attribute("InResponseTo"), context)
}

fn check_in_response_to(
    found: Option<&str>,
    context: &ValidationContext<'_>,
) -> Result<(), ResponseError> {
    match (found, context.expected_request_id) {
        (Some(found), Some(expected)) if found == expected => Ok(()),
        (Some(found), Some(expected)) => Err(ResponseError::InResponseTo {
            found: found.to_owned(),
            expected: expected.to_owned(),
        }),
        (Some(found), None) => Err(ResponseError::InResponseTo {
            found: found.to_owned(),
            expected: "(none)".into(),
        }),
        (None, Some(_)) => Ok(()),
        (None, None) if context.allow_unsolicited => Ok(()),
        (None, None) => Err(ResponseError::Unsolicited),
    }
}

/// Verifies every signature in the response and returns the assertion read
/// from signed bytes only: the assertion's own signed form when it carries
/// a signature, otherwise the signed Response's.
fn verified_assertion(
    tree: &Tree,
    assertion: usize,
    context: &ValidationContext<'_>,
) -> Result<Assertion, ResponseError> {
    let keys: Vec<PKey<Public>> = context
        .certificates
        .iter()
        .map(|certificate| certificate.public_key.clone())
        .collect();
    if keys.is_empty() {
        return Err(ResponseError::Signature);
    }
    let mut signed_assertion = None;
    let mut signed_response = None;
    for index in tree.indices() {
        if !tree.element(index).is(dsig::DSIG_NS, "Signature") {
            continue;
        }
        let slot = match tree.element(index).parent {
            Some(parent) if parent == assertion => &mut signed_assertion,
            Some(parent) if parent == tree.root() => &mut signed_response,
            _ => return Err(ResponseError::SignaturePlacement),
        };
        if slot.is_some() {
            return Err(ResponseError::SignaturePlacement);
        }
        let canonical =
            dsig::verify_enveloped(tree, index, &keys, context.allow_sha1).map_err(|error| {
                tracing::debug!(%error, "SAML signature verification failed");
                match error {
                    SignatureError::Mismatch | SignatureError::Digest => ResponseError::Signature,
                    profile => ResponseError::SignatureProfile(profile),
                }
            })?;
        *slot = Some(canonical);
    }
    match (signed_assertion, signed_response) {
        (Some(canonical), _) => canonical
            .parse::<Assertion>()
            .map_err(|error| ResponseError::Malformed(format!("the signed assertion: {error}"))),
        (None, Some(canonical)) => canonical
            .parse::<Response>()
            .map_err(|error| ResponseError::Malformed(format!("the signed response: {error}")))?
            .assertion
            .ok_or(ResponseError::Signature),
        (None, None) => Err(ResponseError::Signature),
    }
}

fn check_issuer(found: Option<&str>, context: &ValidationContext<'_>) -> Result<(), ResponseError> {
    match found {
        Some(found) if found == context.idp_entity_id => Ok(()),
        other => Err(ResponseError::Issuer {
            found: other.unwrap_or("(missing)").to_owned(),
            expected: context.idp_entity_id.to_owned(),
        }),
    }
}

fn check_issue_instant(
    assertion: &Assertion,
    context: &ValidationContext<'_>,
) -> Result<(), ResponseError> {
    let issued = assertion.issue_instant;
    if issued > context.now + context.clock_skew {
        return Err(ResponseError::NotYetValid(issued.to_rfc3339()));
    }
    let oldest = context.now - context.clock_skew - Duration::seconds(MAX_ASSERTION_AGE_SECONDS);
    if issued < oldest {
        return Err(ResponseError::Expired(
            (issued + Duration::seconds(MAX_ASSERTION_AGE_SECONDS)).to_rfc3339(),
        ));
    }
    Ok(())
}

/// Checks the validity window (the skew applies to both ends, because IdP
/// clocks run ahead as often as behind) and the audience. Returns the end of
/// the window.
fn check_conditions(
    assertion: &Assertion,
    context: &ValidationContext<'_>,
) -> Result<DateTime<Utc>, ResponseError> {
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or(ResponseError::NoAudience)?;
    check_window(conditions.not_before, conditions.not_on_or_after, context)?;

    let restrictions = conditions
        .audience_restrictions
        .as_deref()
        .unwrap_or_default();
    if restrictions.is_empty() {
        return Err(ResponseError::NoAudience);
    }
    // Every AudienceRestriction must be satisfied; within one, any Audience.
    for restriction in restrictions {
        if !restriction
            .audience
            .iter()
            .any(|audience| context.audiences.contains(audience))
        {
            return Err(ResponseError::Audience {
                found: restriction.audience.clone(),
                expected: context.audiences.to_vec(),
            });
        }
    }
    Ok(conditions
        .not_on_or_after
        .unwrap_or(assertion.issue_instant + Duration::seconds(MAX_ASSERTION_AGE_SECONDS)))
}

fn check_window(
    not_before: Option<DateTime<Utc>>,
    not_on_or_after: Option<DateTime<Utc>>,
    context: &ValidationContext<'_>,
) -> Result<(), ResponseError> {
    if let Some(not_before) = not_before
        && context.now + context.clock_skew < not_before
    {
        return Err(ResponseError::NotYetValid(not_before.to_rfc3339()));
    }
    if let Some(not_on_or_after) = not_on_or_after
        && context.now - context.clock_skew >= not_on_or_after
    {
        return Err(ResponseError::Expired(not_on_or_after.to_rfc3339()));
    }
    Ok(())
}

/// Finds a bearer SubjectConfirmation addressed to this ACS, within its
/// window and naming the pending request. Returns its InResponseTo.
fn check_subject_confirmation(
    assertion: &Assertion,
    context: &ValidationContext<'_>,
) -> Result<Option<String>, ResponseError> {
    let confirmations = assertion
        .subject
        .as_ref()
        .and_then(|subject| subject.subject_confirmations.as_deref())
        .unwrap_or_default();
    let mut first_error = None;
    for confirmation in confirmations
        .iter()
        .filter(|c| c.method.as_deref() == Some(BEARER))
    {
        let Some(data) = &confirmation.subject_confirmation_data else {
            continue;
        };
        let result = (|| {
            let recipient = data.recipient.as_deref().unwrap_or("(missing)");
            if recipient != context.acs_url {
                return Err(ResponseError::Recipient {
                    found: recipient.to_owned(),
                    expected: context.acs_url.to_owned(),
                });
            }
            // A bearer confirmation must carry its end time (NotOnOrAfter).
            let Some(end) = data.not_on_or_after else {
                return Err(ResponseError::Expired("(no NotOnOrAfter)".into()));
            };
            check_window(data.not_before, Some(end), context)?;
            check_in_response_to(data.in_response_to.as_deref(), context)?;
            if context.expected_request_id.is_some() && data.in_response_to.is_none() {
                return Err(ResponseError::InResponseTo {
                    found: "(missing)".into(),
                    expected: context.expected_request_id.unwrap_or_default().to_owned(),
                });
            }
            Ok(data.in_response_to.clone())
        })();
        match result {
            Ok(in_response_to) => return Ok(in_response_to),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(ResponseError::Recipient {
        found: "(no bearer SubjectConfirmation)".into(),
        expected: context.acs_url.to_owned(),
    }))
}

fn attribute_value(assertion: &Assertion, name: &str) -> Option<String> {
    assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|statement| statement.attributes.iter())
        .filter(|attribute| {
            attribute.name.as_deref() == Some(name)
                || attribute.friendly_name.as_deref() == Some(name)
        })
        .flat_map(|attribute| attribute.values.iter())
        .find_map(|value| {
            value
                .value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        })
}
