//! SCIM filter expressions (RFC 7644 §3.4.2.2): parsing into a [`Filter`]
//! tree and evaluating it against a resource in its JSON form.
//!
//! Attribute names match in any letter case. String comparisons ignore case
//! except for the case-exact attributes `id` and `externalId` (RFC 7643
//! §3.1 and §4.1). Besides the RFC grammar, a value path may be followed by a
//! sub-attribute comparison, as in `emails[type eq "work"].value eq "x"`,
//! which means `emails[type eq "work" and value eq "x"]`.

use std::cmp::Ordering;

use serde_json::Value;

use super::CORE_USER_SCHEMA;

/// Maximum filter length accepted, in bytes, so a hostile filter costs little to reject.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of parentheses and `not` accepted.
const MAX_DEPTH: usize = 32;

/// An attribute path such as `name.givenName` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN of an extension attribute; `None` for the core schema.
    pub schema: Option<String>,
    pub attribute: String,
    pub sub_attribute: Option<String>,
}

impl AttrPath {
    /// Parses `[URN ":"] name ["." sub]`. The core User schema URN prefix is
    /// dropped, because core attributes sit at the top of the resource.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (schema, rest) = split_schema(text);
        let (attribute, sub_attribute) = match rest.split_once('.') {
            Some((attribute, sub)) => (attribute, Some(sub)),
            None => (rest, None),
        };
        if !is_attribute_name(attribute) {
            return Err(format!("'{text}' is not a valid attribute path"));
        }
        if let Some(sub) = sub_attribute
            && !is_attribute_name(sub)
        {
            return Err(format!("'{text}' is not a valid attribute path"));
        }
        Ok(Self {
            schema,
            attribute: attribute.to_owned(),
            sub_attribute: sub_attribute.map(str::to_owned),
        })
    }

    /// Returns the attribute's value in `resource`, if present.
    pub fn lookup<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        let container = match &self.schema {
            Some(schema) => get_ignore_case(resource, schema)?,
            None => resource,
        };
        get_ignore_case(container, &self.attribute)
    }

    /// True for attributes whose string values compare case-sensitively.
    fn is_case_exact(&self) -> bool {
        self.schema.is_none()
            && self.sub_attribute.is_none()
            && (self.attribute.eq_ignore_ascii_case("id")
                || self.attribute.eq_ignore_ascii_case("externalId"))
    }
}

impl std::fmt::Display for AttrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        write!(f, "{}", self.attribute)?;
        if let Some(sub) = &self.sub_attribute {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Splits a leading schema URN off an attribute path. The URN ends at the
/// last colon, and the core User schema counts as no schema.
pub fn split_schema(text: &str) -> (Option<String>, &str) {
    let is_urn = text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:");
    if is_urn && let Some((urn, rest)) = text.rsplit_once(':') {
        if urn.eq_ignore_ascii_case(CORE_USER_SCHEMA) {
            return (None, rest);
        }
        return (Some(urn.to_owned()), rest);
    }
    (None, text)
}

/// RFC 7643 §2.1: `ATTRNAME = ALPHA *(nameChar)`, nameChar = "-" / "_" / DIGIT / ALPHA.
/// `$ref` is allowed as well, as RFC 7643 uses it for references.
fn is_attribute_name(name: &str) -> bool {
    if name == "$ref" {
        return true;
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Returns the member of a JSON object whose name equals `name` in any letter case.
pub fn get_ignore_case<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attribute[filter]`: true when one value of the multi-valued
    /// attribute matches the inner filter, whose paths are relative to it.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

impl Filter {
    /// Parses a filter. The error is a sentence for the `detail` of an
    /// `invalidFilter` response.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "the filter is longer than {MAX_FILTER_BYTES} bytes"
            ));
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            position: 0,
            depth: 0,
        };
        let filter = parser.or_expression()?;
        match parser.peek() {
            None => Ok(filter),
            Some(token) => Err(format!("unexpected {} in the filter", token.describe())),
        }
    }

    /// Returns the attribute value of a filter of the form `attribute eq "value"`.
    pub fn as_equality(&self) -> Option<(&AttrPath, &str)> {
        match self {
            Self::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(value),
            } => Some((path, value)),
            _ => None,
        }
    }

    /// Evaluates the filter against a resource or a complex value.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Self::And(left, right) => left.matches(resource) && right.matches(resource),
            Self::Or(left, right) => left.matches(resource) || right.matches(resource),
            Self::Not(inner) => !inner.matches(resource),
            Self::Present(path) => values_at(path, resource)
                .iter()
                .any(|value| is_present(value)),
            Self::Compare { path, op, value } => {
                let candidates = values_at(path, resource);
                if candidates.is_empty() {
                    // An absent attribute equals null and differs from any value.
                    return match op {
                        CompareOp::Eq => value.is_null(),
                        CompareOp::Ne => !value.is_null(),
                        _ => false,
                    };
                }
                candidates
                    .iter()
                    .any(|candidate| compare(candidate, *op, value, path.is_case_exact()))
            }
            Self::ValuePath { path, filter } => match path.lookup(resource) {
                Some(Value::Array(items)) => items.iter().any(|item| filter.matches(item)),
                Some(item @ Value::Object(_)) => filter.matches(item),
                _ => false,
            },
        }
    }
}

fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(members) => !members.is_empty(),
        _ => true,
    }
}

/// Collects the simple values that `path` designates: one for a simple
/// attribute, each element (or each element's sub-attribute, or the `value`
/// sub-attribute of complex elements) for a multi-valued one.
fn values_at<'a>(path: &AttrPath, resource: &'a Value) -> Vec<&'a Value> {
    let Some(value) = path.lookup(resource) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter_map(|item| match (&path.sub_attribute, item) {
            (Some(sub), Value::Object(_)) => get_ignore_case(item, sub),
            (Some(_), _) => None,
            (None, Value::Object(_)) => get_ignore_case(item, "value"),
            (None, other) => Some(other),
        })
        .collect()
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, case_exact: bool) -> bool {
    match (actual, expected) {
        (Value::String(actual), Value::String(expected)) => {
            let (actual, expected) = if case_exact {
                (actual.clone(), expected.clone())
            } else {
                (actual.to_lowercase(), expected.to_lowercase())
            };
            match op {
                CompareOp::Eq => actual == expected,
                CompareOp::Ne => actual != expected,
                CompareOp::Co => actual.contains(&expected),
                CompareOp::Sw => actual.starts_with(&expected),
                CompareOp::Ew => actual.ends_with(&expected),
                CompareOp::Gt => actual > expected,
                CompareOp::Ge => actual >= expected,
                CompareOp::Lt => actual < expected,
                CompareOp::Le => actual <= expected,
            }
        }
        (Value::Bool(actual), Value::Bool(expected)) => match op {
            CompareOp::Eq => actual == expected,
            CompareOp::Ne => actual != expected,
            _ => false,
        },
        (Value::Number(actual), Value::Number(expected)) => {
            let (Some(actual), Some(expected)) = (actual.as_f64(), expected.as_f64()) else {
                return false;
            };
            let ordering = actual.partial_cmp(&expected);
            match op {
                CompareOp::Eq => ordering == Some(Ordering::Equal),
                CompareOp::Ne => ordering != Some(Ordering::Equal),
                CompareOp::Gt => ordering == Some(Ordering::Greater),
                CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
                CompareOp::Lt => ordering == Some(Ordering::Less),
                CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
            }
        }
        (_, Value::Null) => op == CompareOp::Ne,
        _ => op == CompareOp::Ne,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(Value),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// The `.sub` that follows a closing bracket.
    SubAttribute(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Word(word) => format!("'{word}'"),
            Self::Literal(value) => format!("value {value}"),
            Self::Open => "'('".to_owned(),
            Self::Close => "')'".to_owned(),
            Self::OpenBracket => "'['".to_owned(),
            Self::CloseBracket => "']'".to_owned(),
            Self::SubAttribute(name) => format!("'.{name}'"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            ' ' | '\t' | '\r' | '\n' => index += 1,
            '(' => {
                tokens.push(Token::Open);
                index += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                index += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                index += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                index += 1;
                if chars.get(index) == Some(&'.') {
                    let start = index + 1;
                    let mut end = start;
                    while end < chars.len() && is_word_char(chars[end]) {
                        end += 1;
                    }
                    tokens.push(Token::SubAttribute(chars[start..end].iter().collect()));
                    index = end;
                }
            }
            '"' => {
                let (value, next) = read_string(&chars, index)?;
                tokens.push(Token::Literal(Value::String(value)));
                index = next;
            }
            _ if is_word_char(c) => {
                let start = index;
                while index < chars.len() && is_word_char(chars[index]) {
                    index += 1;
                }
                let word: String = chars[start..index].iter().collect();
                tokens.push(word_token(word));
            }
            other => return Err(format!("unexpected character '{other}' in the filter")),
        }
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '$' | '+')
}

/// Turns `true`, `false`, `null` and numbers into literals; other words stay words.
fn word_token(word: String) -> Token {
    match word.as_str() {
        "true" => Token::Literal(Value::Bool(true)),
        "false" => Token::Literal(Value::Bool(false)),
        "null" => Token::Literal(Value::Null),
        _ => match serde_json::from_str::<serde_json::Number>(&word) {
            Ok(number) if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                Token::Literal(Value::Number(number))
            }
            _ => Token::Word(word),
        },
    }
}

/// Reads a JSON string literal that starts at `chars[start]` (a quote) and
/// returns it with the index after its closing quote.
fn read_string(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut index = start + 1;
    let mut escaped = false;
    while index < chars.len() {
        match chars[index] {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                let literal: String = chars[start..=index].iter().collect();
                let value = serde_json::from_str::<String>(&literal)
                    .map_err(|_| format!("invalid string {literal} in the filter"))?;
                return Ok((value, index + 1));
            }
            _ => escaped = false,
        }
        index += 1;
    }
    Err("a string in the filter has no closing quote".to_owned())
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn or_expression(&mut self) -> Result<Filter, String> {
        let mut left = self.and_expression()?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and_expression()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expression(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn nested(&mut self) -> Result<Filter, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the filter nests deeper than {MAX_DEPTH} levels"));
        }
        let inner = self.or_expression()?;
        self.depth -= 1;
        Ok(inner)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_keyword("not") {
            self.next();
            self.expect(&Token::Open, "'(' after 'not'")?;
            let inner = self.nested()?;
            self.expect(&Token::Close, "')'")?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next();
            let inner = self.nested()?;
            self.expect(&Token::Close, "')'")?;
            return Ok(inner);
        }
        self.attribute_expression()
    }

    fn expect(&mut self, expected: &Token, description: &str) -> Result<(), String> {
        match self.next() {
            Some(token) if &token == expected => Ok(()),
            Some(token) => Err(format!(
                "expected {description} but found {} in the filter",
                token.describe()
            )),
            None => Err(format!("expected {description} but the filter ended")),
        }
    }

    fn attribute_expression(&mut self) -> Result<Filter, String> {
        let path = match self.next() {
            Some(Token::Word(word)) => AttrPath::parse(&word)?,
            Some(token) => {
                return Err(format!(
                    "expected an attribute name but found {} in the filter",
                    token.describe()
                ));
            }
            None => return Err("the filter is empty or ends too early".to_owned()),
        };
        if self.peek() == Some(&Token::OpenBracket) {
            return self.value_path(path);
        }
        self.comparison(path)
    }

    /// Parses what follows `path`: `pr`, or an operator and a value.
    fn comparison(&mut self, path: AttrPath) -> Result<Filter, String> {
        let operator = match self.next() {
            Some(Token::Word(word)) => word,
            Some(token) => {
                return Err(format!(
                    "expected an operator after '{path}' but found {}",
                    token.describe()
                ));
            }
            None => return Err(format!("expected an operator after '{path}'")),
        };
        if operator.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&operator)
            .ok_or_else(|| format!("'{operator}' is not a filter operator"))?;
        match self.next() {
            Some(Token::Literal(value)) => Ok(Filter::Compare { path, op, value }),
            Some(token) => Err(format!(
                "expected a value after '{path} {operator}' but found {}",
                token.describe()
            )),
            None => Err(format!("expected a value after '{path} {operator}'")),
        }
    }

    fn value_path(&mut self, path: AttrPath) -> Result<Filter, String> {
        if path.sub_attribute.is_some() {
            return Err(format!(
                "'{path}[' is invalid: a value filter follows the attribute, not its sub-attribute"
            ));
        }
        self.next();
        let mut inner = self.nested()?;
        self.expect(&Token::CloseBracket, "']'")?;
        if let Some(Token::SubAttribute(sub)) = self.peek().cloned() {
            self.next();
            let sub_path = AttrPath::parse(&sub)?;
            let comparison = self.comparison(sub_path)?;
            inner = Filter::And(Box::new(inner), Box::new(comparison));
        }
        Ok(Filter::ValuePath {
            path,
            filter: Box::new(inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Value {
        json!({
            "id": "A1",
            "externalId": "Ext-7",
            "userName": "Jane.Doe@Example.com",
            "active": true,
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [
                {"type": "work", "value": "jane@work.example", "primary": true},
                {"type": "home", "value": "jane@home.example"}
            ],
            "meta": {"created": "2026-12-04T10:00:00Z"}
        })
    }

    fn matches(filter: &str) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|error| panic!("{filter}: {error}"))
            .matches(&user())
    }

    #[test]
    fn user_name_eq_ignores_case() {
        assert!(matches(r#"userName eq "jane.doe@example.com""#));
        assert!(matches(r#"USERNAME Eq "JANE.DOE@EXAMPLE.COM""#));
        assert!(!matches(r#"userName eq "jane""#));
    }

    #[test]
    fn external_id_is_case_exact() {
        assert!(matches(r#"externalId eq "Ext-7""#));
        assert!(!matches(r#"externalId eq "ext-7""#));
    }

    #[test]
    fn value_path_with_sub_attribute() {
        assert!(matches(
            r#"emails[type eq "work"].value eq "JANE@work.example""#
        ));
        assert!(!matches(
            r#"emails[type eq "work"].value eq "jane@home.example""#
        ));
        assert!(matches(r#"emails[type eq "home" and value co "home"]"#));
    }

    #[test]
    fn multi_valued_sub_attribute_matches_any() {
        assert!(matches(r#"emails.value eq "jane@home.example""#));
        assert!(matches(r#"emails eq "jane@work.example""#));
    }

    #[test]
    fn and_or_not_and_grouping() {
        assert!(matches(
            r#"userName eq "x" or (name.familyName eq "doe" and active eq true)"#
        ));
        assert!(!matches(r#"userName eq "x" or name.familyName eq "Roe""#));
        assert!(matches(r#"not (userName eq "x")"#));
        // `and` binds tighter than `or`.
        assert!(matches(
            r#"userName eq "x" and active eq false or active eq true"#
        ));
    }

    #[test]
    fn string_operators() {
        assert!(matches(r#"userName sw "jane.""#));
        assert!(matches(r#"userName ew "EXAMPLE.COM""#));
        assert!(matches(r#"userName co "doe@""#));
        assert!(matches(r#"meta.created gt "2026-01-01T00:00:00Z""#));
        assert!(matches(r#"userName ne "x""#));
    }

    #[test]
    fn presence_and_null() {
        assert!(matches("externalId pr"));
        assert!(!matches("nickName pr"));
        assert!(matches("nickName eq null"));
    }

    #[test]
    fn core_urn_prefix_is_dropped() {
        assert!(matches(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "Jane.Doe@example.com""#
        ));
        let path = AttrPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap();
        assert_eq!(
            path.schema.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(path.attribute, "manager");
        assert_eq!(path.sub_attribute.as_deref(), Some("value"));
    }

    #[test]
    fn escaped_quote_in_string() {
        let filter = Filter::parse(r#"userName eq "a\"b""#).unwrap();
        assert_eq!(filter.as_equality().map(|(_, value)| value), Some("a\"b"));
    }

    #[test]
    fn invalid_filters_are_rejected() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName xx "a""#,
            r#"userName eq "a"#,
            r#"(userName eq "a""#,
            r#"userName eq "a" and"#,
            r#"emails[type eq "work""#,
            r#"1abc eq "a""#,
            r#"userName eq "a" )"#,
            r#"userName eq bare"#,
            r#"name.givenName[value eq "x"]"#,
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let filter = format!("{}userName eq \"a\"{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::parse(&filter).unwrap_err().contains("nests deeper"));
    }
}
