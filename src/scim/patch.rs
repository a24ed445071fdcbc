//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource in its JSON form.
//!
//! The request shapes of Microsoft Entra ID's provisioning service are
//! accepted as well: operation names in any letter case (`Replace`), an
//! operation without `path` whose value maps paths such as `name.givenName`
//! or `emails[type eq "work"].value` to values, and `add` or `replace` with a
//! `type eq "..."` value filter that matches nothing, which creates that
//! value (Entra sends this for a user's first work phone number, where
//! RFC 7644 would answer `noTarget`). Boolean strings such as `"False"` are
//! left for [`super::resources`] to read.

use serde_json::{Map, Value};

use super::PATCH_OP_SCHEMA;
use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, CompareOp, Filter, get_ignore_case, split_schema};

/// Multi-valued attributes of the User schema (RFC 7643 §4.1.2).
const MULTI_VALUED: &[&str] = &[
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// Attributes that a client can never write (RFC 7643 §3.1 and §4.1.2).
const READ_ONLY: &[&str] = &["id", "meta", "groups"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

/// A PATCH target: `attr[.sub]`, or `attr[filter][.sub]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
}

impl PatchPath {
    /// Parses a PATCH path. The error is the `detail` of an `invalidPath` response.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (schema, rest) = split_schema(text);
        let Some(open) = rest.find('[') else {
            let mut attr = AttrPath::parse(rest)?;
            attr.schema = schema;
            return Ok(Self { attr, filter: None });
        };
        let close = rest
            .rfind(']')
            .filter(|close| *close > open)
            .ok_or_else(|| format!("the path '{text}' has '[' without a closing ']'"))?;
        let mut attr = AttrPath::parse(&rest[..open])?;
        if attr.sub_attribute.is_some() {
            return Err(format!(
                "the path '{text}' puts a value filter after a sub-attribute"
            ));
        }
        let filter = Filter::parse(&rest[open + 1..close])
            .map_err(|error| format!("the filter in the path '{text}' is invalid: {error}"))?;
        let after = &rest[close + 1..];
        if let Some(sub) = after.strip_prefix('.') {
            let sub_path = AttrPath::parse(sub)?;
            if sub_path.sub_attribute.is_some() {
                return Err(format!("the path '{text}' is nested too deeply"));
            }
            attr.sub_attribute = Some(sub_path.attribute);
        } else if !after.is_empty() {
            return Err(format!(
                "unexpected '{after}' at the end of the path '{text}'"
            ));
        }
        attr.schema = schema;
        Ok(Self {
            attr,
            filter: Some(filter),
        })
    }
}

impl std::fmt::Display for PatchPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.filter {
            None => write!(f, "{}", self.attr),
            Some(_) => {
                if let Some(schema) = &self.attr.schema {
                    write!(f, "{schema}:")?;
                }
                write!(f, "{}[…]", self.attr.attribute)?;
                if let Some(sub) = &self.attr.sub_attribute {
                    write!(f, ".{sub}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// Reads a PatchOp request body into its operations.
pub fn parse_request(body: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    if !body.is_object() {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "the PATCH body must be a JSON object with \"schemas\" and \"Operations\"",
        ));
    }
    let has_schema = get_ignore_case(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|schemas| {
            schemas.iter().any(|schema| {
                schema
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
            })
        });
    if !has_schema {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("\"schemas\" must contain \"{PATCH_OP_SCHEMA}\""),
        ));
    }
    let operations = get_ignore_case(body, "Operations")
        .and_then(Value::as_array)
        .filter(|operations| !operations.is_empty())
        .ok_or_else(|| {
            ScimError::bad_request(
                ScimType::InvalidValue,
                "\"Operations\" must be a non-empty array",
            )
        })?;
    operations.iter().map(parse_operation).collect()
}

fn parse_operation(operation: &Value) -> Result<PatchOperation, ScimError> {
    let op_name = get_ignore_case(operation, "op")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let op = match op_name.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "remove" => OpKind::Remove,
        "replace" => OpKind::Replace,
        _ => {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("\"op\" must be add, remove or replace, not '{op_name}'"),
            ));
        }
    };
    let path = match get_ignore_case(operation, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => Some(
            PatchPath::parse(text)
                .map_err(|detail| ScimError::bad_request(ScimType::InvalidPath, detail))?,
        ),
        Some(_) => {
            return Err(ScimError::bad_request(
                ScimType::InvalidPath,
                "\"path\" must be a string",
            ));
        }
    };
    let value = get_ignore_case(operation, "value").cloned();
    match (op, &path, &value) {
        (OpKind::Remove, None, _) => Err(ScimError::bad_request(
            ScimType::NoTarget,
            "a remove operation needs a \"path\"",
        )),
        (OpKind::Add | OpKind::Replace, _, None) => Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("the {op_name} operation has no \"value\""),
        )),
        (OpKind::Add | OpKind::Replace, None, Some(value)) if !value.is_object() => {
            Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("an {op_name} operation without \"path\" needs an object as \"value\""),
            ))
        }
        _ => Ok(PatchOperation { op, path, value }),
    }
}

/// Applies `operations` in order to `resource`, a User in its JSON form.
pub fn apply(resource: &mut Value, operations: &[PatchOperation]) -> Result<(), ScimError> {
    for operation in operations {
        match &operation.path {
            Some(path) => apply_at(resource, operation.op, path, operation.value.as_ref())?,
            None => {
                let members = operation.value.as_ref().and_then(Value::as_object).cloned();
                for (key, value) in members.unwrap_or_default() {
                    apply_member(resource, operation.op, &key, value)?;
                }
            }
        }
    }
    Ok(())
}

/// Applies one member of a path-less add or replace. The key is a path,
/// an attribute, or an extension schema URN whose object contains attributes.
fn apply_member(
    resource: &mut Value,
    op: OpKind,
    key: &str,
    value: Value,
) -> Result<(), ScimError> {
    if key.len() > 4 && key[..4].eq_ignore_ascii_case("urn:") && value.is_object() {
        let (schema, rest) = split_schema(key);
        // "urn:…:User" with an object value is an extension's attributes, unless
        // the part after the last colon names an attribute of the core schema.
        let is_extension_object =
            schema.is_some() && rest.chars().next().is_some_and(char::is_uppercase);
        if is_extension_object {
            for (name, member) in value.as_object().cloned().unwrap_or_default() {
                apply_member(resource, op, &format!("{key}:{name}"), member)?;
            }
            return Ok(());
        }
    }
    let path = PatchPath::parse(key)
        .map_err(|detail| ScimError::bad_request(ScimType::InvalidPath, detail))?;
    apply_at(resource, op, &path, Some(&value))
}

fn apply_at(
    resource: &mut Value,
    op: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if path.attr.schema.is_none()
        && READ_ONLY
            .iter()
            .any(|name| name.eq_ignore_ascii_case(&path.attr.attribute))
    {
        return Err(ScimError::bad_request(
            ScimType::Mutability,
            format!("the attribute '{}' is read-only", path.attr.attribute),
        ));
    }
    let container = container_for(resource, path, op)?;
    let Some(container) = container else {
        return Ok(());
    };
    let attribute = path.attr.attribute.as_str();
    let value = value.cloned().unwrap_or(Value::Null);
    match (&path.filter, &path.attr.sub_attribute) {
        (None, None) => {
            apply_to_attribute(container, op, attribute, value);
            Ok(())
        }
        (None, Some(sub)) => apply_to_sub_attribute(container, op, attribute, sub, value),
        (Some(filter), sub) => {
            apply_filtered(container, op, attribute, filter, sub.as_deref(), value)
        }
    }
}

/// Returns the object that contains the path's attribute: the resource, or the
/// extension object for a schema-qualified path (created for add and replace).
fn container_for<'a>(
    resource: &'a mut Value,
    path: &PatchPath,
    op: OpKind,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(root) = resource.as_object_mut() else {
        return Err(ScimError::Internal(anyhow::anyhow!(
            "PATCH target is not a JSON object"
        )));
    };
    let Some(schema) = &path.attr.schema else {
        return Ok(Some(root));
    };
    if op == OpKind::Remove && member_mut(root, schema).is_none() {
        return Ok(None);
    }
    let extension = entry_ignore_case(root, schema);
    if !extension.is_object() {
        *extension = Value::Object(Map::new());
    }
    Ok(extension.as_object_mut())
}

fn is_multi_valued(attribute: &str) -> bool {
    MULTI_VALUED
        .iter()
        .any(|name| name.eq_ignore_ascii_case(attribute))
}

fn apply_to_attribute(
    container: &mut Map<String, Value>,
    op: OpKind,
    attribute: &str,
    value: Value,
) {
    if op == OpKind::Remove {
        remove_ignore_case(container, attribute);
        return;
    }
    let multi_valued = is_multi_valued(attribute);
    let target = entry_ignore_case(container, attribute);
    match (op, target, value) {
        // add appends to a multi-valued attribute, skipping values already there.
        (OpKind::Add, target, value) if multi_valued => {
            let additions = match value {
                Value::Array(items) => items,
                single => vec![single],
            };
            if !target.is_array() {
                *target = Value::Array(Vec::new());
            }
            if let Value::Array(items) = target {
                for addition in additions {
                    if !items.contains(&addition) {
                        items.push(addition);
                    }
                }
            }
        }
        (OpKind::Replace, target, value) if multi_valued => {
            *target = match value {
                Value::Array(items) => Value::Array(items),
                single => Value::Array(vec![single]),
            };
        }
        // A complex value is merged: sub-attributes not given stay as they are.
        (_, Value::Object(existing), Value::Object(incoming)) => {
            for (key, member) in incoming {
                *entry_ignore_case(existing, &key) = member;
            }
        }
        (_, target, value) => *target = value,
    }
}

fn apply_to_sub_attribute(
    container: &mut Map<String, Value>,
    op: OpKind,
    attribute: &str,
    sub: &str,
    value: Value,
) -> Result<(), ScimError> {
    if op == OpKind::Remove {
        match member_mut(container, attribute) {
            Some(Value::Object(parent)) => {
                remove_ignore_case(parent, sub);
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    remove_ignore_case(item, sub);
                }
            }
            _ => {}
        }
        return Ok(());
    }
    let parent = entry_ignore_case(container, attribute);
    match parent {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ScimError::bad_request(
                    ScimType::NoTarget,
                    format!("'{attribute}' has no values whose '{sub}' could be set"),
                ));
            }
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                *entry_ignore_case(item, sub) = value.clone();
            }
        }
        Value::Object(parent) => *entry_ignore_case(parent, sub) = value,
        other => {
            let mut parent = Map::new();
            parent.insert(sub.to_owned(), value);
            *other = Value::Object(parent);
        }
    }
    Ok(())
}

fn apply_filtered(
    container: &mut Map<String, Value>,
    op: OpKind,
    attribute: &str,
    filter: &Filter,
    sub: Option<&str>,
    value: Value,
) -> Result<(), ScimError> {
    if op == OpKind::Remove {
        let Some(Value::Array(items)) = member_mut(container, attribute) else {
            return Ok(());
        };
        match sub {
            Some(sub) => {
                for item in items.iter_mut().filter(|item| filter.matches(item)) {
                    if let Some(item) = item.as_object_mut() {
                        remove_ignore_case(item, sub);
                    }
                }
            }
            None => items.retain(|item| !filter.matches(item)),
        }
        if items.is_empty() {
            remove_ignore_case(container, attribute);
        }
        return Ok(());
    }

    let target = entry_ignore_case(container, attribute);
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Value::Array(items) = target else {
        unreachable!("the target was just made an array");
    };
    let mut matched = 0;
    for item in items.iter_mut().filter(|item| filter.matches(item)) {
        matched += 1;
        match (sub, item) {
            (Some(sub), Value::Object(item)) => *entry_ignore_case(item, sub) = value.clone(),
            (None, Value::Object(item)) if value.is_object() => {
                for (key, member) in value.as_object().cloned().unwrap_or_default() {
                    *entry_ignore_case(item, &key) = member;
                }
            }
            (None, item) => *item = value.clone(),
            (Some(_), _) => {}
        }
    }
    if matched > 0 {
        return Ok(());
    }

    // No value matched: create one when the filter specifies what it must look like.
    let Some(mut created) = equality_members(filter) else {
        return Err(ScimError::bad_request(
            ScimType::NoTarget,
            format!("no value of '{attribute}' matches the filter"),
        ));
    };
    match (sub, value) {
        (Some(sub), value) => {
            created.insert(sub.to_owned(), value);
        }
        (None, Value::Object(members)) => created.extend(members),
        (None, other) => {
            created.insert("value".to_owned(), other);
        }
    }
    items.push(Value::Object(created));
    Ok(())
}

/// Returns the members that a filter made only of `attr eq "value"` joined
/// by `and` requires, such as `{"type": "work"}`.
fn equality_members(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.schema.is_none() && path.sub_attribute.is_none() && !value.is_null() => {
            let mut members = Map::new();
            members.insert(path.attribute.clone(), value.clone());
            Some(members)
        }
        Filter::And(left, right) => {
            let mut members = equality_members(left)?;
            members.extend(equality_members(right)?);
            Some(members)
        }
        _ => None,
    }
}

/// Returns the member named `name` in any letter case.
fn member_mut<'a>(object: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Value> {
    let key = object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))?
        .clone();
    object.get_mut(&key)
}

/// Returns the member named `name` in any letter case, inserting null under
/// `name` when there is none.
fn entry_ignore_case<'a>(object: &'a mut Map<String, Value>, name: &str) -> &'a mut Value {
    let key = object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned());
    object.entry(key).or_insert(Value::Null)
}

fn remove_ignore_case(object: &mut Map<String, Value>, name: &str) {
    object.retain(|key, _| !key.eq_ignore_ascii_case(name));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    fn patched(resource: Value, operations: Value) -> Value {
        let mut resource = resource;
        let operations = parse_request(&request(operations)).expect("valid request");
        apply(&mut resource, &operations).expect("applied");
        resource
    }

    fn rejected(operations: Value) -> (ScimType, String) {
        let mut resource = json!({"userName": "a"});
        let error = parse_request(&request(operations))
            .and_then(|operations| apply(&mut resource, &operations))
            .expect_err("rejected");
        match error {
            ScimError::Client {
                scim_type: Some(scim_type),
                detail,
                ..
            } => (scim_type, detail),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn path_with_value_filter_and_sub_attribute() {
        let path = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.attr.attribute, "emails");
        assert_eq!(path.attr.sub_attribute.as_deref(), Some("value"));
        assert!(path.filter.unwrap().matches(&json!({"type": "WORK"})));
    }

    #[test]
    fn path_with_core_urn_and_extension_urn() {
        let core =
            PatchPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").unwrap();
        assert_eq!(core.attr.schema, None);
        assert_eq!(core.attr.attribute, "name");
        let extension = PatchPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        )
        .unwrap();
        assert!(
            extension
                .attr
                .schema
                .unwrap()
                .ends_with("enterprise:2.0:User")
        );
        assert_eq!(extension.attr.attribute, "department");
    }

    #[test]
    fn invalid_paths_are_rejected() {
        for bad in [
            "emails[type eq \"work\"",
            "emails[type eq]",
            "name.givenName.x",
            "emails[type eq \"work\"]value",
            "9lives",
            "name.givenName[type eq \"x\"]",
        ] {
            assert!(PatchPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn op_names_in_any_case() {
        let resource = patched(
            json!({"userName": "a", "active": true}),
            json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "ADD", "path": "nickName", "value": "Babs"},
                {"op": "remove", "path": "NICKNAME"}
            ]),
        );
        assert_eq!(resource["active"], json!("False"));
        assert!(resource.get("nickName").is_none(), "{resource}");
    }

    #[test]
    fn replace_filtered_sub_attribute_updates_match() {
        let resource = patched(
            json!({"emails": [
                {"type": "work", "value": "old@example.com", "primary": true},
                {"type": "home", "value": "home@example.com"}
            ]}),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
        );
        assert_eq!(resource["emails"][0]["value"], "new@example.com");
        assert_eq!(resource["emails"][0]["primary"], true);
        assert_eq!(resource["emails"][1]["value"], "home@example.com");
    }

    #[test]
    fn add_filtered_sub_attribute_creates_missing_value() {
        let resource = patched(
            json!({"userName": "a"}),
            json!([
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+16135550123"},
                {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Ottawa"},
                {"op": "Add", "path": "addresses[type eq \"work\"].postalCode", "value": "K2K 3G4"}
            ]),
        );
        assert_eq!(
            resource["phoneNumbers"],
            json!([{"type": "mobile", "value": "+16135550123"}])
        );
        assert_eq!(
            resource["addresses"],
            json!([{"type": "work", "locality": "Ottawa", "postalCode": "K2K 3G4"}])
        );
    }

    #[test]
    fn replace_without_match_and_complex_filter_is_no_target() {
        let (scim_type, _) = rejected(json!([
            {"op": "replace", "path": "emails[value co \"x\"].type", "value": "work"}
        ]));
        assert_eq!(scim_type, ScimType::NoTarget);
    }

    #[test]
    fn no_path_value_with_dotted_and_filtered_keys() {
        let resource = patched(
            json!({"userName": "a", "name": {"givenName": "Old", "familyName": "Doe"}}),
            json!([{"op": "Replace", "value": {
                "name.givenName": "Jane",
                "emails[type eq \"work\"].value": "jane@example.com",
                "active": "True",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}
            }}]),
        );
        assert_eq!(resource["name"]["givenName"], "Jane");
        assert_eq!(resource["name"]["familyName"], "Doe");
        assert_eq!(resource["emails"][0]["value"], "jane@example.com");
        assert_eq!(resource["active"], "True");
        assert_eq!(
            resource["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Sales"
        );
    }

    #[test]
    fn complex_replace_merges_sub_attributes() {
        let resource = patched(
            json!({"name": {"givenName": "Jane", "familyName": "Doe"}}),
            json!([{"op": "replace", "path": "name", "value": {"familyName": "Roe"}}]),
        );
        assert_eq!(
            resource["name"],
            json!({"givenName": "Jane", "familyName": "Roe"})
        );
    }

    #[test]
    fn add_to_multi_valued_appends_once() {
        let resource = patched(
            json!({"emails": [{"type": "work", "value": "a@example.com"}]}),
            json!([{"op": "add", "path": "emails", "value": [
                {"type": "work", "value": "a@example.com"},
                {"type": "home", "value": "b@example.com"}
            ]}]),
        );
        assert_eq!(resource["emails"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn remove_filtered_values() {
        let resource = patched(
            json!({"phoneNumbers": [
                {"type": "mobile", "value": "+1"},
                {"type": "work", "value": "100"}
            ]}),
            json!([{"op": "remove", "path": "phoneNumbers[type eq \"mobile\"]"}]),
        );
        assert_eq!(
            resource["phoneNumbers"],
            json!([{"type": "work", "value": "100"}])
        );
        let emptied = patched(
            resource,
            json!([{"op": "remove", "path": "phoneNumbers[type eq \"work\"]"}]),
        );
        assert!(emptied.get("phoneNumbers").is_none(), "{emptied}");
    }

    #[test]
    fn read_only_attributes_are_mutability_errors() {
        let (scim_type, detail) = rejected(json!([{"op": "replace", "path": "id", "value": "x"}]));
        assert_eq!(scim_type, ScimType::Mutability);
        assert!(detail.contains("'id'"), "{detail}");
    }

    #[test]
    fn malformed_requests_are_rejected() {
        assert_eq!(rejected(json!([{"op": "remove"}])).0, ScimType::NoTarget);
        assert_eq!(
            rejected(json!([{"op": "copy", "path": "a"}])).0,
            ScimType::InvalidSyntax
        );
        assert_eq!(
            rejected(json!([{"op": "add", "path": "nickName"}])).0,
            ScimType::InvalidValue
        );
        assert_eq!(
            rejected(json!([{"op": "add", "value": "x"}])).0,
            ScimType::InvalidValue
        );
        assert_eq!(
            rejected(json!([{"op": "add", "path": "emails[type", "value": "x"}])).0,
            ScimType::InvalidPath
        );
        let missing_schema =
            parse_request(&json!({"Operations": [{"op": "add", "path": "a", "value": 1}]}));
        assert!(missing_schema.is_err());
        let no_operations = parse_request(&request(json!([])));
        assert!(no_operations.is_err());
    }
}
