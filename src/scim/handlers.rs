//! HTTP handlers of `/scim/v2`. Each one admits the caller by its bearer
//! token ([`ScimClient`]), reads the request, calls one function of the
//! pipeline in [`super::service`] and shapes the SCIM response.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::auth::ScimClient;
use super::discovery;
use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, Filter};
use super::resources::{StoredUser, list_response, project, render_user};
use super::service::{self, Change, Outcome};
use super::{
    CORE_USER_SCHEMA, DEFAULT_PAGE_SIZE, MAX_BODY_BYTES, MAX_PAGE_SIZE, SCIM_CONTENT_TYPE,
};
use crate::directory::identifier_key;
use crate::state::AppState;

/// Response header with the detained entry of a change that got a success
/// response without being applied, for troubleshooting from the IdP's logs.
pub const DETAINED_HEADER: &str = "x-unified-login-detained";

/// A JSON request body sent as `application/scim+json` or `application/json`.
pub struct ScimJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimJson {
    type Rejection = ScimError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media_type != "application/scim+json" && media_type != "application/json" {
            return Err(ScimError::Client {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                scim_type: None,
                detail: format!(
                    "send the body as application/scim+json (or application/json), not '{content_type}'"
                ),
            });
        }
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ScimError::Client {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                scim_type: None,
                detail: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            })?;
        parse_json(&body).map(Self)
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|error| {
        ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("the request body is not valid JSON: {error}"),
        )
    })
}

/// Builds a response with a SCIM JSON body.
fn scim_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

/// Returns the base URL of the SCIM API, without a trailing slash.
fn base_url(state: &AppState) -> String {
    format!(
        "{}/scim/v2",
        state.public_url.as_str().trim_end_matches('/')
    )
}

fn user_location(state: &AppState, id: &str) -> String {
    format!("{}/Users/{id}", base_url(state))
}

pub async fn service_provider_config(
    State(state): State<AppState>,
    _client: ScimClient,
) -> Response {
    scim_response(
        StatusCode::OK,
        &discovery::service_provider_config(&base_url(&state)),
    )
}

pub async fn resource_types(State(state): State<AppState>, _client: ScimClient) -> Response {
    let resource_type = discovery::user_resource_type(&base_url(&state));
    scim_response(StatusCode::OK, &list_response(1, 1, vec![resource_type]))
}

pub async fn resource_type(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(name): Path<String>,
) -> Result<Response, ScimError> {
    if name != "User" {
        return Err(ScimError::not_found(format!(
            "no resource type is named '{name}'; this service provider offers only User"
        )));
    }
    Ok(scim_response(
        StatusCode::OK,
        &discovery::user_resource_type(&base_url(&state)),
    ))
}

pub async fn schemas(State(state): State<AppState>, _client: ScimClient) -> Response {
    let schema = discovery::user_schema(&base_url(&state));
    scim_response(StatusCode::OK, &list_response(1, 1, vec![schema]))
}

pub async fn schema(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    if !id.eq_ignore_ascii_case(CORE_USER_SCHEMA) {
        return Err(ScimError::not_found(format!("no schema has the id '{id}'")));
    }
    Ok(scim_response(
        StatusCode::OK,
        &discovery::user_schema(&base_url(&state)),
    ))
}

/// Groups are not provisioned. RFC 7644 §3.12 returns 404 for an endpoint
/// that does not exist, so the Groups endpoints return 404, and
/// /ResourceTypes lists no Group type.
pub async fn groups(_client: ScimClient) -> ScimError {
    ScimError::not_found(
        "Groups are not provisioned: this service provider supports only the User resource type. \
         Turn off group provisioning in the IdP's attribute mappings.",
    )
}

pub async fn not_found(_client: ScimClient) -> ScimError {
    ScimError::not_found("no SCIM endpoint has this path")
}

pub async fn method_not_allowed() -> ScimError {
    ScimError::Client {
        status: StatusCode::METHOD_NOT_ALLOWED,
        scim_type: None,
        detail: "this SCIM endpoint does not support the HTTP method".to_owned(),
    }
}

/// Query parameters of GET requests. Others, such as the
/// `aadOptscim062020` flag that Entra ID may append, are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

impl ListQuery {
    fn attribute_lists(&self) -> (Vec<String>, Vec<String>) {
        let split = |text: &Option<String>| -> Vec<String> {
            text.as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        };
        (split(&self.attributes), split(&self.excluded_attributes))
    }
}

fn read_integer(name: &str, value: Option<&str>) -> Result<Option<i64>, ScimError> {
    value
        .map(|text| {
            text.trim().parse::<i64>().map_err(|_| {
                ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{name} must be an integer, not '{text}'"),
                )
            })
        })
        .transpose()
}

pub async fn list_users(
    State(state): State<AppState>,
    client: ScimClient,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ScimError> {
    let Query(query) = query.map_err(|rejection| {
        ScimError::bad_request(
            ScimType::InvalidValue,
            format!("invalid query: {rejection}"),
        )
    })?;
    search(&state, &client, &query).await
}

/// The body of `POST /Users/.search` (RFC 7644 §3.4.3).
#[derive(Debug, Default, Deserialize)]
struct SearchRequest {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Option<Vec<String>>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<Vec<String>>,
}

pub async fn search_users(
    State(state): State<AppState>,
    client: ScimClient,
    ScimJson(body): ScimJson,
) -> Result<Response, ScimError> {
    let request: SearchRequest = serde_json::from_value(body).map_err(|error| {
        ScimError::bad_request(
            ScimType::InvalidValue,
            format!("invalid SearchRequest: {error}"),
        )
    })?;
    let query = ListQuery {
        filter: request.filter,
        start_index: request.start_index.map(|value| value.to_string()),
        count: request.count.map(|value| value.to_string()),
        attributes: request.attributes.map(|names| names.join(",")),
        excluded_attributes: request.excluded_attributes.map(|names| names.join(",")),
    };
    search(&state, &client, &query).await
}

async fn search(
    state: &AppState,
    client: &ScimClient,
    query: &ListQuery,
) -> Result<Response, ScimError> {
    // RFC 7644 §3.4.2.4: startIndex below 1 means 1, and a negative count means 0.
    let start_index = read_integer("startIndex", query.start_index.as_deref())?
        .unwrap_or(1)
        .max(1);
    let count = read_integer("count", query.count.as_deref())?
        .unwrap_or(DEFAULT_PAGE_SIZE as i64)
        .clamp(0, MAX_PAGE_SIZE as i64);
    let filter = match query.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            Filter::parse(text)
                .map_err(|detail| ScimError::bad_request(ScimType::InvalidFilter, detail))?,
        ),
    };

    let (total, window) = match &filter {
        // Without a filter the database pages, so a large directory is not
        // read in full for each page.
        None => {
            let total = state.scim.count_users().await?;
            let users = state.scim.list_users_page(start_index - 1, count).await?;
            let window: Vec<Value> = users
                .iter()
                .map(|user| render_user(user, &user_location(state, &user.id)))
                .collect();
            (usize::try_from(total).unwrap_or(0), window)
        }
        Some(filter) => {
            let matching = matching_users(state, filter, client.settings.reinitialize).await?;
            let total = matching.len();
            let window = matching
                .into_iter()
                .skip(usize::try_from(start_index - 1).unwrap_or(usize::MAX))
                .take(usize::try_from(count).unwrap_or(0))
                .collect();
            (total, window)
        }
    };
    let (attributes, excluded) = query.attribute_lists();
    let page: Vec<Value> = window
        .into_iter()
        .map(|mut resource| {
            project(&mut resource, &attributes, &excluded);
            resource
        })
        .collect();
    let start = usize::try_from(start_index).unwrap_or(1);
    Ok(scim_response(
        StatusCode::OK,
        &list_response(total, start, page),
    ))
}

fn is_attribute(path: &AttrPath, name: &str) -> bool {
    path.schema.is_none()
        && path.sub_attribute.is_none()
        && path.attribute.eq_ignore_ascii_case(name)
}

/// Returns the users that match `filter`, rendered, in creation order.
async fn matching_users(
    state: &AppState,
    filter: &Filter,
    reinitialize: bool,
) -> Result<Vec<Value>, ScimError> {
    let equality = filter.as_equality();
    if let Some((path, _)) = equality
        && reinitialize
        && (is_attribute(path, "userName") || is_attribute(path, "externalId"))
    {
        // During a full cycle the IdP finds no user by its probe, so it
        // sends every user in full again (see `service::plan_create`).
        return Ok(Vec::new());
    }
    let users: Vec<StoredUser> = match equality {
        // The IdP's probe before each create: one indexed look-up.
        Some((path, value)) if is_attribute(path, "userName") => match identifier_key(value) {
            Ok(key) => state
                .scim
                .find_by_user_name(&key)
                .await?
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        },
        _ => state.scim.list_users().await?,
    };
    Ok(users
        .iter()
        .map(|user| render_user(user, &user_location(state, &user.id)))
        .filter(|resource| filter.matches(resource))
        .collect())
}

pub async fn get_user(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ScimError> {
    let user = state
        .scim
        .find_user(&id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no user has the id '{id}'")))?;
    let mut resource = render_user(&user, &user_location(&state, &user.id));
    let (attributes, excluded) = query.attribute_lists();
    project(&mut resource, &attributes, &excluded);
    Ok(scim_response(StatusCode::OK, &resource))
}

pub async fn create_user(
    State(state): State<AppState>,
    _client: ScimClient,
    ScimJson(body): ScimJson,
) -> Result<Response, ScimError> {
    let outcome = service::submit(
        state.scim.as_ref(),
        Change::Create { body },
        state.clock.now(),
    )
    .await?;
    Ok(respond(&state, outcome, StatusCode::CREATED))
}

pub async fn replace_user(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
    ScimJson(body): ScimJson,
) -> Result<Response, ScimError> {
    let outcome = service::submit(
        state.scim.as_ref(),
        Change::Replace { id, body },
        state.clock.now(),
    )
    .await?;
    Ok(respond(&state, outcome, StatusCode::OK))
}

pub async fn patch_user(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
    ScimJson(body): ScimJson,
) -> Result<Response, ScimError> {
    let outcome = service::submit(
        state.scim.as_ref(),
        Change::Patch { id, body },
        state.clock.now(),
    )
    .await?;
    Ok(respond(&state, outcome, StatusCode::OK))
}

pub async fn delete_user(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let outcome = service::submit(
        state.scim.as_ref(),
        Change::Delete { id },
        state.clock.now(),
    )
    .await?;
    Ok(respond(&state, outcome, StatusCode::NO_CONTENT))
}

/// Shapes the response to a change. A detained change gets the response of an applied one, with `success` (201 for a POST, 200 for PUT and PATCH,
/// 204 for DELETE); `service` explains why.
fn respond(state: &AppState, outcome: Outcome, success: StatusCode) -> Response {
    match outcome {
        // A POST that the re-initializing cycle matched to an existing user
        // still gets 201, which is what the IdP expects of a create.
        Outcome::Created(user) | Outcome::Updated(user) if success == StatusCode::CREATED => {
            created(state, &user)
        }
        Outcome::Created(user) | Outcome::Updated(user) => user_response(state, &user),
        Outcome::Deleted => StatusCode::NO_CONTENT.into_response(),
        Outcome::Detained {
            entry_id, preview, ..
        } => {
            let mut response = match preview {
                Some(user) if success == StatusCode::CREATED => created(state, &user),
                Some(user) => user_response(state, &user),
                None => StatusCode::NO_CONTENT.into_response(),
            };
            insert_header(
                response.headers_mut(),
                DETAINED_HEADER,
                &entry_id.to_string(),
            );
            response
        }
    }
}

fn user_response(state: &AppState, user: &StoredUser) -> Response {
    scim_response(
        StatusCode::OK,
        &render_user(user, &user_location(state, &user.id)),
    )
}

fn created(state: &AppState, user: &StoredUser) -> Response {
    let location = user_location(state, &user.id);
    let mut response = scim_response(StatusCode::CREATED, &render_user(user, &location));
    insert_header(response.headers_mut(), header::LOCATION.as_str(), &location);
    response
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
