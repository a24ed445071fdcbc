//! The SCIM User resource and the directory fields it maps to, in both
//! directions, and the ListResponse envelope.
//!
//! | SCIM attribute | directory field |
//! |---|---|
//! | `userName` | CloudLink user name (the IdP's UPN), and the login ID of a new user |
//! | `externalId` | kept for the IdP's filters |
//! | `active` | account active |
//! | `name.givenName`, `name.familyName` | first and last name |
//! | `emails[type eq "work"].value` | primary email |
//! | `roles[primary eq "True"].value` | role |
//! | `phoneNumbers[type eq "work" / "mobile" / "other"].value` | directory number / mobile / DID |
//! | `addresses[type eq "work"]` `formatted`, `streetAddress`, `locality`, `postalCode`, `country` | company, street address, city, postal code, country |
//!
//! The IdP cannot send an empty string, so `-` and `<blank>` clear a field.
//! Attributes outside this table are ignored, and the caller logs their names.

use serde_json::{Map, Value, json};

use super::error::{ScimError, ScimType};
use super::filter::get_ignore_case;
use super::{CORE_USER_SCHEMA, LIST_RESPONSE_SCHEMA};

/// The directory fields that provisioning manages, for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub directory_number: Option<String>,
    pub mobile: Option<String>,
    pub did: Option<String>,
    pub company: Option<String>,
    pub street_address: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// A user as the SCIM endpoint shows it: the managed fields plus the
/// identifiers and timestamps the directory keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub id: String,
    pub record: UserRecord,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// Top-level User attributes that the mapping reads.
const MAPPED: &[&str] = &[
    "schemas",
    "id",
    "meta",
    "userName",
    "externalId",
    "active",
    "name",
    "emails",
    "phoneNumbers",
    "addresses",
    "roles",
];

/// Returns true for the IdP's ways of saying "no value".
pub fn is_clear_marker(text: &str) -> bool {
    let text = text.trim();
    text.is_empty() || text == "-" || text.eq_ignore_ascii_case("<blank>")
}

/// Reads a User resource. Returns the record and the names of the
/// attributes that were ignored because the directory does not store them.
pub fn parse_user(
    body: &Value,
    require_schema: bool,
) -> Result<(UserRecord, Vec<String>), ScimError> {
    let Some(members) = body.as_object() else {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "the request body must be a JSON object (a User resource)",
        ));
    };
    if require_schema {
        let has_schema = get_ignore_case(body, "schemas")
            .and_then(Value::as_array)
            .is_some_and(|schemas| {
                schemas.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(CORE_USER_SCHEMA))
                })
            });
        if !has_schema {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("\"schemas\" must contain \"{CORE_USER_SCHEMA}\""),
            ));
        }
    }

    let mut ignored: Vec<String> = members
        .keys()
        .filter(|key| !MAPPED.iter().any(|name| name.eq_ignore_ascii_case(key)))
        .cloned()
        .collect();

    let user_name = optional_string(body, "userName")?.ok_or_else(|| {
        ScimError::bad_request(ScimType::InvalidValue, "\"userName\" is required")
    })?;
    let name = get_ignore_case(body, "name");
    if let Some(name) = name
        && !name.is_object()
        && !name.is_null()
    {
        return Err(invalid_type("name", "an object"));
    }
    let name = name.cloned().unwrap_or(Value::Null);

    let emails = multi_valued(body, "emails")?;
    let phones = multi_valued(body, "phoneNumbers")?;
    let addresses = multi_valued(body, "addresses")?;
    let roles = multi_valued(body, "roles")?;
    let work_address = find_typed(&addresses, "work");
    note_ignored_values(
        &mut ignored,
        "phoneNumbers",
        &phones,
        &["work", "mobile", "other"],
    );
    note_ignored_values(&mut ignored, "addresses", &addresses, &["work"]);

    let record = UserRecord {
        user_name,
        external_id: optional_string(body, "externalId")?,
        active: match get_ignore_case(body, "active") {
            None | Some(Value::Null) => true,
            Some(value) => read_bool(value).ok_or_else(|| invalid_type("active", "a boolean"))?,
        },
        given_name: optional_string(&name, "givenName")?,
        family_name: optional_string(&name, "familyName")?,
        email: primary_email(&emails)?,
        role: match roles
            .iter()
            .find(|role| get_ignore_case(role, "primary").and_then(read_bool) == Some(true))
        {
            Some(role) => optional_string(role, "value")?,
            None => None,
        },
        directory_number: typed_value(&phones, "work")?,
        mobile: typed_value(&phones, "mobile")?,
        did: typed_value(&phones, "other")?,
        company: sub_string(work_address, "formatted")?,
        street_address: sub_string(work_address, "streetAddress")?,
        city: sub_string(work_address, "locality")?,
        postal_code: sub_string(work_address, "postalCode")?,
        country: sub_string(work_address, "country")?,
    };
    Ok((record, ignored))
}

fn invalid_type(attribute: &str, expected: &str) -> ScimError {
    ScimError::bad_request(
        ScimType::InvalidValue,
        format!("\"{attribute}\" must be {expected}"),
    )
}

/// Reads a boolean, also from the strings `"True"` and `"False"` in any
/// letter case that Entra ID sends.
pub fn read_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) if text.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(text) if text.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Reads an optional string member, with `-` and `<blank>` meaning none.
fn optional_string(object: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match get_ignore_case(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if is_clear_marker(text) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
        Some(_) => Err(invalid_type(name, "a string")),
    }
}

fn multi_valued(body: &Value, name: &str) -> Result<Vec<Value>, ScimError> {
    match get_ignore_case(body, name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items.clone()),
        Some(_) => Err(invalid_type(name, "an array of objects")),
    }
}

fn type_of(item: &Value) -> Option<&str> {
    get_ignore_case(item, "type").and_then(Value::as_str)
}

fn find_typed<'a>(items: &'a [Value], kind: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|item| type_of(item).is_some_and(|t| t.eq_ignore_ascii_case(kind)))
}

fn typed_value(items: &[Value], kind: &str) -> Result<Option<String>, ScimError> {
    sub_string(find_typed(items, kind), "value")
}

fn sub_string(item: Option<&Value>, name: &str) -> Result<Option<String>, ScimError> {
    match item {
        Some(item) => optional_string(item, name),
        None => Ok(None),
    }
}

/// Picks the work email as the primary email. Without one, the value marked
/// primary and then the first value stand in, because some clients send no
/// type.
fn primary_email(emails: &[Value]) -> Result<Option<String>, ScimError> {
    let chosen = find_typed(emails, "work")
        .or_else(|| {
            emails
                .iter()
                .find(|email| get_ignore_case(email, "primary").and_then(read_bool) == Some(true))
        })
        .or_else(|| emails.first());
    sub_string(chosen, "value")
}

fn note_ignored_values(
    ignored: &mut Vec<String>,
    attribute: &str,
    items: &[Value],
    kinds: &[&str],
) {
    for item in items {
        let kind = type_of(item).unwrap_or("");
        if !kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
            ignored.push(format!("{attribute}[type eq \"{kind}\"]"));
        }
    }
}

fn format_time(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Renders a user as a SCIM User resource. `location` is the resource's URL.
pub fn render_user(user: &StoredUser, location: &str) -> Value {
    let record = &user.record;
    let mut resource = Map::new();
    resource.insert("schemas".into(), json!([CORE_USER_SCHEMA]));
    resource.insert("id".into(), json!(user.id));
    if let Some(external_id) = &record.external_id {
        resource.insert("externalId".into(), json!(external_id));
    }
    resource.insert("userName".into(), json!(record.user_name));
    resource.insert("active".into(), json!(record.active));

    let mut name = Map::new();
    if let Some(given) = &record.given_name {
        name.insert("givenName".into(), json!(given));
    }
    if let Some(family) = &record.family_name {
        name.insert("familyName".into(), json!(family));
    }
    if !name.is_empty() {
        resource.insert("name".into(), Value::Object(name));
    }
    if let Some(email) = &record.email {
        resource.insert(
            "emails".into(),
            json!([{"value": email, "type": "work", "primary": true}]),
        );
    }

    let phones: Vec<Value> = [
        ("work", &record.directory_number),
        ("mobile", &record.mobile),
        ("other", &record.did),
    ]
    .into_iter()
    .filter_map(|(kind, value)| {
        value
            .as_ref()
            .map(|value| json!({"value": value, "type": kind}))
    })
    .collect();
    if !phones.is_empty() {
        resource.insert("phoneNumbers".into(), Value::Array(phones));
    }

    let mut address = Map::new();
    for (name, value) in [
        ("formatted", &record.company),
        ("streetAddress", &record.street_address),
        ("locality", &record.city),
        ("postalCode", &record.postal_code),
        ("country", &record.country),
    ] {
        if let Some(value) = value {
            address.insert(name.into(), json!(value));
        }
    }
    if !address.is_empty() {
        address.insert("type".into(), json!("work"));
        resource.insert("addresses".into(), json!([Value::Object(address)]));
    }
    if let Some(role) = &record.role {
        resource.insert("roles".into(), json!([{"value": role, "primary": true}]));
    }

    resource.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": format_time(user.created_at),
            "lastModified": format_time(user.updated_at),
            "location": location,
            "version": format!("W/\"{}\"", user.version),
        }),
    );
    Value::Object(resource)
}

/// Keeps only the requested attributes (RFC 7644 §3.4.2.5), or drops the
/// excluded ones. `id`, `schemas` and `meta` are always returned.
pub fn project(resource: &mut Value, attributes: &[String], excluded: &[String]) {
    let Some(members) = resource.as_object_mut() else {
        return;
    };
    const ALWAYS: &[&str] = &["id", "schemas", "meta"];
    if !attributes.is_empty() {
        members.retain(|key, value| {
            if ALWAYS.contains(&key.as_str()) {
                return true;
            }
            let mut keep_whole = false;
            let mut sub_attributes = Vec::new();
            for requested in attributes {
                let requested = strip_core_urn(requested);
                match requested.split_once('.') {
                    Some((parent, sub)) if parent.eq_ignore_ascii_case(key) => {
                        sub_attributes.push(sub.to_owned());
                    }
                    None if requested.eq_ignore_ascii_case(key) => keep_whole = true,
                    _ => {}
                }
            }
            if keep_whole {
                return true;
            }
            if sub_attributes.is_empty() {
                return false;
            }
            keep_sub_attributes(value, &sub_attributes);
            true
        });
    }
    for excluded in excluded {
        let excluded = strip_core_urn(excluded);
        match excluded.split_once('.') {
            Some((parent, sub)) => {
                if let Some(value) = members
                    .iter_mut()
                    .find(|(key, _)| key.eq_ignore_ascii_case(parent))
                    .map(|(_, value)| value)
                {
                    drop_sub_attribute(value, sub);
                }
            }
            None if !ALWAYS
                .iter()
                .any(|name| name.eq_ignore_ascii_case(excluded)) =>
            {
                members.retain(|key, _| !key.eq_ignore_ascii_case(excluded));
            }
            None => {}
        }
    }
}

fn strip_core_urn(path: &str) -> &str {
    let prefix_length = CORE_USER_SCHEMA.len() + 1;
    if path.len() > prefix_length
        && path[..CORE_USER_SCHEMA.len()].eq_ignore_ascii_case(CORE_USER_SCHEMA)
    {
        &path[prefix_length..]
    } else {
        path
    }
}

fn keep_sub_attributes(value: &mut Value, names: &[String]) {
    let keep = |object: &mut Map<String, Value>| {
        object.retain(|key, _| names.iter().any(|name| name.eq_ignore_ascii_case(key)));
    };
    match value {
        Value::Object(object) => keep(object),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(keep),
        _ => {}
    }
}

fn drop_sub_attribute(value: &mut Value, name: &str) {
    let drop = |object: &mut Map<String, Value>| {
        object.retain(|key, _| !key.eq_ignore_ascii_case(name));
    };
    match value {
        Value::Object(object) => drop(object),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(drop),
        _ => {}
    }
}

/// Wraps resources in a ListResponse (RFC 7644 §3.4.2).
pub fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra_user() -> Value {
        json!({
            "schemas": [CORE_USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "jdoe",
            "userName": "jdoe@contoso.example",
            "active": "True",
            "displayName": "Jane Doe",
            "emails": [{"primary": true, "type": "work", "value": "jane.doe@contoso.example"}],
            "name": {"formatted": "Jane Doe", "familyName": "Doe", "givenName": "Jane"},
            "phoneNumbers": [
                {"type": "mobile", "value": "+16135550123"},
                {"type": "fax", "value": "+16135550199"}
            ],
            "addresses": [{"type": "work", "locality": "Ottawa", "country": "CA", "formatted": "-"}],
            "roles": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Operator"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}
        })
    }

    #[test]
    fn parse_maps_entra_user() {
        let (record, ignored) = parse_user(&entra_user(), true).unwrap();
        assert_eq!(record.user_name, "jdoe@contoso.example");
        assert!(record.active);
        assert_eq!(record.email.as_deref(), Some("jane.doe@contoso.example"));
        assert_eq!(record.family_name.as_deref(), Some("Doe"));
        assert_eq!(record.mobile.as_deref(), Some("+16135550123"));
        assert_eq!(record.role.as_deref(), Some("Operator"));
        assert_eq!(record.city.as_deref(), Some("Ottawa"));
        assert_eq!(record.company, None, "'-' clears the field");
        assert!(ignored.contains(&"displayName".to_owned()), "{ignored:?}");
        assert!(
            ignored.iter().any(|name| name.contains("fax")),
            "{ignored:?}"
        );
    }

    #[test]
    fn parse_reads_string_booleans() {
        let mut user = entra_user();
        user["active"] = json!("False");
        assert!(!parse_user(&user, true).unwrap().0.active);
        user["active"] = json!("maybe");
        assert!(parse_user(&user, true).is_err());
    }

    #[test]
    fn parse_requires_user_name_and_schema() {
        let mut user = entra_user();
        user.as_object_mut().unwrap().remove("userName");
        assert!(parse_user(&user, true).is_err());
        let mut user = entra_user();
        user["schemas"] = json!(["urn:example"]);
        assert!(parse_user(&user, true).is_err());
        assert!(parse_user(&user, false).is_ok());
    }

    #[test]
    fn clear_markers() {
        for marker in ["-", " - ", "<blank>", "<BLANK>", ""] {
            assert!(is_clear_marker(marker), "{marker:?}");
        }
        assert!(!is_clear_marker("--"));
    }

    #[test]
    fn render_then_parse_round_trips() {
        let (record, _) = parse_user(&entra_user(), true).unwrap();
        let stored = StoredUser {
            id: "u1".into(),
            record: record.clone(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        let rendered = render_user(&stored, "http://x/scim/v2/Users/u1");
        let (again, _) = parse_user(&rendered, true).unwrap();
        assert_eq!(again, record);
    }

    #[test]
    fn projection_keeps_requested_attributes() {
        let (record, _) = parse_user(&entra_user(), true).unwrap();
        let stored = StoredUser {
            id: "u1".into(),
            record,
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        let mut resource = render_user(&stored, "l");
        project(
            &mut resource,
            &["userName".into(), "name.familyName".into()],
            &[],
        );
        assert_eq!(resource["name"], json!({"familyName": "Doe"}));
        assert!(resource.get("emails").is_none());
        assert_eq!(resource["id"], "u1");

        let mut resource = render_user(&stored, "l");
        project(&mut resource, &[], &["emails".into(), "id".into()]);
        assert!(resource.get("emails").is_none());
        assert_eq!(resource["id"], "u1", "id is always returned");
    }
}
