//! The discovery documents of RFC 7644 §4: ServiceProviderConfig,
//! ResourceTypes and Schemas. The User schema lists only the attributes
//! that the directory stores, so clients see what survives a round trip,
//! and marks as required what a change needs to be applied instead of
//! detained: userName, active, the last name and the work email.

use serde_json::{Value, json};

use super::{
    CORE_USER_SCHEMA, MAX_BODY_BYTES, MAX_PAGE_SIZE, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA,
    SERVICE_PROVIDER_CONFIG_SCHEMA,
};

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": MAX_BODY_BYTES},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Secret Token",
            "description": "The bearer token that `unified-login scim generate-keys` prints",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

pub fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A user of the login broker",
        "schema": CORE_USER_SCHEMA,
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
    })
}

fn attribute(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": false,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none"
    })
}

fn with(mut attribute: Value, changes: Value) -> Value {
    if let (Some(target), Some(changes)) = (attribute.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            target.insert(key.clone(), value.clone());
        }
    }
    attribute
}

fn required(attribute: Value) -> Value {
    with(attribute, json!({"required": true}))
}

fn multi_valued(name: &str, description: &str, sub_attributes: Vec<Value>) -> Value {
    with(
        attribute(name, "complex", description),
        json!({"multiValued": true, "subAttributes": sub_attributes}),
    )
}

fn type_attribute(kinds: &[&str]) -> Value {
    with(
        attribute(
            "type",
            "string",
            "The kind of value; other kinds are ignored",
        ),
        json!({"canonicalValues": kinds}),
    )
}

pub fn user_schema(base: &str) -> Value {
    let attributes = vec![
        with(
            attribute(
                "userName",
                "string",
                "CloudLink user name (the IdP's UPN); the login ID of a new user",
            ),
            json!({"required": true, "uniqueness": "server"}),
        ),
        with(
            attribute("externalId", "string", "The IdP's identifier of the user"),
            json!({"caseExact": true}),
        ),
        required(attribute(
            "active",
            "boolean",
            "Whether the user can sign in",
        )),
        with(
            required(attribute("name", "complex", "The user's name")),
            json!({"subAttributes": [
                attribute("givenName", "string", "First name"),
                required(attribute("familyName", "string", "Last name")),
            ]}),
        ),
        required(multi_valued(
            "emails",
            "The work email is the primary email",
            vec![
                required(attribute("value", "string", "Email address")),
                type_attribute(&["work"]),
                attribute("primary", "boolean", "Whether this is the primary email"),
            ],
        )),
        multi_valued(
            "phoneNumbers",
            "work: directory number; mobile: E.164 mobile number; other: DID",
            vec![
                attribute(
                    "value",
                    "string",
                    "Phone number; a mobile number in E.164 form",
                ),
                type_attribute(&["work", "mobile", "other"]),
            ],
        ),
        multi_valued(
            "addresses",
            "The work address",
            vec![
                type_attribute(&["work"]),
                attribute("formatted", "string", "Company name"),
                attribute("streetAddress", "string", "Street address"),
                attribute("locality", "string", "City"),
                attribute("postalCode", "string", "Postal code"),
                attribute("country", "string", "Country"),
            ],
        ),
        multi_valued(
            "roles",
            "The primary value is the user's role",
            vec![
                attribute("value", "string", "Role name"),
                attribute("primary", "boolean", "Whether this is the user's role"),
            ],
        ),
    ];
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": CORE_USER_SCHEMA,
        "name": "User",
        "description": "User account",
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{CORE_USER_SCHEMA}")}
    })
}
