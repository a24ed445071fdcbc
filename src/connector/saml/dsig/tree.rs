//! A read-only element tree of a SAML message, kept close to the source.
//!
//! Canonicalisation needs what general-purpose trees drop: the prefix each
//! name was written with and the namespace declarations each element makes.
//! The parser admits only what SAML needs, so DOCTYPEs, comments and
//! processing instructions stop it before anything is verified.

use std::collections::HashMap;
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::PrefixDeclaration;

/// Maximum nesting depth. The Entra-shaped test responses are seven levels
/// deep.
const MAX_DEPTH: usize = 64;
/// Maximum number of namespace declarations in one document, far above the
/// few that a SAML response needs. It bounds the cost of resolving and
/// canonicalising names.
pub const MAX_DECLARATIONS: usize = 256;
/// Maximum length of a namespace name, in bytes. Canonicalisation may write
/// a binding on many elements, so a long name would multiply the size of
/// the canonical form.
pub const MAX_NAMESPACE_BYTES: usize = 1024;
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Reason a document was rejected before any signature check.
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
    #[error("more than {MAX_DECLARATIONS} namespace declarations")]
    TooManyDeclarations,
}

/// One element: its names as written and resolved, and its content.
#[derive(Debug)]
pub struct Element {
    pub parent: Option<usize>,
    /// The prefix as written, empty when the name has none.
    pub prefix: String,
    pub local: String,
    /// The namespace the name resolves to, empty when it is in none. It is
    /// shared with the declaration, so a namespace name costs its length
    /// once however many names use it.
    pub namespace: Arc<str>,
    /// Namespace declarations made on this element, in source order; the
    /// default namespace has the empty prefix.
    pub declarations: Vec<(String, Arc<str>)>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Child>,
}

#[derive(Debug)]
pub struct Attribute {
    pub prefix: String,
    pub local: String,
    pub namespace: Arc<str>,
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
    /// Length of the parsed text, which bounds the canonical forms.
    source_bytes: usize,
}

impl Tree {
    pub fn parse(xml: &str) -> Result<Self, TreeError> {
        let mut reader = Reader::from_str(xml);
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut declarations = 0;
        let mut scope = Scope::default();
        let mut first_event = true;
        loop {
            let event = reader.read_event().map_err(malformed)?;
            let at_start = std::mem::replace(&mut first_event, false);
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    if open.is_empty() && !elements.is_empty() {
                        return Err(TreeError::Malformed("more than one root element".into()));
                    }
                    if open.len() >= MAX_DEPTH {
                        return Err(TreeError::TooDeep);
                    }
                    let index = elements.len();
                    let element = read_element(&mut scope, start, open.last().copied())?;
                    declarations += element.declarations.len();
                    if declarations > MAX_DECLARATIONS {
                        return Err(TreeError::TooManyDeclarations);
                    }
                    if let Some(&parent) = open.last() {
                        elements[parent].children.push(Child::Element(index));
                    }
                    // An empty element closes at once; quick-xml reports no End for it.
                    if matches!(event, Event::Start(_)) {
                        open.push(index);
                    } else {
                        scope.leave(&element);
                    }
                    elements.push(element);
                }
                Event::End(_) => {
                    if let Some(index) = open.pop() {
                        scope.leave(&elements[index]);
                    }
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
                Event::Decl(_) if at_start => {}
                Event::Decl(_) => {
                    return Err(TreeError::Malformed(
                        "an XML declaration after the start of the document".into(),
                    ));
                }
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
        Ok(Self {
            elements,
            source_bytes: xml.len(),
        })
    }

    pub fn element(&self, index: usize) -> &Element {
        &self.elements[index]
    }

    pub fn source_bytes(&self) -> usize {
        self.source_bytes
    }

    pub fn root(&self) -> usize {
        0
    }

    /// Returns every element index in document order.
    pub fn indices(&self) -> std::ops::Range<usize> {
        0..self.elements.len()
    }

    /// Returns the element children of `index`.
    pub fn child_elements(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.elements[index]
            .children
            .iter()
            .filter_map(|child| match child {
                Child::Element(child) => Some(*child),
                Child::Text(_) => None,
            })
    }

    /// Returns the ancestors of `index`, outermost first.
    pub fn ancestors(&self, index: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        let mut current = self.elements[index].parent;
        while let Some(at) = current {
            chain.push(at);
            current = self.elements[at].parent;
        }
        chain.reverse();
        chain
    }

    /// Returns the text content of `index` and its descendants.
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
        &*self.namespace == namespace && self.local == local
    }

    /// Returns the value of the attribute `local` that is in no namespace.
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

/// The namespace bindings in scope while walking a tree: for each prefix,
/// the bindings of the open elements that declare it, innermost last. Each
/// lookup costs the same however deep the element or however many
/// declarations enclose it.
#[derive(Default)]
pub struct Scope {
    bindings: HashMap<String, Vec<Arc<str>>>,
}

impl Scope {
    /// Adds the declarations of an element being entered.
    pub fn enter(&mut self, element: &Element) {
        for (prefix, namespace) in &element.declarations {
            self.bindings
                .entry(prefix.clone())
                .or_default()
                .push(namespace.clone());
        }
    }

    /// Removes the declarations of an element being left.
    pub fn leave(&mut self, element: &Element) {
        for (prefix, _) in &element.declarations {
            if let Some(stack) = self.bindings.get_mut(prefix) {
                stack.pop();
            }
        }
    }

    /// Returns the namespace `prefix` is bound to, or `None` when nothing
    /// binds it or the innermost binding is empty (`xmlns=""`).
    pub fn lookup(&self, prefix: &str) -> Option<&Arc<str>> {
        self.bindings
            .get(prefix)
            .and_then(|stack| stack.last())
            .filter(|namespace| !namespace.is_empty())
    }
}

fn utf8(bytes: &[u8]) -> Result<String, TreeError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(malformed)
}

/// Reads a start tag. Names resolve against the declarations as the tree
/// stores them, after entity expansion, so that the namespace an element is
/// checked under is the one canonicalisation writes.
/// Enters the element in `scope`; the caller leaves it when it closes.
fn read_element(
    scope: &mut Scope,
    start: &BytesStart<'_>,
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
        namespace: Arc::from(""),
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
        let Some(binding) = attribute.key.as_namespace_binding() else {
            element.attributes.push(Attribute {
                prefix: attribute
                    .key
                    .prefix()
                    .map(|p| utf8(p.as_ref()))
                    .transpose()?
                    .unwrap_or_default(),
                local: utf8(attribute.key.local_name().as_ref())?,
                namespace: Arc::from(""),
                value,
            });
            continue;
        };
        check_namespace_name(&value)?;
        let prefix = match binding {
            PrefixDeclaration::Default => String::new(),
            PrefixDeclaration::Named(prefix) => utf8(prefix)?,
        };
        let reserved = match prefix.as_str() {
            "xml" => value != XML_NS,
            "xmlns" => true,
            _ => value == XML_NS || value == XMLNS_NS,
        };
        if reserved || (!prefix.is_empty() && value.is_empty()) {
            return Err(TreeError::Malformed(format!(
                "the prefix '{prefix}' cannot be bound to '{value}'"
            )));
        }
        if element
            .declarations
            .iter()
            .any(|(declared, _)| *declared == prefix)
        {
            return Err(TreeError::Malformed(format!(
                "the prefix '{prefix}' is declared twice on one element"
            )));
        }
        element.declarations.push((prefix, Arc::from(value)));
    }
    scope.enter(&element);

    let xml_namespace: Arc<str> = Arc::from(XML_NS);
    let resolve = |prefix: &str| -> Result<Arc<str>, TreeError> {
        if prefix == "xml" {
            return Ok(xml_namespace.clone());
        }
        match scope.lookup(prefix) {
            Some(namespace) => Ok(namespace.clone()),
            None if prefix.is_empty() => Ok(Arc::from("")),
            None => Err(TreeError::Malformed(format!(
                "the prefix '{prefix}' is not declared"
            ))),
        }
    };
    // An error ends the parse, and the scope with it.
    element.namespace = resolve(&element.prefix)?;
    for attribute in &mut element.attributes {
        // Attributes without a prefix are in no namespace, whatever the default.
        if !attribute.prefix.is_empty() {
            attribute.namespace = resolve(&attribute.prefix)?;
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(element.attributes.len());
    for attribute in &element.attributes {
        if !seen.insert((&*attribute.namespace, attribute.local.as_str())) {
            return Err(TreeError::Malformed(format!(
                "the attribute '{}' appears twice under different prefixes",
                attribute.local
            )));
        }
    }
    Ok(element)
}

/// Rejects namespace names with '&', '<' or '"', because canonicalisers
/// disagree on escaping them (libxml2 writes '&' unescaped), and names too
/// long to repeat. No SAML namespace contains either.
fn check_namespace_name(value: &str) -> Result<(), TreeError> {
    if value.len() > MAX_NAMESPACE_BYTES {
        return Err(TreeError::Malformed(format!(
            "a namespace name is longer than {MAX_NAMESPACE_BYTES} bytes"
        )));
    }
    if value.contains(['&', '<', '"']) || value.chars().any(char::is_whitespace) {
        return Err(TreeError::Malformed(format!(
            "the namespace name '{value}' contains whitespace, '&', '<' or '\"'"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_their_declared_namespace() {
        // Canonicalisation may not repeat a long namespace name per element,
        // and neither may the tree: thousands of names using one binding
        // hold one copy of it.
        let name = format!("urn:{}", "a".repeat(1_000));
        let xml = format!(
            r#"<r xmlns:p="{name}">{}</r>"#,
            r#"<p:x p:y="1"/>"#.repeat(5_000)
        );
        let tree = Tree::parse(&xml).unwrap();
        let mut copies = std::collections::HashSet::new();
        for index in tree.indices() {
            let element = tree.element(index);
            copies.insert(Arc::as_ptr(&element.namespace) as *const u8);
            for attribute in &element.attributes {
                copies.insert(Arc::as_ptr(&attribute.namespace) as *const u8);
            }
        }
        let declared = &tree.element(tree.root()).declarations[0].1;
        assert_eq!(&**declared, name);
        // The declaration's copy, and the empty namespace of the root.
        assert!(
            copies.len() <= 2,
            "{} copies of the namespace name",
            copies.len()
        );
        assert!(copies.contains(&(Arc::as_ptr(declared) as *const u8)));
    }

    #[test]
    fn scope_ends_with_the_declaring_element() {
        let tree =
            Tree::parse(r#"<r xmlns:p="urn:outer"><s xmlns:p="urn:inner"><p:a/></s><p:b/></r>"#)
                .unwrap();
        let namespaces: Vec<&str> = tree
            .indices()
            .map(|index| &*tree.element(index).namespace)
            .collect();
        assert_eq!(namespaces, ["", "", "urn:inner", "urn:outer"]);
        assert!(Tree::parse(r#"<r><s xmlns:p="urn:x"/><p:a/></r>"#).is_err());
    }
}
