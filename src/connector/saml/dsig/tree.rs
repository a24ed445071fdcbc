//! A read-only element tree of a SAML message, kept close to the source.
//!
//! Canonicalisation needs what general-purpose trees drop: the prefix each
//! name was written with and the namespace declarations each element makes.
//! The parser admits only what SAML needs, so DOCTYPEs, comments and
//! processing instructions stop it before anything is verified.

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, ResolveResult};

/// Deepest nesting accepted. Entra's responses are nine levels deep.
const MAX_DEPTH: usize = 64;

/// Why a document was not accepted as a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("a DOCTYPE declaration")]
    Doctype,
    #[error("an XML comment")]
    Comment,
    #[error("a processing instruction")]
    ProcessingInstruction,
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// One element: its names as written and resolved, and its content.
#[derive(Debug)]
pub struct Element {
    pub parent: Option<usize>,
    /// The prefix as written, empty when the name has none.
    pub prefix: String,
    pub local: String,
    /// The namespace the name resolves to, empty when it is in none.
    pub namespace: String,
    /// Namespace declarations made on this element, in source order; the
    /// default namespace has the empty prefix.
    pub declarations: Vec<(String, String)>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Child>,
}

#[derive(Debug)]
pub struct Attribute {
    pub prefix: String,
    pub local: String,
    pub namespace: String,
    /// The value after entity expansion and XML 1.0 normalisation.
    pub value: String,
}

#[derive(Debug)]
pub enum Child {
    Element(usize),
    Text(String),
}

/// The elements of one document; index 0 is the root element.
#[derive(Debug)]
pub struct Tree {
    elements: Vec<Element>,
}

impl Tree {
    pub fn parse(xml: &str) -> Result<Self, TreeError> {
        let mut reader = NsReader::from_str(xml);
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        loop {
            let (resolved, event) = reader.read_resolved_event().map_err(malformed)?;
            let namespace = resolved_namespace(resolved)?;
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    if open.is_empty() && !elements.is_empty() {
                        return Err(TreeError::Malformed("more than one root element".into()));
                    }
                    if open.len() >= MAX_DEPTH {
                        return Err(TreeError::TooDeep);
                    }
                    let index = elements.len();
                    let element = read_element(&reader, start, namespace, open.last().copied())?;
                    if let Some(&parent) = open.last() {
                        elements[parent].children.push(Child::Element(index));
                    }
                    elements.push(element);
                    // An empty element closes at once; quick-xml reports no End for it.
                    if matches!(event, Event::Start(_)) {
                        open.push(index);
                    }
                }
                Event::End(_) => {
                    open.pop();
                }
                Event::Text(text) => {
                    let content = text.xml10_content().map_err(malformed)?;
                    push_text(&mut elements, &open, &content)?;
                }
                Event::CData(data) => {
                    let content = data.xml10_content().map_err(malformed)?;
                    push_text(&mut elements, &open, &content)?;
                }
                Event::GeneralRef(reference) => {
                    let text = match reference.resolve_char_ref().map_err(malformed)? {
                        Some(character) => character.to_string(),
                        None => {
                            let name = reference.decode().map_err(malformed)?;
                            resolve_predefined_entity(&name)
                                .ok_or_else(|| {
                                    TreeError::Malformed(format!("unknown entity &{name};"))
                                })?
                                .to_owned()
                        }
                    };
                    push_text(&mut elements, &open, &text)?;
                }
                Event::DocType(_) => return Err(TreeError::Doctype),
                Event::Comment(_) => return Err(TreeError::Comment),
                Event::PI(_) => return Err(TreeError::ProcessingInstruction),
                Event::Decl(_) => {}
                Event::Eof => break,
            }
        }
        if elements.is_empty() {
            return Err(TreeError::Malformed("no root element".into()));
        }
        if !open.is_empty() {
            return Err(TreeError::Malformed(
                "the document ends inside an element".into(),
            ));
        }
        Ok(Self { elements })
    }

    pub fn element(&self, index: usize) -> &Element {
        &self.elements[index]
    }

    pub fn root(&self) -> usize {
        0
    }

    /// Every element in document order.
    pub fn indices(&self) -> std::ops::Range<usize> {
        0..self.elements.len()
    }

    /// The element children of `index`.
    pub fn child_elements(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.elements[index]
            .children
            .iter()
            .filter_map(|child| match child {
                Child::Element(child) => Some(*child),
                Child::Text(_) => None,
            })
    }

    /// The namespace `prefix` is bound to at `index`, looking through its
    /// ancestors; `None` when nothing binds it (or it was bound to nothing).
    pub fn lookup_namespace(&self, index: usize, prefix: &str) -> Option<&str> {
        let mut current = Some(index);
        while let Some(at) = current {
            let element = &self.elements[at];
            if let Some((_, namespace)) = element
                .declarations
                .iter()
                .rev()
                .find(|(declared, _)| declared == prefix)
            {
                return (!namespace.is_empty()).then_some(namespace.as_str());
            }
            current = element.parent;
        }
        None
    }

    /// The text content of `index` and its descendants.
    pub fn text(&self, index: usize) -> String {
        let mut out = String::new();
        self.collect_text(index, &mut out);
        out
    }

    fn collect_text(&self, index: usize, out: &mut String) {
        for child in &self.elements[index].children {
            match child {
                Child::Text(text) => out.push_str(text),
                Child::Element(child) => self.collect_text(*child, out),
            }
        }
    }
}

impl Element {
    pub fn is(&self, namespace: &str, local: &str) -> bool {
        self.namespace == namespace && self.local == local
    }

    /// The value of the attribute `local` that is in no namespace.
    pub fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|attribute| attribute.namespace.is_empty() && attribute.local == local)
            .map(|attribute| attribute.value.as_str())
    }
}

fn malformed(error: impl std::fmt::Display) -> TreeError {
    TreeError::Malformed(error.to_string())
}

fn resolved_namespace(resolved: ResolveResult<'_>) -> Result<String, TreeError> {
    match resolved {
        ResolveResult::Bound(namespace) => utf8(namespace.as_ref()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => Err(TreeError::Malformed(format!(
            "the prefix '{}' is not declared",
            String::from_utf8_lossy(&prefix)
        ))),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, TreeError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(malformed)
}

fn read_element(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    namespace: String,
    parent: Option<usize>,
) -> Result<Element, TreeError> {
    let name = start.name();
    let mut element = Element {
        parent,
        prefix: name
            .prefix()
            .map(|p| utf8(p.as_ref()))
            .transpose()?
            .unwrap_or_default(),
        local: utf8(name.local_name().as_ref())?,
        namespace,
        declarations: Vec::new(),
        attributes: Vec::new(),
        children: Vec::new(),
    };
    for attribute in start.attributes() {
        let attribute = attribute.map_err(malformed)?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(malformed)?
            .into_owned();
        let binding = attribute.key.as_namespace_binding();
        // Canonicalisers disagree on escaping these in namespace names (libxml2
        // writes them raw), and no SAML namespace contains them.
        if binding.is_some() && value.contains(['&', '<', '"']) {
            return Err(TreeError::Malformed(format!(
                "the namespace name '{value}' contains '&', '<' or '\"'"
            )));
        }
        match binding {
            Some(PrefixDeclaration::Default) => element.declarations.push((String::new(), value)),
            Some(PrefixDeclaration::Named(prefix)) => {
                if value.is_empty() {
                    return Err(TreeError::Malformed(
                        "a prefix is bound to an empty namespace".into(),
                    ));
                }
                element.declarations.push((utf8(prefix)?, value));
            }
            None => {
                let (resolved, local) = reader.resolver().resolve_attribute(attribute.key);
                element.attributes.push(Attribute {
                    prefix: attribute
                        .key
                        .prefix()
                        .map(|p| utf8(p.as_ref()))
                        .transpose()?
                        .unwrap_or_default(),
                    local: utf8(local.as_ref())?,
                    namespace: resolved_namespace(resolved)?,
                    value,
                });
            }
        }
    }
    Ok(element)
}

/// Appends text to the open element, joining it to text just before it so
/// that a reference splits no text node.
fn push_text(elements: &mut [Element], open: &[usize], text: &str) -> Result<(), TreeError> {
    let Some(&current) = open.last() else {
        if text.trim().is_empty() {
            return Ok(());
        }
        return Err(TreeError::Malformed("text outside the root element".into()));
    };
    let children = &mut elements[current].children;
    if let Some(Child::Text(previous)) = children.last_mut() {
        previous.push_str(text);
    } else {
        children.push(Child::Text(text.to_owned()));
    }
    Ok(())
}
