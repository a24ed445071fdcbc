//! The SCIM detained queue in the admin API: changes from the IdP that the
//! broker did not apply, for the administrator to view, modify, apply or
//! cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminPrincipal, ApiError};
use crate::directory::AuditEvent;
use crate::scim::error::ScimError;
use crate::scim::service::{self, Outcome};
use crate::scim::store::{DetainedEntry, Operation};
use crate::state::AppState;

fn entry_json(entry: &DetainedEntry) -> Value {
    let payload = serde_json::from_str::<Value>(&entry.payload)
        .unwrap_or(Value::String(entry.payload.clone()));
    json!({
        "id": entry.id,
        "operation": entry.operation.as_str(),
        "user_id": entry.user_id,
        "user_name": entry.user_name,
        "reason": entry.reason,
        "received_at": entry.created_at,
        "updated_at": entry.updated_at,
        "payload": payload,
    })
}

async fn find(state: &AppState, id: i64) -> Result<DetainedEntry, ApiError> {
    state.scim.detained_entry(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no detained change has the id {id}"),
        )
    })
}

pub async fn list(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> Result<Response, ApiError> {
    let entries: Vec<Value> = state
        .scim
        .detained()
        .await?
        .iter()
        .map(entry_json)
        .collect();
    Ok(Json(json!({ "detained": entries })).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(entry_json(&find(&state, id).await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifyRequest {
    /// The corrected User resource, or PatchOp for a detained PATCH.
    payload: Value,
}

pub async fn modify(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(id): Path<i64>,
    body: Result<Json<ModifyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    })?;
    let entry = find(&state, id).await?;
    if entry.operation == Operation::Delete {
        return Err(ApiError::bad_request(format!(
            "detained change {id} is a delete, which has no payload to modify; apply or cancel it"
        )));
    }
    service::check_detained_payload(entry.operation, &request.payload)
        .map_err(|error| ApiError::bad_request(format!("{error:#}")))?;
    state
        .scim
        .update_detained(
            id,
            &entry.reason,
            &request.payload.to_string(),
            state.clock.now(),
        )
        .await?;
    Ok(Json(entry_json(&find(&state, id).await?)).into_response())
}

pub async fn apply(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    find(&state, id).await?;
    let outcome = service::apply_detained(state.scim.as_ref(), id, state.clock.now())
        .await
        .map_err(|error| match error {
            ScimError::Internal(error) => ApiError::from(error),
            other => ApiError::bad_request(other.to_string()),
        })?;
    let (status, body) = match outcome {
        Outcome::Created(user) => (
            StatusCode::OK,
            json!({"applied": true, "result": "created", "user_name": user.record.user_name}),
        ),
        Outcome::Updated(user) => (
            StatusCode::OK,
            json!({"applied": true, "result": "updated", "user_name": user.record.user_name}),
        ),
        Outcome::Deleted => (
            StatusCode::OK,
            json!({"applied": true, "result": "deleted"}),
        ),
        Outcome::Detained { reason, .. } => (
            StatusCode::CONFLICT,
            json!({"applied": false, "error": format!("detained change {id} still cannot be applied and stays detained: {reason}")}),
        ),
    };
    Ok((status, Json(body)).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    admin: AdminPrincipal,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let entry = find(&state, id).await?;
    let event = AuditEvent {
        kind: "scim.detained.cancel",
        outcome: "success",
        user_id: Some(entry.user_id.clone()),
        identifier: entry.user_name.clone(),
        detail: Some(format!(
            "admin token {}: detained {} change {id}",
            admin.name,
            entry.operation.as_str()
        )),
        ..AuditEvent::default()
    };
    if !state
        .scim
        .cancel_detained(id, event, state.clock.now())
        .await?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no detained change has the id {id}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
