//! SCIM 2.0 service provider (RFC 7643 schemas, RFC 7644 protocol) under
//! `/scim/v2`, through which the identity provider's provisioning service
//! (Microsoft Entra ID is the reference) creates, updates, deactivates and
//! deletes users.
//!
//! - [`auth`]: the Secret Token and the bearer-token extractor;
//! - [`filter`] and [`patch`]: filter expressions and PATCH operations on
//!   resources in their JSON form;
//! - [`resources`]: the User resource and its mapping to directory fields;
//! - [`rules`]: the directory's checks, whose failures detain a change;
//! - [`service`]: the pipeline from request to write or detained entry;
//! - [`store`] and [`sqlite`]: token, settings, users and detained queue;
//! - [`handlers`] and [`discovery`]: the HTTP endpoints;
//! - [`error`]: SCIM error responses.
//!
//! Only the User resource type exists: groups are not provisioned.

pub mod auth;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod handlers;
pub mod patch;
pub mod resources;
pub mod rules;
pub mod service;
pub mod sql;
pub mod store;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::state::AppState;

pub const CORE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Largest request body accepted, in bytes. One User resource with every
/// mapped attribute is a few kilobytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Users per page when the request gives no `count`.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Maximum users per page, also published as `filter.maxResults`.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Builds the router that `web::app` nests under `/scim/v2`. It sits
/// outside the browser session and CSRF layers, because the bearer token
/// authenticates each request.
pub fn routes() -> Router<AppState> {
    use handlers::*;

    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", axum::routing::post(search_users))
        .route("/.search", axum::routing::post(search_users))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", axum::routing::any(groups))
        .route("/Groups/{*rest}", axum::routing::any(groups))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The extractor enforces the limit with a SCIM error body; this
        // layer only stops other extractors from reading more.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
