//! Exclusive canonicalisation checked against libxml2's, on documents made
//! up at random: nested prefix rebinding, default namespaces and their
//! undeclaration, namespaced attributes, escapes, character references,
//! CDATA and line ends. A difference on any of them would make a real
//! IdP's signature fail to verify, or verify bytes other than those read.

use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use unified_login::connector::saml::dsig::c14n;
use unified_login::connector::saml::dsig::tree::Tree;

use crate::peers::process::missing_peer;

const DOCUMENTS: usize = 300;
const PREFIXES: &[&str] = &["", "a", "b", "saml"];
const NAMESPACES: &[&str] = &["urn:x", "urn:y", "http://example.test/z?q=1;r=%22"];
const TEXTS: &[&str] = &[
    "plain",
    " spaced\tout ",
    "a &amp; b &lt; c &gt; d",
    "quote \" apostrophe '",
    "line\r\nend\rs\n",
    "&#13;&#x9;&#10;",
    "<![CDATA[<raw> & ]]>]]&gt;",
    "Zoë ✓ 漢字",
    "",
];
const VALUES: &[&str] = &[
    "v",
    "tab\there",
    "new\r\nline",
    "&quot;&amp;&lt;&gt;'",
    "&#9;&#10;&#13;",
    "é ✓",
    "",
];

struct Generator {
    rng: StdRng,
    out: String,
}

impl Generator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.gen_range(0..items.len())]
    }

    /// Writes an element; `bound` lists the prefixes with a binding in scope.
    fn element(&mut self, depth: usize, bound: &[&'static str]) {
        let mut bound = bound.to_vec();
        let mut declarations = Vec::new();
        for &prefix in PREFIXES {
            if self.rng.gen_bool(0.25) {
                let namespace = if prefix.is_empty() && self.rng.gen_bool(0.3) {
                    ""
                } else {
                    self.pick(NAMESPACES)
                };
                declarations.push((prefix, namespace));
                if !prefix.is_empty() && !bound.contains(&prefix) {
                    bound.push(prefix);
                }
            }
        }

        let named: Vec<&str> = bound.iter().copied().filter(|p| !p.is_empty()).collect();
        let prefix = if !named.is_empty() && self.rng.gen_bool(0.5) {
            named[self.rng.gen_range(0..named.len())]
        } else {
            ""
        };
        let name = format!("{}e{}", qualify(prefix), self.rng.gen_range(0..3));
        self.out.push('<');
        self.out.push_str(&name);
        for (prefix, namespace) in &declarations {
            if prefix.is_empty() {
                self.out.push_str(&format!(" xmlns=\"{namespace}\""));
            } else {
                self.out
                    .push_str(&format!(" xmlns:{prefix}=\"{namespace}\""));
            }
        }

        // One attribute per local name keeps expanded names unique even when
        // two prefixes share a namespace.
        for local in ["id", "x", "y"] {
            if self.rng.gen_bool(0.4) {
                let prefix = if !named.is_empty() && self.rng.gen_bool(0.5) {
                    named[self.rng.gen_range(0..named.len())]
                } else {
                    ""
                };
                let value = self.pick(VALUES);
                self.out
                    .push_str(&format!(" {}{local}=\"{value}\"", qualify(prefix)));
            }
        }

        if depth > 4 || self.rng.gen_bool(0.2) {
            self.out.push_str("/>");
            return;
        }
        self.out.push('>');
        for _ in 0..self.rng.gen_range(0..4) {
            if self.rng.gen_bool(0.5) {
                let text = self.pick(TEXTS);
                self.out.push_str(text);
            } else {
                self.element(depth + 1, &bound);
            }
        }
        self.out.push_str(&format!("</{name}>"));
    }
}

fn qualify(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}:")
    }
}

fn ours(xml: &str) -> String {
    let tree = Tree::parse(xml).unwrap_or_else(|error| panic!("{error}: {xml}"));
    let mut out = String::new();
    c14n::exclusive(&tree, tree.root(), None, &[], &mut out).unwrap();
    out
}

#[test]
fn exclusive_canonicalisation_matches_libxml2() {
    if Command::new("xmllint").arg("--version").output().is_err() {
        missing_peer::<()>(
            "exclusive_canonicalisation_matches_libxml2",
            "xmllint is not installed (Debian package libxml2-utils)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut generator = Generator {
        rng: StdRng::from_entropy(),
        out: String::new(),
    };
    for number in 0..DOCUMENTS {
        generator.out.clear();
        generator.element(0, &[]);
        let xml = generator.out.clone();
        let path = dir.path().join(format!("{number}.xml"));
        std::fs::write(&path, &xml).unwrap();
        let output = Command::new("xmllint")
            .arg("--exc-c14n")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "xmllint rejected document {number}: {}\n{xml}",
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs = String::from_utf8(output.stdout).unwrap();
        assert_eq!(ours(&xml), theirs, "document {number}:\n{xml}");
    }
}
