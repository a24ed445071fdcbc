//! SCIM 2.0 provisioning against the running binary: bearer-token checks,
//! filters and paging, the User life cycle, error responses, the detained
//! queue and its commands, a replay of Entra ID's requests, and the
//! scim2-tester compliance checks.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::harness::{Broker, Options, PASSWORD};
use crate::saml_flow::Client as BrowserClient;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const DETAINED_HEADER: &str = "x-unified-login-detained";

/// A response with its JSON body (`Value::Null` when there is none).
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn scim_type(&self) -> Option<&str> {
        self.body["scimType"].as_str()
    }
}

/// A running broker with a Secret Token and an HTTP client for its SCIM API.
struct Scim {
    broker: Broker,
    token: String,
    http: reqwest::Client,
}

/// Runs `scim generate-keys` and returns the token it printed.
fn generate_keys(broker: &Broker) -> String {
    let output = broker.cli(&["scim", "generate-keys"], "");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "generate-keys: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("Secret Token: "))
        .expect("Secret Token line")
        .trim()
        .to_owned()
}

impl Scim {
    fn start() -> Self {
        let mut broker = Broker::prepare(Options::default());
        let token = generate_keys(&broker);
        broker.serve();
        Self {
            broker,
            token,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("HTTP client"),
        }
    }

    fn url(&self, path: &str) -> String {
        self.broker.url(&format!("/scim/v2{path}"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("SCIM request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body expected: {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    async fn query(&self, filter: &str) -> Reply {
        self.send(
            self.http
                .get(self.url("/Users"))
                .query(&[("filter", filter)])
                .bearer_auth(&self.token),
        )
        .await
    }

    async fn write(&self, method: reqwest::Method, path: &str, body: &Value) -> Reply {
        self.send(
            self.http
                .request(method, self.url(path))
                .bearer_auth(&self.token)
                .header(CONTENT_TYPE, "application/scim+json")
                .body(body.to_string()),
        )
        .await
    }

    async fn post(&self, body: &Value) -> Reply {
        self.write(reqwest::Method::POST, "/Users", body).await
    }

    async fn patch(&self, id: &str, operations: Value) -> Reply {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": operations});
        self.write(reqwest::Method::PATCH, &format!("/Users/{id}"), &body)
            .await
    }

    /// Creates a user and returns its id, failing the test unless it was created.
    async fn create(&self, body: &Value) -> String {
        let reply = self.post(body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(
            reply.header(DETAINED_HEADER),
            None,
            "detained: {}",
            reply.body
        );
        reply.body["id"].as_str().expect("id").to_owned()
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.broker.cli(args, "")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Returns `(id, operation, reason)` for each line of `scim detained list`.
    fn detained(&self) -> Vec<(i64, String, String)> {
        let listing = self.cli_ok(&["scim", "detained", "list"]);
        listing
            .lines()
            .skip(1)
            .filter(|line| !line.starts_with("No detained"))
            .map(|line| {
                let mut columns = line.split_whitespace();
                let id = columns
                    .next()
                    .and_then(|id| id.parse().ok())
                    .expect("entry id");
                let operation = columns.next().expect("change").to_owned();
                // The reason follows the RFC 3339 time, the only column ending in "Z".
                let reason_start = line.find("Z ").expect("received time") + 2;
                (id, operation, line[reason_start..].trim().to_owned())
            })
            .collect()
    }
}

/// Builds a User resource as Entra ID sends it in a POST, with invented values.
fn entra_user(user_name: &str, email: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": user_name.split('@').next().unwrap_or(user_name),
        "userName": user_name,
        "active": true,
        "displayName": "Test User",
        "emails": [{"primary": true, "type": "work", "value": email}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Test User", "familyName": "User", "givenName": "Test"},
        "roles": [],
        ENTERPRISE_SCHEMA: {"department": "Sales"}
    })
}

fn assert_scim_error(reply: &Reply, status: StatusCode, scim_type: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.body["schemas"],
        json!([ERROR_SCHEMA]),
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], json!(status.as_u16().to_string()));
    assert!(
        reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail: {}",
        reply.body
    );
    assert_eq!(reply.scim_type(), scim_type, "{}", reply.body);
}

fn resources(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["Resources"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn user_names(reply: &Reply) -> BTreeSet<String> {
    resources(reply)
        .iter()
        .map(|user| user["userName"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn requests_without_valid_token_rejected() {
    let scim = Scim::start();

    let anonymous = scim.send(scim.http.get(scim.url("/Users"))).await;
    assert_scim_error(&anonymous, StatusCode::UNAUTHORIZED, None);
    assert!(
        anonymous
            .header(WWW_AUTHENTICATE.as_str())
            .is_some_and(|value| value.starts_with("Bearer")),
        "WWW-Authenticate: {:?}",
        anonymous.headers
    );

    let wrong = scim
        .send(
            scim.http
                .get(scim.url("/Users"))
                .bearer_auth("ulscim_wrong"),
        )
        .await;
    assert_scim_error(&wrong, StatusCode::UNAUTHORIZED, None);

    let basic = scim
        .send(
            scim.http
                .get(scim.url("/Users"))
                .header("Authorization", format!("Basic {}", scim.token)),
        )
        .await;
    assert_scim_error(&basic, StatusCode::UNAUTHORIZED, None);

    assert_eq!(scim.get("/Users").await.status, StatusCode::OK);

    let second = generate_keys(&scim.broker);
    let revoked = scim.get("/Users").await;
    assert_scim_error(&revoked, StatusCode::UNAUTHORIZED, None);
    let fresh = scim
        .send(scim.http.get(scim.url("/Users")).bearer_auth(&second))
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);

    scim.cli_ok(&["scim", "disable"]);
    let disabled = scim
        .send(scim.http.get(scim.url("/Users")).bearer_auth(&second))
        .await;
    assert_scim_error(&disabled, StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn generate_keys_prints_tenant_url() {
    let broker = Broker::prepare(Options::default());
    let output = broker.cli(&["scim", "generate-keys"], "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains(&format!("Tenant URL:   {}/scim/v2", broker.base_url)),
        "{stdout}"
    );
    let token = generate_keys(&broker);
    assert!(token.len() >= 40, "token {token} is too short");
    assert!(!stdout.contains(&token), "a new token each time");
}

#[tokio::test]
async fn discovery_endpoints_describe_users_only() {
    let scim = Scim::start();

    let config = scim.get("/ServiceProviderConfig").await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(
        config.header(CONTENT_TYPE.as_str()),
        Some("application/scim+json")
    );
    assert_eq!(config.body["patch"]["supported"], true);
    assert_eq!(config.body["filter"]["supported"], true);
    assert_eq!(config.body["bulk"]["supported"], false);

    let types = scim.get("/ResourceTypes").await;
    let names: Vec<&str> = types.body["Resources"]
        .as_array()
        .expect("Resources")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["User"]);

    let schema = scim.get(&format!("/Schemas/{USER_SCHEMA}")).await;
    assert_eq!(schema.status, StatusCode::OK);
    let attributes: Vec<&str> = schema.body["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    for expected in [
        "userName",
        "active",
        "name",
        "emails",
        "phoneNumbers",
        "addresses",
        "roles",
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected} in {attributes:?}"
        );
    }

    let groups = scim.get("/Groups").await;
    assert_scim_error(&groups, StatusCode::NOT_FOUND, None);
    assert!(
        groups.body["detail"]
            .as_str()
            .unwrap()
            .contains("Groups are not provisioned")
    );
    let group_filter = scim.get("/Groups?filter=displayName%20eq%20%22x%22").await;
    assert_eq!(group_filter.status, StatusCode::NOT_FOUND);
    let unknown = scim.get("/Nothing").await;
    assert_scim_error(&unknown, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn filters_select_users() {
    let scim = Scim::start();
    let mut ada = entra_user("ada@contoso.example", "ada.l@contoso.example");
    ada["externalId"] = json!("Ext-Ada");
    scim.create(&ada).await;
    scim.create(&entra_user("bob@contoso.example", "bob@contoso.example"))
        .await;
    let mut cy = entra_user("cy@contoso.example", "cy@contoso.example");
    cy["active"] = json!(false);
    scim.create(&cy).await;

    let by_name = scim.query(r#"userName eq "ADA@Contoso.Example""#).await;
    assert_eq!(
        user_names(&by_name),
        BTreeSet::from(["ada@contoso.example".to_owned()])
    );
    assert_eq!(by_name.body["totalResults"], 1);

    let attribute_case = scim.query(r#"USERNAME EQ "bob@contoso.example""#).await;
    assert_eq!(
        attribute_case.body["totalResults"], 1,
        "{}",
        attribute_case.body
    );

    let external = scim.query(r#"externalId eq "Ext-Ada""#).await;
    assert_eq!(external.body["totalResults"], 1);
    let external_case = scim.query(r#"externalId eq "ext-ada""#).await;
    assert_eq!(
        external_case.body["totalResults"], 0,
        "externalId is case-exact"
    );

    let by_email = scim
        .query(r#"emails[type eq "work"].value eq "ADA.L@contoso.example""#)
        .await;
    assert_eq!(
        user_names(&by_email),
        BTreeSet::from(["ada@contoso.example".to_owned()])
    );

    let either = scim
        .query(r#"userName eq "ada@contoso.example" or userName eq "bob@contoso.example""#)
        .await;
    assert_eq!(either.body["totalResults"], 2);
    let both = scim.query(r#"userName sw "c" and active eq false"#).await;
    assert_eq!(
        user_names(&both),
        BTreeSet::from(["cy@contoso.example".to_owned()])
    );
    let none = scim.query(r#"userName eq "nobody@contoso.example""#).await;
    assert_eq!(none.body["totalResults"], 0);
    assert_eq!(resources(&none), Vec::<Value>::new());

    let bad = scim.query(r#"userName eq"#).await;
    assert_scim_error(&bad, StatusCode::BAD_REQUEST, Some("invalidFilter"));
    let bad_operator = scim.query(r#"userName is "a""#).await;
    assert_scim_error(
        &bad_operator,
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
    );
}

#[tokio::test]
async fn paging_returns_requested_window() {
    let scim = Scim::start();
    for index in 0..5 {
        let name = format!("user{index}@contoso.example");
        scim.create(&entra_user(&name, &name)).await;
    }

    // Users created in the same second have no defined order among
    // themselves, so the window is checked against the full listing.
    let all = scim.get("/Users").await;
    let order: Vec<String> = resources(&all)
        .iter()
        .map(|user| user["userName"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order.len(), 5, "{}", all.body);
    let page = scim.get("/Users?startIndex=2&count=2").await;
    assert_eq!(page.body["totalResults"], 5);
    assert_eq!(page.body["startIndex"], 2);
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(
        user_names(&page),
        BTreeSet::from([order[1].clone(), order[2].clone()])
    );

    let last = scim.get("/Users?startIndex=5&count=10").await;
    assert_eq!(resources(&last).len(), 1);
    let beyond = scim.get("/Users?startIndex=9").await;
    assert_eq!(resources(&beyond).len(), 0);
    assert_eq!(beyond.body["totalResults"], 5);
    let count_only = scim.get("/Users?count=0").await;
    assert_eq!(count_only.body["totalResults"], 5);
    assert_eq!(resources(&count_only).len(), 0);
    let below_one = scim.get("/Users?startIndex=0&count=1").await;
    assert_eq!(below_one.body["startIndex"], 1);
    let bad = scim.get("/Users?count=many").await;
    assert_scim_error(&bad, StatusCode::BAD_REQUEST, Some("invalidValue"));

    let projected = scim.get("/Users?attributes=userName&count=1").await;
    let first = &resources(&projected)[0];
    assert!(first.get("emails").is_none(), "{first}");
    assert!(
        first.get("id").is_some() && first.get("userName").is_some(),
        "{first}"
    );
}

#[tokio::test]
async fn user_create_read_replace_patch_delete() {
    let scim = Scim::start();
    let body = entra_user("dana@contoso.example", "dana@contoso.example");

    let created = scim.post(&body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.header(LOCATION.as_str()),
        Some(scim.url(&format!("/Users/{id}")).as_str())
    );
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert!(
        created.body.get(ENTERPRISE_SCHEMA).is_none(),
        "unmapped extension is ignored"
    );

    let read = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["userName"], "dana@contoso.example");
    assert_eq!(read.body["name"]["familyName"], "User");
    assert_eq!(read.body["emails"][0]["value"], "dana@contoso.example");

    let mut replacement = body.clone();
    replacement["name"] = json!({"givenName": "Dana", "familyName": "Scully"});
    replacement["phoneNumbers"] = json!([{"type": "mobile", "value": "+16135550123"}]);
    let replaced = scim
        .write(reqwest::Method::PUT, &format!("/Users/{id}"), &replacement)
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["name"]["familyName"], "Scully");
    assert_eq!(replaced.body["phoneNumbers"][0]["value"], "+16135550123");

    let patched = scim
        .patch(
            &id,
            json!([{"op": "replace", "path": "name.givenName", "value": "D."}]),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["name"]["givenName"], "D.");
    assert_eq!(patched.body["name"]["familyName"], "Scully");

    let shown = scim.cli_ok(&["user", "show", "dana@contoso.example"]);
    assert!(shown.contains("CL Auth:        yes"), "{shown}");
    assert!(shown.contains("name:           D. Scully"), "{shown}");

    let deleted = scim
        .send(
            scim.http
                .delete(scim.url(&format!("/Users/{id}")))
                .bearer_auth(&scim.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = scim.get(&format!("/Users/{id}")).await;
    assert_scim_error(&gone, StatusCode::NOT_FOUND, None);
    let again = scim
        .send(
            scim.http
                .delete(scim.url(&format!("/Users/{id}")))
                .bearer_auth(&scim.token),
        )
        .await;
    assert_scim_error(&again, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn duplicates_conflict_with_uniqueness() {
    let scim = Scim::start();
    scim.create(&entra_user("eve@contoso.example", "eve@contoso.example"))
        .await;

    let same_name = scim
        .post(&entra_user("EVE@contoso.example", "other@contoso.example"))
        .await;
    assert_scim_error(&same_name, StatusCode::CONFLICT, Some("uniqueness"));

    let same_email = scim
        .post(&entra_user("eve2@contoso.example", "Eve@Contoso.example"))
        .await;
    assert_scim_error(&same_email, StatusCode::CONFLICT, Some("uniqueness"));
    // A retried request reuses its detained entry.
    let retried = scim
        .post(&entra_user("eve2@contoso.example", "Eve@Contoso.example"))
        .await;
    assert_eq!(retried.status, StatusCode::CONFLICT);

    let users = scim.get("/Users").await;
    assert_eq!(users.body["totalResults"], 1, "nothing half-written");
    let detained = scim.detained();
    assert_eq!(detained.len(), 2, "{detained:?}");
    assert!(
        detained
            .iter()
            .all(|(_, op, reason)| op == "create" && reason.contains("already used"))
    );

    let other = scim
        .create(&entra_user("fay@contoso.example", "fay@contoso.example"))
        .await;
    let taken = scim
        .patch(&other, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "eve@contoso.example"}]))
        .await;
    assert_scim_error(&taken, StatusCode::CONFLICT, Some("uniqueness"));
    let unchanged = scim.get(&format!("/Users/{other}")).await;
    assert_eq!(unchanged.body["emails"][0]["value"], "fay@contoso.example");
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let scim = Scim::start();
    let id = scim
        .create(&entra_user("gus@contoso.example", "gus@contoso.example"))
        .await;

    let not_json = scim
        .send(
            scim.http
                .post(scim.url("/Users"))
                .bearer_auth(&scim.token)
                .header(CONTENT_TYPE, "application/scim+json")
                .body("{\"userName\": "),
        )
        .await;
    assert_scim_error(&not_json, StatusCode::BAD_REQUEST, Some("invalidSyntax"));

    let plain_json = scim
        .send(
            scim.http
                .post(scim.url("/Users"))
                .bearer_auth(&scim.token)
                .header(CONTENT_TYPE, "application/json")
                .body(entra_user("hal@contoso.example", "hal@contoso.example").to_string()),
        )
        .await;
    assert_eq!(
        plain_json.status,
        StatusCode::CREATED,
        "application/json is accepted"
    );

    let text = scim
        .send(
            scim.http
                .post(scim.url("/Users"))
                .bearer_auth(&scim.token)
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
        )
        .await;
    assert_scim_error(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);

    let mut no_name = entra_user("x@contoso.example", "x@contoso.example");
    no_name.as_object_mut().unwrap().remove("userName");
    assert_scim_error(
        &scim.post(&no_name).await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
    );

    let mut bad_active = entra_user("y@contoso.example", "y@contoso.example");
    bad_active["active"] = json!("perhaps");
    assert_scim_error(
        &scim.post(&bad_active).await,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
    );

    let cases = [
        (
            json!([{"op": "replace", "path": "emails[type eq", "value": "a"}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "a"}]),
            "mutability",
        ),
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "replace", "path": "emails[value co \"nomatch\"].type", "value": "work"}]),
            "noTarget",
        ),
        (
            json!([{"op": "move", "path": "userName", "value": "a"}]),
            "invalidSyntax",
        ),
        (json!([{"op": "add", "path": "nickName"}]), "invalidValue"),
        (json!([]), "invalidValue"),
    ];
    for (operations, scim_type) in cases {
        let reply = scim.patch(&id, operations.clone()).await;
        assert_eq!(
            reply.scim_type(),
            Some(scim_type),
            "{operations}: {}",
            reply.body
        );
        assert_scim_error(&reply, StatusCode::BAD_REQUEST, Some(scim_type));
    }
    let without_schema = scim
        .write(
            reqwest::Method::PATCH,
            &format!("/Users/{id}"),
            &json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}),
        )
        .await;
    assert_scim_error(
        &without_schema,
        StatusCode::BAD_REQUEST,
        Some("invalidValue"),
    );

    let large = json!({"schemas": [USER_SCHEMA], "userName": "z".repeat(70_000)});
    let too_large = scim.post(&large).await;
    assert_scim_error(&too_large, StatusCode::PAYLOAD_TOO_LARGE, None);

    let unchanged = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(unchanged.body["active"], true);
    assert_eq!(unchanged.body["userName"], "gus@contoso.example");
}

#[tokio::test]
async fn dash_and_blank_clear_fields() {
    let scim = Scim::start();
    let mut body = entra_user("ivy@contoso.example", "ivy@contoso.example");
    body["addresses"] = json!([{"type": "work", "locality": "Ottawa", "postalCode": "K2K 3G4"}]);
    body["phoneNumbers"] = json!([{"type": "other", "value": "+16135550100"}]);
    let id = scim.create(&body).await;

    let cleared = scim
        .patch(
            &id,
            json!([
                {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "-"},
                {"op": "Replace", "path": "name.givenName", "value": "<blank>"},
                {"op": "Replace", "path": "phoneNumbers[type eq \"other\"].value", "value": "-"}
            ]),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    let user = scim.get(&format!("/Users/{id}")).await.body;
    assert_eq!(user["addresses"][0].get("locality"), None, "{user}");
    assert_eq!(user["addresses"][0]["postalCode"], "K2K 3G4");
    assert_eq!(user["name"].get("givenName"), None, "{user}");
    assert_eq!(user.get("phoneNumbers"), None, "{user}");
}

#[tokio::test]
async fn rule_breaks_are_detained() {
    let scim = Scim::start();
    let mut base = entra_user("jo@contoso.example", "jo@contoso.example");
    base["roles"] =
        json!([{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "User"}]);
    base["phoneNumbers"] = json!([{"type": "work", "value": "2001"}]);
    let id = scim.create(&base).await;

    // A create without a last name gets 201, but no user exists yet.
    let mut nameless = entra_user("kim@contoso.example", "kim@contoso.example");
    nameless["name"] = json!({"givenName": "Kim"});
    let detained_create = scim.post(&nameless).await;
    assert_eq!(
        detained_create.status,
        StatusCode::CREATED,
        "{}",
        detained_create.body
    );
    assert!(detained_create.header(DETAINED_HEADER).is_some());
    let reserved = detained_create.body["id"].as_str().unwrap().to_owned();
    assert_scim_error(
        &scim.get(&format!("/Users/{reserved}")).await,
        StatusCode::NOT_FOUND,
        None,
    );

    let long_login = format!("{}@contoso.example", "l".repeat(22));
    let long = scim
        .post(&entra_user(&long_login, "long@contoso.example"))
        .await;
    assert_eq!(long.status, StatusCode::CREATED);
    assert!(long.header(DETAINED_HEADER).is_some());

    let mut no_email = entra_user("mo@contoso.example", "mo@contoso.example");
    no_email["emails"] = json!([]);
    assert!(scim.post(&no_email).await.header(DETAINED_HEADER).is_some());

    let cases = [
        (
            json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "613-555-0123"}]),
            "E.164",
        ),
        (
            json!([{"op": "Replace", "path": "roles", "value": [{"primary": "True", "value": "Admin"}]}]),
            "role",
        ),
        (
            json!([{"op": "Replace", "path": "phoneNumbers[type eq \"work\"].value", "value": "2002"}]),
            "directory number",
        ),
        (
            json!([{"op": "Replace", "path": "name.familyName", "value": "-"}]),
            "last name",
        ),
    ];
    for (operations, _) in &cases {
        let reply = scim.patch(&id, operations.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{operations}: {}", reply.body);
        assert!(
            reply.header(DETAINED_HEADER).is_some(),
            "{operations} was applied"
        );
        assert_eq!(
            reply.body["name"]["familyName"], "User",
            "the response shows the unchanged user"
        );
    }
    let user = scim.get(&format!("/Users/{id}")).await.body;
    assert_eq!(user["roles"][0]["value"], "User");
    assert_eq!(
        user["phoneNumbers"],
        json!([{"type": "work", "value": "2001"}])
    );
    assert_eq!(user["name"]["familyName"], "User");

    let detained = scim.detained();
    let reasons: Vec<&str> = detained
        .iter()
        .map(|(_, _, reason)| reason.as_str())
        .collect();
    assert_eq!(detained.len(), 7, "{reasons:#?}");
    assert!(reasons[0].contains("last name"), "{reasons:?}");
    assert!(
        reasons[1].contains("22 characters before '@'"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("work email"), "{reasons:?}");
    for (index, (_, expected)) in cases.iter().enumerate() {
        assert!(
            reasons[3 + index].contains(expected),
            "{expected} in {reasons:?}"
        );
    }
    let shown = scim.cli_ok(&["scim", "detained", "show", &detained[3].0.to_string()]);
    assert!(shown.contains("613-555-0123"), "payload: {shown}");
    assert!(shown.contains("change:    patch"), "{shown}");
}

#[tokio::test]
async fn detained_entries_applied_modified_cancelled() {
    let scim = Scim::start();
    let mut nameless = entra_user("nia@contoso.example", "nia@contoso.example");
    nameless["name"] = json!({"givenName": "Nia"});
    let reserved = scim.post(&nameless).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (entry, _, _) = scim.detained()[0].clone();

    let still = scim.cli(&["scim", "detained", "apply", &entry.to_string()]);
    assert!(!still.status.success());
    assert!(
        String::from_utf8_lossy(&still.stderr).contains("stays detained: the last name"),
        "{}",
        String::from_utf8_lossy(&still.stderr)
    );

    scim.cli_ok(&[
        "scim",
        "detained",
        "modify",
        &entry.to_string(),
        "--set",
        "name.familyName=Okafor",
    ]);
    let applied = scim.cli_ok(&["scim", "detained", "apply", &entry.to_string()]);
    assert!(applied.contains("created nia@contoso.example"), "{applied}");
    let user = scim.get(&format!("/Users/{reserved}")).await;
    assert_eq!(
        user.status,
        StatusCode::OK,
        "the reserved id is the user's id"
    );
    assert_eq!(user.body["name"]["familyName"], "Okafor");
    assert!(scim.detained().is_empty());

    // A role change is detained, and the administrator's apply approves it.
    let role_change = scim
        .patch(&reserved, json!([{"op": "Add", "path": "roles", "value": [{"primary": true, "value": "Operator"}]}]))
        .await;
    assert!(role_change.header(DETAINED_HEADER).is_some());
    let (entry, _, _) = scim.detained()[0].clone();
    scim.cli_ok(&["scim", "detained", "apply", &entry.to_string()]);
    let user = scim.get(&format!("/Users/{reserved}")).await;
    assert_eq!(user.body["roles"][0]["value"], "Operator");

    let bad_mobile = scim
        .patch(&reserved, json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "6135550123"}]))
        .await;
    assert!(bad_mobile.header(DETAINED_HEADER).is_some());
    let (entry, _, _) = scim.detained()[0].clone();
    scim.cli_ok(&[
        "scim",
        "detained",
        "modify",
        &entry.to_string(),
        "--set",
        "phoneNumbers[type eq \"mobile\"].value=+16135550123",
    ]);
    scim.cli_ok(&["scim", "detained", "apply", &entry.to_string()]);
    let user = scim.get(&format!("/Users/{reserved}")).await;
    assert_eq!(user.body["phoneNumbers"][0]["value"], "+16135550123");

    let deactivate_deferred = {
        scim.cli_ok(&["scim", "settings", "--defer-all", "true"]);
        scim.patch(
            &reserved,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await
    };
    assert!(deactivate_deferred.header(DETAINED_HEADER).is_some());
    let (entry, _, reason) = scim.detained()[0].clone();
    assert!(reason.contains("deferred"), "{reason}");
    scim.cli_ok(&["scim", "detained", "cancel", &entry.to_string()]);
    assert!(scim.detained().is_empty());
    let user = scim.get(&format!("/Users/{reserved}")).await;
    assert_eq!(
        user.body["active"], true,
        "a cancelled change is not applied"
    );

    let missing = scim.cli(&["scim", "detained", "apply", "999"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no detained change has the id 999"));
}

#[tokio::test]
async fn defer_all_detains_every_change() {
    let scim = Scim::start();
    let id = scim
        .create(&entra_user("oz@contoso.example", "oz@contoso.example"))
        .await;
    let settings = scim.cli_ok(&["scim", "settings", "--defer-all", "true"]);
    assert!(
        settings.contains("defer all operations:       yes"),
        "{settings}"
    );

    let created = scim
        .post(&entra_user("pia@contoso.example", "pia@contoso.example"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.header(DETAINED_HEADER).is_some());
    let patched = scim
        .patch(
            &id,
            json!([{"op": "Replace", "path": "name.givenName", "value": "Oswald"}]),
        )
        .await;
    assert!(patched.header(DETAINED_HEADER).is_some());
    let deleted = scim
        .send(
            scim.http
                .delete(scim.url(&format!("/Users/{id}")))
                .bearer_auth(&scim.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.header(DETAINED_HEADER).is_some());

    assert_eq!(
        scim.get("/Users").await.body["totalResults"],
        1,
        "nothing applied"
    );
    let detained = scim.detained();
    let operations: Vec<&str> = detained.iter().map(|(_, op, _)| op.as_str()).collect();
    assert_eq!(operations, ["create", "patch", "delete"]);

    // Applying as administrator ignores the switch.
    for (entry, _, _) in &detained[..2] {
        scim.cli_ok(&["scim", "detained", "apply", &entry.to_string()]);
    }
    assert_eq!(scim.get("/Users").await.body["totalResults"], 2);
    assert_eq!(
        scim.get(&format!("/Users/{id}")).await.body["name"]["givenName"],
        "Oswald"
    );
    scim.cli_ok(&["scim", "detained", "apply", &detained[2].0.to_string()]);
    assert_scim_error(
        &scim.get(&format!("/Users/{id}")).await,
        StatusCode::NOT_FOUND,
        None,
    );
}

#[tokio::test]
async fn reinitialize_answers_probes_empty() {
    let scim = Scim::start();
    let id = scim
        .create(&entra_user(
            "quinn@contoso.example",
            "quinn@contoso.example",
        ))
        .await;
    scim.cli_ok(&["scim", "settings", "--reinitialize", "true"]);

    let probe = scim.query(r#"userName eq "quinn@contoso.example""#).await;
    assert_eq!(
        probe.body["totalResults"], 0,
        "the full cycle sends every user again"
    );
    let mut again = entra_user("quinn@contoso.example", "quinn@contoso.example");
    again["name"]["givenName"] = json!("Quinton");
    let adopted = scim.post(&again).await;
    assert_eq!(adopted.status, StatusCode::CREATED, "{}", adopted.body);
    assert_eq!(
        adopted.body["id"],
        json!(id),
        "the existing user takes the IdP's values"
    );
    assert_eq!(adopted.body["name"]["givenName"], "Quinton");
    let settings = scim.cli_ok(&["scim", "settings"]);
    assert!(settings.contains("a full cycle is running"), "{settings}");

    scim.cli_ok(&["scim", "settings", "--reinitialize", "false"]);
    let probe = scim.query(r#"userName eq "quinn@contoso.example""#).await;
    assert_eq!(probe.body["totalResults"], 1);
}

#[tokio::test]
async fn manual_user_add_refused_while_syncing() {
    let scim = Scim::start();
    let refused = scim.broker.cli(
        &[
            "user",
            "add",
            "--login-id",
            "ray",
            "--email",
            "ray@contoso.example",
            "--first-name",
            "Ray",
            "--last-name",
            "Ng",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("SCIM synchronisation is on"), "{message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");

    scim.cli_ok(&["scim", "disable"]);
    scim.broker.add_user("ray", "ray@contoso.example");
}

#[tokio::test]
async fn audit_log_records_changes_without_token() {
    let scim = Scim::start();
    let id = scim
        .create(&entra_user("sam@contoso.example", "sam@contoso.example"))
        .await;
    scim.patch(
        &id,
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    .await;
    scim.send(
        scim.http
            .delete(scim.url(&format!("/Users/{id}")))
            .bearer_auth(&scim.token),
    )
    .await;

    let pool = unified_login::db::connect_default(&scim.broker.database().url())
        .await
        .expect("open the broker's database");
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT kind, identifier, detail FROM audit_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit rows");
    let kinds: Vec<&str> = rows.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "scim.token.generate",
            "scim.user.create",
            "scim.user.deactivate",
            "scim.user.delete"
        ]
    );
    for row in &rows {
        let text = format!("{row:?}");
        assert!(
            !text.contains(&scim.token),
            "token in the audit log: {text}"
        );
        assert!(
            !text.contains(&scim.token[7..]),
            "token in the audit log: {text}"
        );
    }
    assert!(
        !scim.broker.log().contains(&scim.token[7..]),
        "token in the service log"
    );
}

#[tokio::test]
async fn scim_user_goes_to_idp_at_login() {
    let mut broker = Broker::prepare(Options::default());
    let sso_url = "http://127.0.0.1:9/sso";
    let certificate = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/entra-test.crt"
    );
    let output = broker.cli(
        &[
            "saml",
            "set",
            "--name",
            "Contoso",
            "--sso-url",
            sso_url,
            "--entity-id",
            "https://idp.contoso.example/",
            "--certificates",
            certificate,
        ],
        "",
    );
    assert!(
        output.status.success(),
        "saml set: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = generate_keys(&broker);
    broker.serve();
    let scim = Scim {
        broker,
        token,
        http: reqwest::Client::new(),
    };
    scim.create(&entra_user(
        "tess@contoso.example",
        "tess.t@contoso.example",
    ))
    .await;

    let browser = BrowserClient::new();
    let identified = browser
        .identify(&scim.broker, "tess.t@contoso.example")
        .await;
    assert_eq!(
        identified.status,
        StatusCode::SEE_OTHER,
        "{}",
        identified.body
    );
    assert!(
        identified.location.starts_with(&format!("{sso_url}?")),
        "redirect to the IdP, got {}",
        identified.location
    );
    assert!(
        identified
            .location
            .contains("login_hint=tess.t%40contoso.example"),
        "{}",
        identified.location
    );
}

/// The requests of an Entra ID provisioning cycle for one user, in the
/// shapes Microsoft documents for its SCIM client: a userName probe, the
/// create, attribute updates with capitalised ops and filter paths, a
/// path-less update with dotted keys, deactivation with a string boolean,
/// reactivation and deletion. All values are invented.
#[tokio::test]
async fn entra_lifecycle_replay() {
    let scim = Scim::start();
    let user_name = "uma.r@contoso.example";

    let probe = scim
        .send(
            scim.http
                .get(scim.url("/Users"))
                .query(&[
                    ("filter", format!("userName eq \"{user_name}\"")),
                    ("aadOptscim062020", String::new()),
                ])
                .bearer_auth(&scim.token),
        )
        .await;
    assert_eq!(probe.status, StatusCode::OK);
    assert_eq!(probe.body["totalResults"], 0);
    assert_eq!(probe.body["Resources"], json!([]));

    let create = json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": "uma.r",
        "userName": user_name,
        "active": true,
        "displayName": "Uma Rao",
        "emails": [{"primary": true, "type": "work", "value": "uma.rao@contoso.example"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Uma Rao", "familyName": "Rao", "givenName": "Uma"},
        "phoneNumbers": [{"type": "mobile", "value": "+16135550142"}],
        "addresses": [{"type": "work", "formatted": "Contoso Ltd", "locality": "Kanata", "country": "CA"}],
        "roles": [],
        ENTERPRISE_SCHEMA: {"employeeNumber": "701", "department": "Support"}
    });
    let id = scim.create(&create).await;

    let found = scim.query(&format!("userName eq \"{user_name}\"")).await;
    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(found.body["Resources"][0]["id"], json!(id));

    let updates = [
        json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "uma.rao2@contoso.example"},
            {"op": "Replace", "path": "name.familyName", "value": "Rao-Singh"}
        ]),
        json!([
            {"op": "Add", "path": "phoneNumbers[type eq \"other\"].value", "value": "+16135550177"},
            {"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+16135550143"},
            {"op": "Add", "path": "addresses[type eq \"work\"].postalCode", "value": "K2K 3G4"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "Ottawa"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales"}
        ]),
        json!([
            {"op": "Replace", "value": {"name.givenName": "Umaira", "externalId": "uma.rs", "active": "True"}}
        ]),
        json!([{"op": "Add", "value": {"title": "Agent", "nickName": "U"}}]),
        json!([{"op": "Remove", "path": "addresses[type eq \"work\"].country"}]),
    ];
    for operations in updates {
        let reply = scim.patch(&id, operations.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{operations}: {}", reply.body);
        assert_eq!(reply.header(DETAINED_HEADER), None, "{operations} detained");
    }
    let user = scim.get(&format!("/Users/{id}")).await.body;
    assert_eq!(user["emails"][0]["value"], "uma.rao2@contoso.example");
    assert_eq!(
        user["name"],
        json!({"givenName": "Umaira", "familyName": "Rao-Singh"})
    );
    assert_eq!(user["externalId"], "uma.rs");
    let phones = user["phoneNumbers"].as_array().expect("phones");
    assert!(
        phones.contains(&json!({"type": "mobile", "value": "+16135550143"})),
        "{user}"
    );
    assert!(
        phones.contains(&json!({"type": "other", "value": "+16135550177"})),
        "{user}"
    );
    assert_eq!(
        user["addresses"][0],
        json!({"type": "work", "formatted": "Contoso Ltd", "locality": "Ottawa", "postalCode": "K2K 3G4"})
    );
    assert!(
        scim.broker.log().contains("ignoring SCIM attributes"),
        "unknown attributes are logged"
    );

    let deactivated = scim
        .patch(
            &id,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!(deactivated.body["active"], false, "{}", deactivated.body);
    let listed = scim.cli_ok(&["user", "show", "uma.rao2@contoso.example"]);
    assert!(listed.contains("active:         no"), "{listed}");
    let inactive = scim
        .query(&format!("userName eq \"{user_name}\" and active eq false"))
        .await;
    assert_eq!(inactive.body["totalResults"], 1);

    let reactivated = scim
        .patch(&id, json!([{"op": "Replace", "value": {"active": true}}]))
        .await;
    assert_eq!(reactivated.body["active"], true, "{}", reactivated.body);

    let renamed = scim
        .patch(
            &id,
            json!([{"op": "Replace", "path": "userName", "value": "uma.rs@contoso.example"}]),
        )
        .await;
    assert_eq!(renamed.body["userName"], "uma.rs@contoso.example");
    let by_new_name = scim.query(r#"userName eq "uma.rs@contoso.example""#).await;
    assert_eq!(by_new_name.body["totalResults"], 1);

    let deleted = scim
        .send(
            scim.http
                .delete(scim.url(&format!("/Users/{id}")))
                .bearer_auth(&scim.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        scim.query(r#"userName eq "uma.rs@contoso.example""#)
            .await
            .body["totalResults"],
        0
    );
}

/// Checks of scim2-tester 0.5.2 that fail by design, as `check:attribute`.
/// The broker keeps a user's role unchanged when provisioning adds,
/// replaces or removes it, and detains the change for the administrator.
const ALLOWED_TESTER_FAILURES: [&str; 3] = [
    "check_add_attribute:roles",
    "check_remove_attribute:roles",
    "check_replace_attribute:roles",
];

const TESTER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/scim2-tester/run.py"
);

/// Returns why scim2-tester cannot run here, if it cannot.
fn tester_missing() -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import scim2_tester, scim2_client.engines.httpx2"])
        .output();
    match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "python3 cannot import scim2-tester: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("python3 cannot run: {error}")),
    }
}

#[tokio::test]
async fn scim2_tester_finds_only_known_failures() {
    if let Some(reason) = tester_missing() {
        if crate::harness::in_ci() {
            panic!(
                "scim2-tester cannot run: {reason}. CI is set, so a missing peer fails the test"
            );
        }
        eprintln!(
            "scim2-tester check did not run: {reason}; run `python3 -m pip install -r tests/peers/scim2-tester/requirements.txt`"
        );
        return;
    }
    let scim = Scim::start();
    let url = scim.url("");
    let token = scim.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(TESTER_SCRIPT)
            .arg(url)
            .env("SCIM_TOKEN", token)
            .output()
            .expect("run scim2-tester")
    })
    .await
    .expect("scim2-tester thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scim2-tester failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut passed = 0;
    let mut failures = BTreeSet::new();
    for line in stdout.lines() {
        let result: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        let status = result["status"].as_str().unwrap_or_default();
        match status {
            "SUCCESS" | "COMPLIANT" | "ACCEPTABLE" => passed += 1,
            "SKIPPED" => {}
            _ => {
                let reason = result["reason"].as_str().unwrap_or_default();
                // The attribute is the first quoted name in the reason.
                let attribute = reason.split('\'').nth(1).unwrap_or("");
                failures.insert(format!(
                    "{}:{attribute}",
                    result["title"].as_str().unwrap_or_default()
                ));
                eprintln!("scim2-tester {status}: {line}");
            }
        }
    }
    let allowed: BTreeSet<String> = ALLOWED_TESTER_FAILURES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(failures, allowed, "scim2-tester findings changed");
    assert!(passed >= 40, "only {passed} checks passed:\n{stdout}");
}

#[tokio::test]
async fn detained_queue_through_admin_api() {
    let scim = Scim::start();
    let output = scim.broker.cli(&["admin", "token", "create", "ops"], "");
    assert!(output.status.success());
    let admin = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let api = |path: &str| {
        scim.broker
            .url(&format!("/admin/api/v1/scim/detained{path}"))
    };

    let mut nameless = entra_user("nia@contoso.example", "nia@contoso.example");
    nameless["name"] = json!({"givenName": "Nia"});
    let reserved = scim.post(&nameless).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut other = entra_user("omar@contoso.example", "omar@contoso.example");
    other["name"] = json!({"givenName": "Omar"});
    scim.post(&other).await;

    let listing: Value = scim
        .http
        .get(api(""))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = listing["detained"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listing}");
    let nia = entries
        .iter()
        .find(|entry| entry["user_name"] == "nia@contoso.example")
        .unwrap();
    let nia_id = nia["id"].as_i64().unwrap();
    assert!(
        nia["reason"].as_str().unwrap().contains("last name"),
        "{nia}"
    );
    let omar_id = entries
        .iter()
        .find(|entry| entry["user_name"] == "omar@contoso.example")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // Applying as it is fails and keeps the entry.
    let still = scim
        .http
        .post(api(&format!("/{nia_id}/apply")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::CONFLICT);

    // A payload that is not a User resource is rejected.
    let invalid = scim
        .http
        .put(api(&format!("/{nia_id}")))
        .bearer_auth(&admin)
        .json(&json!({"payload": {"userName": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);

    let mut fixed = nia["payload"].clone();
    fixed["name"]["familyName"] = json!("Okafor");
    let modified = scim
        .http
        .put(api(&format!("/{nia_id}")))
        .bearer_auth(&admin)
        .json(&json!({"payload": fixed}))
        .send()
        .await
        .unwrap();
    assert_eq!(modified.status(), StatusCode::OK);
    let applied = scim
        .http
        .post(api(&format!("/{nia_id}/apply")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), StatusCode::OK);
    let applied: Value = applied.json().await.unwrap();
    assert_eq!(applied["result"], "created");
    let user = scim.get(&format!("/Users/{reserved}")).await;
    assert_eq!(user.body["name"]["familyName"], "Okafor");

    let cancelled = scim
        .http
        .delete(api(&format!("/{omar_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let gone = scim
        .http
        .get(api(&format!("/{omar_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(scim.detained().is_empty());
    let unauthenticated = scim.http.get(api("")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_accounts_out_of_scim_reach() {
    let mut broker = Broker::prepare(Options::default());
    broker.add_user("boss", "boss@contoso.example");
    let granted = broker.cli(&["admin", "role", "grant", "boss"], "");
    assert!(granted.status.success());
    let token = generate_keys(&broker);
    broker.serve();
    let scim = Scim {
        broker,
        token,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
    };

    let probe = scim.query(r#"userName eq "boss""#).await;
    assert_eq!(probe.status, StatusCode::OK);
    assert!(
        resources(&probe).is_empty(),
        "an admin is invisible to SCIM: {}",
        probe.body
    );
    let listing = scim.get("/Users").await;
    assert!(resources(&listing).is_empty(), "{}", listing.body);

    let boss_id = scim
        .broker
        .cli(&["user", "show", "boss"], "")
        .stdout
        .split(|byte| *byte == b'\n')
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .find_map(|line| {
            line.trim()
                .strip_prefix("id:")
                .map(|id| id.trim().to_owned())
        })
        .expect("user show prints the id");
    let patched = scim
        .patch(&boss_id, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "attacker@evil.example"}]))
        .await;
    assert_eq!(patched.status, StatusCode::NOT_FOUND, "{}", patched.body);
    let deleted = scim
        .send(
            scim.http
                .delete(scim.url(&format!("/Users/{boss_id}")))
                .bearer_auth(&scim.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);
    let created = scim
        .post(&entra_user("boss", "other@contoso.example"))
        .await;
    assert_eq!(created.status, StatusCode::CONFLICT, "{}", created.body);

    let shown = String::from_utf8_lossy(&scim.broker.cli(&["user", "show", "boss"], "").stdout)
        .into_owned();
    assert!(
        shown.contains("boss@contoso.example"),
        "the admin's email is unchanged: {shown}"
    );
}
