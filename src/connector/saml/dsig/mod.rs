//! XML signature verification for the SAML profile of XML-DSig.
//!
//! Real IdPs sign a Response or an Assertion with one enveloped signature:
//! one same-document Reference to the signed element's ID, the transforms
//! enveloped-signature and exclusive canonicalisation, RSA or ECDSA with a
//! SHA-2 digest. Anything beyond that profile (XPath, other references,
//! external URIs, keys taken from the message) is rejected rather than
//! interpreted, because signature-wrapping attacks depend on those
//! features. The signer's key is the configured certificate's, parsed once
//! per IdP; KeyInfo in the message is ignored.
//!
//! The verifier returns the canonical bytes it digested, so callers read
//! claims from exactly what was signed.

pub mod c14n;
pub mod tree;

use data_encoding::BASE64;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use subtle::ConstantTimeEq;

use tree::Tree;

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// Maximum number of prefixes in an InclusiveNamespaces list. The IdPs
/// tested name one or two (`xs`, `xsi`), and each is looked up on every
/// canonicalised element.
const MAX_INCLUSIVE_PREFIXES: usize = 16;

/// Reason a signature was rejected. Profile errors name what the IdP sent,
/// so an administrator can change its signing settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Signature element is missing {0}")]
    Missing(&'static str),
    #[error("the Signature element has an unexpected child <{0}>")]
    UnexpectedElement(String),
    #[error("the signature must have exactly one Reference, it has {0}")]
    ReferenceCount(usize),
    #[error("the Reference URI '{found}' does not point at the signed element's ID '{expected}'")]
    ReferenceUri { found: String, expected: String },
    #[error("the signed element's ID '{0}' is used by more than one element")]
    DuplicateId(String),
    #[error("the signed element has no ID attribute")]
    NoId,
    #[error(
        "unsupported {field} '{algorithm}': sign with exclusive canonicalisation and RSA or ECDSA over SHA-256"
    )]
    Algorithm {
        field: &'static str,
        algorithm: String,
    },
    #[error("SHA-1 '{0}' is rejected: sign with SHA-256, or allow SHA-1 in the IdP settings")]
    Sha1(String),
    #[error("the Reference transforms must be enveloped-signature then exclusive canonicalisation")]
    Transforms,
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    #[error("the digest does not match the signed element: it was changed after signing")]
    Digest,
    #[error("the InclusiveNamespaces list names more than {MAX_INCLUSIVE_PREFIXES} prefixes")]
    TooManyPrefixes,
    #[error("the signed content's canonical form is far larger than the message")]
    CanonicalTooLarge,
    #[error("the signature does not verify with any configured IdP certificate")]
    Mismatch,
}

/// A digest algorithm of the profile.
#[derive(Clone, Copy)]
struct Hash {
    digest: fn() -> MessageDigest,
    sha1: bool,
}

const SHA1: Hash = Hash {
    digest: MessageDigest::sha1,
    sha1: true,
};
const SHA256: Hash = Hash {
    digest: MessageDigest::sha256,
    sha1: false,
};
const SHA384: Hash = Hash {
    digest: MessageDigest::sha384,
    sha1: false,
};
const SHA512: Hash = Hash {
    digest: MessageDigest::sha512,
    sha1: false,
};

/// Looks up a DigestMethod algorithm URI.
fn digest_method(uri: &str) -> Option<Hash> {
    match uri {
        "http://www.w3.org/2001/04/xmlenc#sha256" => Some(SHA256),
        "http://www.w3.org/2001/04/xmldsig-more#sha384" => Some(SHA384),
        "http://www.w3.org/2001/04/xmlenc#sha512" => Some(SHA512),
        "http://www.w3.org/2000/09/xmldsig#sha1" => Some(SHA1),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ecdsa,
}

/// Looks up a SignatureMethod algorithm URI.
fn signature_method(uri: &str) -> Option<(KeyKind, Hash)> {
    match uri {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Some((KeyKind::Rsa, SHA256)),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => Some((KeyKind::Rsa, SHA384)),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Some((KeyKind::Rsa, SHA512)),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => Some((KeyKind::Rsa, SHA1)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => Some((KeyKind::Ecdsa, SHA256)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => Some((KeyKind::Ecdsa, SHA384)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => Some((KeyKind::Ecdsa, SHA512)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1" => Some((KeyKind::Ecdsa, SHA1)),
        _ => None,
    }
}

/// Canonicalises `apex`, leaving out `omit`, into a new string.
fn canonical_form(
    tree: &Tree,
    apex: usize,
    omit: Option<usize>,
    prefixes: &[String],
) -> Result<String, SignatureError> {
    let mut out = String::new();
    c14n::exclusive(tree, apex, omit, prefixes, &mut out)
        .map_err(|_| SignatureError::CanonicalTooLarge)?;
    Ok(out)
}

/// Verifies the enveloped `signature`, a child of the element it signs, and
/// returns that element's canonical form without the signature: the exact
/// bytes the digest covers.
pub fn verify_enveloped(
    tree: &Tree,
    signature: usize,
    keys: &[PKey<Public>],
    allow_sha1: bool,
) -> Result<String, SignatureError> {
    let signed = tree
        .element(signature)
        .parent
        .ok_or(SignatureError::Missing("a parent element to sign"))?;
    let signed_id = tree
        .element(signed)
        .attribute("ID")
        .filter(|id| !id.is_empty())
        .ok_or(SignatureError::NoId)?;
    let id_count = tree
        .indices()
        .filter(|&index| tree.element(index).attribute("ID") == Some(signed_id))
        .count();
    if id_count != 1 {
        return Err(SignatureError::DuplicateId(signed_id.to_owned()));
    }

    let mut signed_info = None;
    let mut signature_value = None;
    for child in tree.child_elements(signature) {
        let element = tree.element(child);
        match (&*element.namespace, element.local.as_str()) {
            (DSIG_NS, "SignedInfo") if signed_info.is_none() && signature_value.is_none() => {
                signed_info = Some(child)
            }
            (DSIG_NS, "SignatureValue") if signed_info.is_some() && signature_value.is_none() => {
                signature_value = Some(child)
            }
            // The key comes from configuration, never from the message.
            (DSIG_NS, "KeyInfo") if signature_value.is_some() => {}
            _ => return Err(SignatureError::UnexpectedElement(element.local.clone())),
        }
    }
    let signed_info = signed_info.ok_or(SignatureError::Missing("SignedInfo"))?;
    let signature_value = signature_value.ok_or(SignatureError::Missing("SignatureValue"))?;

    let mut canonicalization = None;
    let mut method = None;
    let mut references = Vec::new();
    for child in tree.child_elements(signed_info) {
        let element = tree.element(child);
        match (&*element.namespace, element.local.as_str()) {
            (DSIG_NS, "CanonicalizationMethod") if canonicalization.is_none() => {
                canonicalization = Some(child)
            }
            (DSIG_NS, "SignatureMethod") if method.is_none() => method = Some(child),
            (DSIG_NS, "Reference") => references.push(child),
            _ => return Err(SignatureError::UnexpectedElement(element.local.clone())),
        }
    }
    let canonicalization =
        canonicalization.ok_or(SignatureError::Missing("CanonicalizationMethod"))?;
    let signed_info_prefixes = exclusive_method(tree, canonicalization, "canonicalisation")?;
    let method_uri = algorithm(
        tree,
        method.ok_or(SignatureError::Missing("SignatureMethod"))?,
    );
    let (kind, signature_hash) =
        signature_method(method_uri).ok_or_else(|| SignatureError::Algorithm {
            field: "signature method",
            algorithm: method_uri.to_owned(),
        })?;
    if signature_hash.sha1 && !allow_sha1 {
        return Err(SignatureError::Sha1(method_uri.to_owned()));
    }
    let [reference] = references[..] else {
        return Err(SignatureError::ReferenceCount(references.len()));
    };

    let uri = tree.element(reference).attribute("URI").unwrap_or("");
    if uri.strip_prefix('#') != Some(signed_id) {
        return Err(SignatureError::ReferenceUri {
            found: uri.to_owned(),
            expected: signed_id.to_owned(),
        });
    }
    let (content_prefixes, digest_hash, digest_value) =
        reference_parts(tree, reference, allow_sha1)?;

    let canonical = canonical_form(tree, signed, Some(signature), &content_prefixes)?;
    let digest =
        hash((digest_hash.digest)(), canonical.as_bytes()).map_err(|_| SignatureError::Digest)?;
    if !bool::from(digest.as_ref().ct_eq(&digest_value)) {
        return Err(SignatureError::Digest);
    }

    let signed_info_bytes = canonical_form(tree, signed_info, None, &signed_info_prefixes)?;
    let signature_bytes = base64_text(tree, signature_value, "SignatureValue")?;
    let verified = keys.iter().any(|key| {
        verify_with(
            key,
            kind,
            signature_hash,
            signed_info_bytes.as_bytes(),
            &signature_bytes,
        )
    });
    if !verified {
        return Err(SignatureError::Mismatch);
    }
    Ok(canonical)
}

/// Reads a Reference's transforms, digest method and digest value.
fn reference_parts(
    tree: &Tree,
    reference: usize,
    allow_sha1: bool,
) -> Result<(Vec<String>, Hash, Vec<u8>), SignatureError> {
    let mut transforms = None;
    let mut digest_method_element = None;
    let mut digest_value = None;
    for child in tree.child_elements(reference) {
        let element = tree.element(child);
        match (&*element.namespace, element.local.as_str()) {
            (DSIG_NS, "Transforms") if transforms.is_none() => transforms = Some(child),
            (DSIG_NS, "DigestMethod") if digest_method_element.is_none() => {
                digest_method_element = Some(child)
            }
            (DSIG_NS, "DigestValue") if digest_value.is_none() => digest_value = Some(child),
            _ => return Err(SignatureError::UnexpectedElement(element.local.clone())),
        }
    }

    let steps: Vec<usize> = tree
        .child_elements(transforms.ok_or(SignatureError::Transforms)?)
        .collect();
    let [enveloped, canonicalization] = steps[..] else {
        return Err(SignatureError::Transforms);
    };
    if !tree.element(enveloped).is(DSIG_NS, "Transform")
        || algorithm(tree, enveloped) != ENVELOPED
        || tree.child_elements(enveloped).next().is_some()
        || !tree.element(canonicalization).is(DSIG_NS, "Transform")
    {
        return Err(SignatureError::Transforms);
    }
    let prefixes = exclusive_method(tree, canonicalization, "transform")?;

    let method_element = digest_method_element.ok_or(SignatureError::Missing("DigestMethod"))?;
    let method_uri = algorithm(tree, method_element);
    let digest = digest_method(method_uri).ok_or_else(|| SignatureError::Algorithm {
        field: "digest method",
        algorithm: method_uri.to_owned(),
    })?;
    if digest.sha1 && !allow_sha1 {
        return Err(SignatureError::Sha1(method_uri.to_owned()));
    }
    let value = base64_text(
        tree,
        digest_value.ok_or(SignatureError::Missing("DigestValue"))?,
        "DigestValue",
    )?;
    Ok((prefixes, digest, value))
}

fn algorithm(tree: &Tree, index: usize) -> &str {
    tree.element(index).attribute("Algorithm").unwrap_or("")
}

/// Checks that `index` names exclusive canonicalisation and returns the
/// prefixes of its InclusiveNamespaces list.
fn exclusive_method(
    tree: &Tree,
    index: usize,
    field: &'static str,
) -> Result<Vec<String>, SignatureError> {
    let uri = algorithm(tree, index);
    if uri != EXC_C14N {
        return Err(SignatureError::Algorithm {
            field,
            algorithm: uri.to_owned(),
        });
    }
    let mut prefixes = Vec::new();
    for child in tree.child_elements(index) {
        let element = tree.element(child);
        if !element.is(EXC_C14N, "InclusiveNamespaces") || !prefixes.is_empty() {
            return Err(SignatureError::UnexpectedElement(element.local.clone()));
        }
        prefixes = element
            .attribute("PrefixList")
            .unwrap_or("")
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        if prefixes.len() > MAX_INCLUSIVE_PREFIXES {
            return Err(SignatureError::TooManyPrefixes);
        }
    }
    Ok(prefixes)
}

fn base64_text(
    tree: &Tree,
    index: usize,
    element: &'static str,
) -> Result<Vec<u8>, SignatureError> {
    let compact: String = tree
        .text(index)
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(compact.as_bytes())
        .map_err(|_| SignatureError::Base64(element))
}

fn verify_with(
    key: &PKey<Public>,
    kind: KeyKind,
    hash: Hash,
    data: &[u8],
    signature: &[u8],
) -> bool {
    let key_matches = match kind {
        KeyKind::Rsa => key.id() == Id::RSA,
        KeyKind::Ecdsa => key.id() == Id::EC,
    };
    if !key_matches {
        return false;
    }
    // XML-DSig writes ECDSA signatures as r and s side by side; OpenSSL
    // takes the DER sequence.
    let der;
    let signature = if kind == KeyKind::Ecdsa {
        // r and s each take exactly the curve order's width, as the
        // XML-DSig encoding requires; a padded value is not a signature.
        let width = match key.ec_key() {
            Ok(ec) => ec.group().order_bits().div_ceil(8) as usize,
            Err(_) => return false,
        };
        if signature.len() != 2 * width {
            return false;
        }
        let (r, s) = signature.split_at(signature.len() / 2);
        der = match (BigNum::from_slice(r), BigNum::from_slice(s)) {
            (Ok(r), Ok(s)) => {
                match EcdsaSig::from_private_components(r, s).and_then(|sig| sig.to_der()) {
                    Ok(der) => der,
                    Err(_) => return false,
                }
            }
            _ => return false,
        };
        der.as_slice()
    } else {
        signature
    };
    Verifier::new((hash.digest)(), key)
        .and_then(|mut verifier| verifier.verify_oneshot(signature, data))
        .unwrap_or(false)
}
