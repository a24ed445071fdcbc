//! Exclusive XML Canonicalization 1.0, without comments, of one element.
//!
//! This is the only canonicalisation the SAML signature profile uses. An
//! element is written with the namespace declarations that it or its
//! attributes use, unless an output ancestor already wrote the same binding.
//! Prefixes named in an InclusiveNamespaces list are written wherever they
//! are in scope, used or not. IdPs list `xs` this way, because `xs:string`
//! appears only inside `xsi:type` values.

use std::collections::HashMap;

use super::tree::{Child, Scope, Tree};

/// Error for a canonical form that grew past its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Returns the maximum canonical form size for a document of
/// `source_bytes`. A real one is about as long as its source, and only
/// bindings written again on many elements make it longer.
pub fn limit(source_bytes: usize) -> usize {
    2 * source_bytes + 64 * 1024
}

/// Writes the canonical form of `apex` and its descendants to `out`,
/// leaving out the subtree `omit` (the enveloped signature). Stops once
/// `out` grows past [`limit`] for the tree's source.
pub fn exclusive(
    tree: &Tree,
    apex: usize,
    omit: Option<usize>,
    inclusive_prefixes: &[String],
    out: &mut String,
) -> Result<(), TooLarge> {
    let mut walk = Walk {
        tree,
        omit,
        inclusive_prefixes,
        scope: Scope::default(),
        rendered: HashMap::new(),
        bound: limit(tree.source_bytes()),
    };
    // Bindings declared above the apex are in scope for it, though none
    // of them has been written.
    for ancestor in tree.ancestors(apex) {
        walk.scope.enter(tree.element(ancestor));
    }
    walk.element(apex, out)
}

/// The state of one canonicalisation, shared down the recursion.
struct Walk<'t> {
    tree: &'t Tree,
    omit: Option<usize>,
    inclusive_prefixes: &'t [String],
    scope: Scope,
    /// For each prefix, the bindings written by output ancestors, innermost
    /// last.
    rendered: HashMap<String, Vec<String>>,
    bound: usize,
}

impl Walk<'_> {
    fn element(&mut self, index: usize, out: &mut String) -> Result<(), TooLarge> {
        if out.len() > self.bound {
            return Err(TooLarge);
        }
        let tree = self.tree;
        let element = tree.element(index);
        self.scope.enter(element);

        let mut prefixes: Vec<&str> = Vec::with_capacity(2 + element.attributes.len());
        prefixes.push(&element.prefix);
        for attribute in &element.attributes {
            if !attribute.prefix.is_empty() {
                prefixes.push(&attribute.prefix);
            }
        }
        for listed in self.inclusive_prefixes {
            let prefix = if listed == "#default" {
                ""
            } else {
                listed.as_str()
            };
            // A listed prefix is written only where a binding for it exists.
            if self.scope.lookup(prefix).is_some() {
                prefixes.push(prefix);
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup();

        let mut declarations: Vec<(&str, String)> = Vec::new();
        for prefix in prefixes {
            if prefix == "xml" {
                continue;
            }
            let namespace = self.scope.lookup(prefix).map_or("", |n| &**n);
            let written = self
                .rendered
                .get(prefix)
                .and_then(|stack| stack.last())
                .map_or("", String::as_str);
            if written != namespace {
                declarations.push((prefix, namespace.to_owned()));
            }
        }

        out.push('<');
        push_qualified(out, &element.prefix, &element.local);
        for (prefix, namespace) in &declarations {
            if prefix.is_empty() {
                out.push_str(" xmlns=\"");
            } else {
                out.push_str(" xmlns:");
                out.push_str(prefix);
                out.push_str("=\"");
            }
            escape_attribute(namespace, out);
            out.push('"');
        }
        let mut attributes: Vec<_> = element.attributes.iter().collect();
        attributes.sort_by(|a, b| (&a.namespace, &a.local).cmp(&(&b.namespace, &b.local)));
        for attribute in attributes {
            out.push(' ');
            push_qualified(out, &attribute.prefix, &attribute.local);
            out.push_str("=\"");
            escape_attribute(&attribute.value, out);
            out.push('"');
        }
        out.push('>');

        for (prefix, namespace) in &declarations {
            self.rendered
                .entry((*prefix).to_owned())
                .or_default()
                .push(namespace.clone());
        }
        let mut result = Ok(());
        for child in &element.children {
            result = match child {
                Child::Text(text) => {
                    escape_text(text, out);
                    Ok(())
                }
                Child::Element(child) if Some(*child) == self.omit => Ok(()),
                Child::Element(child) => self.element(*child, out),
            };
            if result.is_err() {
                break;
            }
        }
        for (prefix, _) in &declarations {
            if let Some(stack) = self.rendered.get_mut(*prefix) {
                stack.pop();
            }
        }
        self.scope.leave(element);
        result?;

        out.push_str("</");
        push_qualified(out, &element.prefix, &element.local);
        out.push('>');
        Ok(())
    }
}

fn push_qualified(out: &mut String, prefix: &str, local: &str) {
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(local);
}

fn escape_text(text: &str, out: &mut String) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            other => out.push(other),
        }
    }
}

fn escape_attribute(value: &str, out: &mut String) {
    for character in value.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(xml: &str, apex_local: &str, prefixes: &[&str]) -> String {
        let tree = Tree::parse(xml).unwrap();
        let apex = tree
            .indices()
            .find(|&index| tree.element(index).local == apex_local)
            .unwrap();
        let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
        let mut out = String::new();
        exclusive(&tree, apex, None, &prefixes, &mut out).unwrap();
        out
    }

    #[test]
    fn declares_only_the_namespaces_an_element_uses() {
        let xml = r#"<p:Response xmlns:p="urn:p" xmlns:a="urn:a" xmlns:unused="urn:u"><a:Assertion ID="x"><a:Issuer>i</a:Issuer></a:Assertion></p:Response>"#;
        assert_eq!(
            canonical(xml, "Assertion", &[]),
            r#"<a:Assertion xmlns:a="urn:a" ID="x"><a:Issuer>i</a:Issuer></a:Assertion>"#
        );
    }

    #[test]
    fn sorts_declarations_and_attributes_and_expands_empty_elements() {
        let xml = r#"<r xmlns:b="urn:b" xmlns:a="urn:z" b:y="2" z="1" a:x="3"><e/></r>"#;
        assert_eq!(
            canonical(xml, "r", &[]),
            r#"<r xmlns:a="urn:z" xmlns:b="urn:b" z="1" b:y="2" a:x="3"><e></e></r>"#
        );
    }

    #[test]
    fn escapes_text_and_attribute_values() {
        let xml = "<r a=\"&lt;&amp;&quot;&#9;&#10;&#13;\">&lt;&amp;&gt;&#13;<![CDATA[<x>]]></r>";
        assert_eq!(
            canonical(xml, "r", &[]),
            "<r a=\"&lt;&amp;&quot;&#x9;&#xA;&#xD;\">&lt;&amp;&gt;&#xD;&lt;x&gt;</r>"
        );
    }

    #[test]
    fn normalises_line_ends_and_attribute_whitespace() {
        let xml = "<r a=\"one\ttwo\r\nthree\">x\r\ny\rz</r>";
        assert_eq!(
            canonical(xml, "r", &[]),
            "<r a=\"one two three\">x\ny\nz</r>"
        );
    }

    #[test]
    fn default_namespace_undeclaration() {
        let xml = r#"<r xmlns="urn:d"><s xmlns=""><t/></s></r>"#;
        assert_eq!(
            canonical(xml, "r", &[]),
            r#"<r xmlns="urn:d"><s xmlns=""><t></t></s></r>"#
        );
        assert_eq!(canonical(xml, "s", &[]), "<s><t></t></s>");
    }

    #[test]
    fn writes_listed_prefixes_even_when_unused() {
        let xml = r#"<r xmlns:xs="urn:xs" xmlns:a="urn:a"><a:v>xs:string</a:v></r>"#;
        assert_eq!(
            canonical(xml, "v", &["xs"]),
            r#"<a:v xmlns:a="urn:a" xmlns:xs="urn:xs">xs:string</a:v>"#
        );
        assert_eq!(
            canonical(xml, "v", &["missing"]),
            r#"<a:v xmlns:a="urn:a">xs:string</a:v>"#
        );
    }

    #[test]
    fn does_not_repeat_a_binding_an_ancestor_wrote() {
        let xml =
            r#"<a:r xmlns:a="urn:a"><a:s xmlns:a="urn:a"><a:t xmlns:a="urn:other"/></a:s></a:r>"#;
        assert_eq!(
            canonical(xml, "r", &[]),
            r#"<a:r xmlns:a="urn:a"><a:s><a:t xmlns:a="urn:other"></a:t></a:s></a:r>"#
        );
    }
}
