//! The provisioning pipeline that every change goes through, from the IdP
//! over HTTP or from the administrator applying a detained entry:
//! read the request into the directory fields, check the directory's rules,
//! then either write the user in one transaction or detain the change.
//!
//! A detained change is answered like an applied one (201, 200 or 204).
//! Entra ID retries a failed operation in every later cycle and quarantines
//! the whole provisioning job when failures pile up, so an error would stop
//! every other user's changes too. The change waits in the detained queue
//! instead, where the administrator applies, modifies or cancels it.
//! Conflicts are the exception: they answer 409 `uniqueness` as RFC 7644
//! asks, and the retried request reuses its detained entry.

use serde_json::Value;
use uuid::Uuid;

use super::error::{ScimError, ScimType};
use super::patch;
use super::resources::{StoredUser, UserRecord, parse_user, render_user};
use super::rules::{self, Approval};
use super::store::{Commit, CommitError, NewDetained, Operation, ScimStore, Settings, UserWrite};
use crate::directory::{AuditEvent, identifier_key};

/// Time without provisioning requests after which a full cycle counts as
/// finished. NOTE: a guess: Entra ID starts an incremental cycle about every
/// 40 minutes and sends a cycle's requests without long pauses.
pub const CYCLE_GAP_SECONDS: i64 = 600;

/// A change that the IdP requests.
#[derive(Debug, Clone)]
pub enum Change {
    Create { body: Value },
    Replace { id: String, body: Value },
    Patch { id: String, body: Value },
    Delete { id: String },
}

/// The result of a change.
#[derive(Debug, Clone)]
pub enum Outcome {
    Created(StoredUser),
    Updated(StoredUser),
    Deleted,
    Detained {
        entry_id: i64,
        reason: String,
        /// The user as the IdP should see it: the reserved id with the sent
        /// fields for a create, the unchanged user for an update, none for a delete.
        preview: Option<StoredUser>,
    },
}

/// The source of a change, which decides the checks.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Sync { defer_all: bool },
    Administrator,
}

/// The write a change leads to once it passes the checks.
#[derive(Debug, Clone)]
enum Target {
    New { id: String },
    Existing(StoredUser),
    Delete(StoredUser),
}

/// A change read into the directory's terms, ready to be checked.
#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    /// The new fields; `None` for a delete.
    record: Option<UserRecord>,
    operation: Operation,
    /// The body that a detained entry keeps: the body as received, or for a pending
    /// create the resource with the later changes applied.
    payload: String,
    /// The detained entry that this change continues, if any.
    entry_id: Option<i64>,
}

/// Runs a change from the IdP through the pipeline.
pub async fn submit(store: &dyn ScimStore, change: Change, now: i64) -> Result<Outcome, ScimError> {
    let settings = store.settings().await?;
    let plan = match plan_change(store, change, &settings, now).await? {
        Planned::Check(plan) => *plan,
        Planned::Cancelled => return Ok(Outcome::Deleted),
    };
    decide(
        store,
        plan,
        Mode::Sync {
            defer_all: settings.defer_all,
        },
        now,
    )
    .await
}

/// Applies a detained entry as the administrator: the checks run again,
/// except that role and directory-number changes are approved. A failing
/// check keeps the entry with the new reason.
pub async fn apply_detained(
    store: &dyn ScimStore,
    entry_id: i64,
    now: i64,
) -> Result<Outcome, ScimError> {
    let entry = store
        .detained_entry(entry_id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no detained entry has the id {entry_id}")))?;
    let body: Value = if entry.operation == Operation::Delete {
        Value::Null
    } else {
        serde_json::from_str(&entry.payload).map_err(|error| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("the payload of detained entry {entry_id} is not valid JSON: {error}"),
            )
        })?
    };
    let current = store.find_user(&entry.user_id).await?;
    let target = match (entry.operation, current) {
        (Operation::Create, _) => Target::New {
            id: entry.user_id.clone(),
        },
        (Operation::Delete, Some(user)) => Target::Delete(user),
        (_, Some(user)) => Target::Existing(user),
        (_, None) => {
            let reason = format!(
                "the user {} no longer exists, so the change cannot be applied; cancel this entry",
                entry.user_id
            );
            store
                .update_detained(entry.id, &reason, &entry.payload, now)
                .await?;
            return Ok(Outcome::Detained {
                entry_id,
                reason,
                preview: None,
            });
        }
    };
    let record = match (&target, entry.operation) {
        (Target::Delete(_), _) => None,
        (Target::Existing(user), Operation::Patch) => Some(patched_record(user, &body)?),
        (Target::Existing(user), _) => Some(replacement_record(&body, Some(user))?),
        (Target::New { .. }, _) => Some(read_user(&body)?),
    };
    let plan = Plan {
        target,
        record,
        operation: entry.operation,
        payload: entry.payload,
        entry_id: Some(entry.id),
    };
    decide(store, plan, Mode::Administrator, now).await
}

/// A planned change, or a cancellation that needs no checks.
enum Planned {
    Check(Box<Plan>),
    /// The change cancelled a detained create and needs no write.
    Cancelled,
}

async fn plan_change(
    store: &dyn ScimStore,
    change: Change,
    settings: &Settings,
    now: i64,
) -> Result<Planned, ScimError> {
    let plan = match change {
        Change::Create { body } => plan_create(store, body, settings).await?,
        Change::Replace { id, body } => {
            if let Some(user) = store.find_user(&id).await? {
                let record = replacement_record(&body, Some(&user))?;
                return Ok(Planned::Check(Box::new(Plan {
                    target: Target::Existing(user),
                    record: Some(record),
                    operation: Operation::Replace,
                    payload: body.to_string(),
                    entry_id: None,
                })));
            }
            let entry = pending_or_not_found(store, &id).await?;
            let record = read_user(&body)?;
            Plan {
                target: Target::New { id },
                record: Some(record),
                operation: Operation::Create,
                payload: body.to_string(),
                entry_id: Some(entry),
            }
        }
        Change::Patch { id, body } => {
            let operations = patch::parse_request(&body)?;
            if let Some(user) = store.find_user(&id).await? {
                let mut resource = render_user(&user, "");
                patch::apply(&mut resource, &operations)?;
                let record = read_patched(&resource)?;
                return Ok(Planned::Check(Box::new(Plan {
                    target: Target::Existing(user),
                    record: Some(record),
                    operation: Operation::Patch,
                    payload: body.to_string(),
                    entry_id: None,
                })));
            }
            // A PATCH for a user whose creation is detained changes the detained resource.
            let entry_id = pending_or_not_found(store, &id).await?;
            let entry = store
                .detained_entry(entry_id)
                .await?
                .ok_or_else(|| ScimError::not_found(format!("no user has the id '{id}'")))?;
            let mut resource: Value = serde_json::from_str(&entry.payload)
                .map_err(|error| ScimError::Internal(error.into()))?;
            patch::apply(&mut resource, &operations)?;
            let record = read_patched(&resource)?;
            Plan {
                target: Target::New { id },
                record: Some(record),
                operation: Operation::Create,
                payload: resource.to_string(),
                entry_id: Some(entry_id),
            }
        }
        Change::Delete { id } => {
            if let Some(user) = store.find_user(&id).await? {
                return Ok(Planned::Check(Box::new(Plan {
                    target: Target::Delete(user),
                    record: None,
                    operation: Operation::Delete,
                    payload: String::new(),
                    entry_id: None,
                })));
            }
            let entry_id = pending_or_not_found(store, &id).await?;
            // Deleting a user whose creation is detained cancels that creation.
            let audit = AuditEvent {
                kind: "scim.detained.cancel",
                outcome: "success",
                user_id: Some(id.clone()),
                detail: Some(format!(
                    "the IdP deleted the user of detained entry {entry_id}"
                )),
                ..AuditEvent::default()
            };
            store.cancel_detained(entry_id, audit, now).await?;
            return Ok(Planned::Cancelled);
        }
    };
    Ok(Planned::Check(Box::new(plan)))
}

async fn plan_create(
    store: &dyn ScimStore,
    body: Value,
    settings: &Settings,
) -> Result<Plan, ScimError> {
    let record = read_user(&body)?;
    let key = user_name_key(&record.user_name)?;
    if let Some(entry) = store.pending_create_by_user_name(&key).await? {
        return Ok(Plan {
            target: Target::New { id: entry.user_id },
            record: Some(record),
            operation: Operation::Create,
            payload: body.to_string(),
            entry_id: Some(entry.id),
        });
    }
    // During a full cycle the IdP re-creates users that it finds no more,
    // and an existing user with that userName takes the IdP's values.
    if settings.reinitialize
        && let Some(user) = store.find_by_user_name(&key).await?
    {
        let record = replacement_record(&body, Some(&user))?;
        return Ok(Plan {
            target: Target::Existing(user),
            record: Some(record),
            operation: Operation::Replace,
            payload: body.to_string(),
            entry_id: None,
        });
    }
    Ok(Plan {
        target: Target::New {
            id: Uuid::new_v4().to_string(),
        },
        record: Some(record),
        operation: Operation::Create,
        payload: body.to_string(),
        entry_id: None,
    })
}

async fn pending_or_not_found(store: &dyn ScimStore, id: &str) -> Result<i64, ScimError> {
    match store.pending_create(id).await? {
        Some(entry) => Ok(entry.id),
        None => Err(ScimError::not_found(format!("no user has the id '{id}'"))),
    }
}

fn user_name_key(user_name: &str) -> Result<String, ScimError> {
    identifier_key(user_name).map_err(|error| {
        ScimError::bad_request(
            ScimType::InvalidValue,
            format!("userName '{user_name}' is invalid: {error}"),
        )
    })
}

/// Reads a User resource from a POST or PUT body.
fn read_user(body: &Value) -> Result<UserRecord, ScimError> {
    let (record, ignored) = parse_user(body, true)?;
    user_name_key(&record.user_name)?;
    log_ignored(&record.user_name, &ignored);
    Ok(record)
}

/// Reads a resource after PATCH operations, whose `schemas` the client did not send.
fn read_patched(resource: &Value) -> Result<UserRecord, ScimError> {
    let (record, ignored) = parse_user(resource, false)?;
    user_name_key(&record.user_name)?;
    log_ignored(&record.user_name, &ignored);
    Ok(record)
}

/// Reads a PUT body. A PUT replaces the managed fields, except that the
/// role and the directory number stay when the body has none, because
/// synchronisation may not change them anyway.
fn replacement_record(body: &Value, current: Option<&StoredUser>) -> Result<UserRecord, ScimError> {
    let mut record = read_user(body)?;
    if let Some(current) = current {
        if record.role.is_none() {
            record.role.clone_from(&current.record.role);
        }
        if record.directory_number.is_none() {
            record
                .directory_number
                .clone_from(&current.record.directory_number);
        }
    }
    Ok(record)
}

fn patched_record(user: &StoredUser, body: &Value) -> Result<UserRecord, ScimError> {
    let operations = patch::parse_request(body)?;
    let mut resource = render_user(user, "");
    patch::apply(&mut resource, &operations)?;
    read_patched(&resource)
}

fn log_ignored(user_name: &str, ignored: &[String]) {
    if !ignored.is_empty() {
        tracing::info!(
            scim.user_name = user_name,
            scim.ignored = ignored.join(", "),
            "ignoring SCIM attributes that the directory does not store"
        );
    }
}

/// Checks a planned change and writes it, or detains it.
async fn decide(
    store: &dyn ScimStore,
    plan: Plan,
    mode: Mode,
    now: i64,
) -> Result<Outcome, ScimError> {
    let current = match &plan.target {
        Target::Existing(user) | Target::Delete(user) => Some(user.clone()),
        Target::New { .. } => None,
    };
    let approval = match mode {
        Mode::Sync { .. } => Approval::Sync,
        Mode::Administrator => Approval::Administrator,
    };
    let mut problems = match &plan.record {
        Some(record) => {
            rules::violations(record, current.as_ref().map(|user| &user.record), approval)
        }
        None => Vec::new(),
    };
    if let Mode::Sync { defer_all: true } = mode {
        problems.insert(0, "all operations are deferred for review".to_owned());
    }
    if !problems.is_empty() {
        let reason = problems.join("; ");
        return detain(store, &plan, current, reason, now).await;
    }

    let (write, audit) = write_for(&plan, mode);
    let commit = Commit {
        write,
        resolve_detained: plan.entry_id,
        audit,
    };
    match store.commit(commit, now).await {
        Ok(Some(user)) if matches!(plan.target, Target::New { .. }) => Ok(Outcome::Created(user)),
        Ok(Some(user)) => Ok(Outcome::Updated(user)),
        Ok(None) => Ok(Outcome::Deleted),
        Err(CommitError::Conflict { field, value }) => {
            let reason = format!("{field} '{value}' is already used by another user");
            let outcome = detain(store, &plan, current, reason.clone(), now).await?;
            match mode {
                Mode::Sync { .. } => Err(ScimError::conflict(reason)),
                Mode::Administrator => Ok(outcome),
            }
        }
        Err(CommitError::VersionMismatch) => Err(ScimError::Client {
            status: axum::http::StatusCode::CONFLICT,
            scim_type: None,
            detail: "the user was changed by another request at the same time; retry".to_owned(),
        }),
        Err(CommitError::NotFound(id)) => {
            Err(ScimError::not_found(format!("no user has the id '{id}'")))
        }
        Err(CommitError::Invalid { field, message }) => Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("invalid {field}: {message}"),
        )),
        Err(CommitError::Directory(error)) => Err(error.into()),
    }
}

async fn detain(
    store: &dyn ScimStore,
    plan: &Plan,
    current: Option<StoredUser>,
    reason: String,
    now: i64,
) -> Result<Outcome, ScimError> {
    let (user_id, user_name) = match (&plan.target, &plan.record) {
        (Target::New { id }, record) => (id.clone(), record.as_ref().map(|r| r.user_name.clone())),
        (Target::Existing(user) | Target::Delete(user), _) => {
            (user.id.clone(), Some(user.record.user_name.clone()))
        }
    };
    let entry_id = match plan.entry_id {
        Some(entry_id) => {
            store
                .update_detained(entry_id, &reason, &plan.payload, now)
                .await?;
            entry_id
        }
        None => {
            let audit = AuditEvent {
                kind: "scim.detained",
                outcome: "detained",
                user_id: Some(user_id.clone()),
                identifier: user_name.clone(),
                detail: Some(format!("{}: {reason}", plan.operation.as_str())),
                ..AuditEvent::default()
            };
            let entry = NewDetained {
                operation: plan.operation,
                user_id: user_id.clone(),
                user_name: user_name.clone(),
                reason: reason.clone(),
                payload: plan.payload.clone(),
            };
            store.detain(entry, audit, now).await?
        }
    };
    tracing::info!(
        scim.entry = entry_id,
        scim.operation = plan.operation.as_str(),
        scim.user_id = %user_id,
        reason = %reason,
        "SCIM change detained for the administrator"
    );
    let preview = match (&plan.target, &plan.record) {
        (Target::New { id }, Some(record)) => Some(StoredUser {
            id: id.clone(),
            record: record.clone(),
            created_at: now,
            updated_at: now,
            version: 0,
        }),
        (Target::Existing(_), _) => current,
        _ => None,
    };
    Ok(Outcome::Detained {
        entry_id,
        reason,
        preview,
    })
}

fn write_for(plan: &Plan, mode: Mode) -> (UserWrite, AuditEvent) {
    let source = match (mode, plan.entry_id) {
        (Mode::Administrator, Some(entry)) => format!("applied detained entry {entry}"),
        _ => "provisioned by the IdP".to_owned(),
    };
    match (&plan.target, &plan.record) {
        (Target::New { id }, Some(record)) => (
            UserWrite::Insert {
                id: id.clone(),
                record: record.clone(),
            },
            audit_event("scim.user.create", id, &record.user_name, source),
        ),
        (Target::Existing(user), Some(record)) => {
            let kind = match (user.record.active, record.active) {
                (true, false) => "scim.user.deactivate",
                (false, true) => "scim.user.reactivate",
                _ => "scim.user.update",
            };
            let fields = changed_fields(&user.record, record);
            let detail = format!(
                "{source}; changed: {}",
                if fields.is_empty() {
                    "nothing".to_owned()
                } else {
                    fields.join(", ")
                }
            );
            (
                UserWrite::Update {
                    id: user.id.clone(),
                    record: record.clone(),
                    expected_version: user.version,
                },
                audit_event(kind, &user.id, &record.user_name, detail),
            )
        }
        (Target::Delete(user), _) | (Target::Existing(user), None) => (
            UserWrite::Delete {
                id: user.id.clone(),
            },
            audit_event("scim.user.delete", &user.id, &user.record.user_name, source),
        ),
        (Target::New { id }, None) => (
            UserWrite::Delete { id: id.clone() },
            audit_event("scim.user.delete", id, "", source),
        ),
    }
}

fn audit_event(kind: &'static str, user_id: &str, user_name: &str, detail: String) -> AuditEvent {
    AuditEvent {
        kind,
        outcome: "success",
        user_id: Some(user_id.to_owned()),
        identifier: Some(user_name.to_owned()),
        detail: Some(detail),
        ..AuditEvent::default()
    }
}

/// Names the managed fields that differ, for the audit log (never the values).
fn changed_fields(old: &UserRecord, new: &UserRecord) -> Vec<&'static str> {
    let pairs: [(&'static str, bool); 15] = [
        ("userName", old.user_name != new.user_name),
        ("externalId", old.external_id != new.external_id),
        ("active", old.active != new.active),
        ("first name", old.given_name != new.given_name),
        ("last name", old.family_name != new.family_name),
        ("email", old.email != new.email),
        ("role", old.role != new.role),
        (
            "directory number",
            old.directory_number != new.directory_number,
        ),
        ("mobile", old.mobile != new.mobile),
        ("DID", old.did != new.did),
        ("company", old.company != new.company),
        ("street address", old.street_address != new.street_address),
        ("city", old.city != new.city),
        ("postal code", old.postal_code != new.postal_code),
        ("country", old.country != new.country),
    ];
    pairs
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// Tracks the full cycle that "re-initialize on next cycle" requests: the
/// first request after the switch starts it, and a pause of
/// [`CYCLE_GAP_SECONDS`] ends it and clears the switch.
pub async fn note_request(store: &dyn ScimStore, now: i64) -> Result<Settings, ScimError> {
    let mut settings = store.settings().await?;
    if !settings.reinitialize {
        return Ok(settings);
    }
    match (settings.reinitialize_started_at, settings.last_request_at) {
        (Some(_), Some(last)) if now - last > CYCLE_GAP_SECONDS => {
            tracing::info!(
                "the full SCIM synchronisation cycle has ended; re-initialization is off"
            );
            settings.reinitialize = false;
            settings.reinitialize_started_at = None;
            settings.last_request_at = None;
        }
        (None, _) => {
            tracing::info!("a full SCIM synchronisation cycle starts");
            settings.reinitialize_started_at = Some(now);
            settings.last_request_at = Some(now);
        }
        _ => settings.last_request_at = Some(now),
    }
    store.save_settings(settings, now).await?;
    Ok(settings)
}

/// Checks that an edited payload of a detained change has the shape that
/// the change's operation reads.
pub fn check_detained_payload(
    operation: Operation,
    payload: &serde_json::Value,
) -> anyhow::Result<()> {
    let result = match operation {
        Operation::Patch => crate::scim::patch::parse_request(payload).map(|_| ()),
        _ => crate::scim::resources::parse_user(payload, true).map(|_| ()),
    };
    result.map_err(|error| anyhow::anyhow!("invalid payload: {error}"))
}
