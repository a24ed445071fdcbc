//! `scim …`: the Secret Token, the synchronisation switches and the
//! detained queue.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{ArgAction, Subcommand};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db;
use crate::directory::AuditEvent;
use crate::scim::PATCH_OP_SCHEMA;
use crate::scim::auth::{generate_token, token_digest};
use crate::scim::error::ScimError;
use crate::scim::patch::{self, PatchOperation};
use crate::scim::service::{self, Outcome};
use crate::scim::sql::SqlScimStore;
use crate::scim::store::{DetainedEntry, Operation, ScimStore};

#[derive(Debug, Subcommand)]
pub enum ScimCommand {
    /// Print the Tenant URL and a new Secret Token for the IdP's provisioning
    /// setup. This turns synchronisation on and revokes any earlier token.
    GenerateKeys,
    /// Revoke the Secret Token, which turns synchronisation off.
    Disable,
    /// Show the synchronisation switches, or change them.
    Settings {
        /// Detain every incoming change for review (true or false).
        #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
        defer_all: Option<bool>,
        /// Make the next synchronisation cycle a full one (true or false).
        #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
        reinitialize: Option<bool>,
    },
    /// List, view, apply, modify or cancel detained changes.
    Detained {
        #[command(subcommand)]
        command: DetainedCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DetainedCommand {
    /// List the detained changes, oldest first.
    List,
    /// Show one detained change with its payload.
    Show { id: i64 },
    /// Check the change again and apply it; role and directory-number
    /// changes count as approved. A change that still fails stays detained
    /// with the new reason.
    Apply { id: i64 },
    /// Edit the payload of a detained change before applying it.
    Modify {
        id: i64,
        /// Set an attribute, such as `name.familyName=Doe` or
        /// `phoneNumbers[type eq "mobile"].value=+16135550123`; repeatable.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Replace the payload with the JSON in this file.
        #[arg(long, value_name = "FILE", conflicts_with = "set")]
        payload: Option<PathBuf>,
    },
    /// Drop a detained change without applying it.
    Cancel { id: i64 },
}

pub async fn run(config: &Config, command: ScimCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, &config.database).await?;
    let store = SqlScimStore::new(pool);
    let now = SystemClock.now();
    match command {
        ScimCommand::GenerateKeys => generate_keys(config, &store, now).await,
        ScimCommand::Disable => disable(&store, now).await,
        ScimCommand::Settings {
            defer_all,
            reinitialize,
        } => settings(&store, defer_all, reinitialize, now).await,
        ScimCommand::Detained { command } => match command {
            DetainedCommand::List => list(&store).await,
            DetainedCommand::Show { id } => show(&store, id).await,
            DetainedCommand::Apply { id } => apply(&store, id, now).await,
            DetainedCommand::Modify { id, set, payload } => {
                modify(&store, id, &set, payload.as_deref(), now).await
            }
            DetainedCommand::Cancel { id } => cancel(&store, id, now).await,
        },
    }
}

fn audit(kind: &'static str, detail: String) -> AuditEvent {
    AuditEvent {
        kind,
        outcome: "success",
        detail: Some(detail),
        ..AuditEvent::default()
    }
}

async fn generate_keys(config: &Config, store: &SqlScimStore, now: i64) -> anyhow::Result<()> {
    let tenant_url = format!(
        "{}/scim/v2",
        config.public_url().as_str().trim_end_matches('/')
    );
    let replaced = store.token_hash().await?.is_some();
    let token = generate_token();
    store
        .replace_token(
            &token_digest(token.expose_secret()),
            audit("scim.token.generate", "command line".to_owned()),
            now,
        )
        .await?;
    println!("Tenant URL:   {tenant_url}");
    println!("Secret Token: {}", token.expose_secret());
    println!();
    println!(
        "Paste both into the IdP's provisioning setup (Entra ID: Provisioning → Admin Credentials)."
    );
    println!("The token is shown only now; the broker keeps only its SHA-256 digest.");
    if replaced {
        println!("The previous Secret Token no longer works.");
    }
    Ok(())
}

async fn disable(store: &SqlScimStore, now: i64) -> anyhow::Result<()> {
    if !store
        .delete_token(audit("scim.disable", "command line".to_owned()), now)
        .await?
    {
        bail!("SCIM synchronisation is already off: there is no Secret Token");
    }
    println!("SCIM synchronisation is off: the Secret Token no longer works.");
    println!("Run `unified-login scim generate-keys` to turn it on again.");
    Ok(())
}

async fn settings(
    store: &SqlScimStore,
    defer_all: Option<bool>,
    reinitialize: Option<bool>,
    now: i64,
) -> anyhow::Result<()> {
    let mut settings = store.settings().await?;
    if defer_all.is_some() || reinitialize.is_some() {
        if let Some(defer_all) = defer_all {
            settings.defer_all = defer_all;
        }
        if let Some(reinitialize) = reinitialize {
            settings.reinitialize = reinitialize;
            settings.reinitialize_started_at = None;
            settings.last_request_at = None;
        }
        store.save_settings(settings, now).await?;
    }
    let enabled = store.token_hash().await?.is_some();
    println!(
        "synchronisation:            {}",
        if enabled { "on" } else { "off" }
    );
    println!("defer all operations:       {}", yes_no(settings.defer_all));
    let reinitialize = match (settings.reinitialize, settings.reinitialize_started_at) {
        (false, _) => "no".to_owned(),
        (true, None) => "yes, at the next cycle".to_owned(),
        (true, Some(_)) => "yes, a full cycle is running".to_owned(),
    };
    println!("re-initialize on next cycle: {reinitialize}");
    println!(
        "detained changes:           {}",
        store.detained().await?.len()
    );
    Ok(())
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

async fn list(store: &SqlScimStore) -> anyhow::Result<()> {
    let entries = store.detained().await?;
    if entries.is_empty() {
        println!("No detained changes.");
        return Ok(());
    }
    println!(
        "{:<6} {:<8} {:<32} {:<20} REASON",
        "ID", "CHANGE", "USER", "RECEIVED"
    );
    for entry in &entries {
        println!(
            "{:<6} {:<8} {:<32} {:<20} {}",
            entry.id,
            entry.operation.as_str(),
            entry.user_name.as_deref().unwrap_or(&entry.user_id),
            format_time(entry.created_at),
            entry.reason
        );
    }
    Ok(())
}

async fn find(store: &SqlScimStore, id: i64) -> anyhow::Result<DetainedEntry> {
    store.detained_entry(id).await?.with_context(|| {
        format!("no detained change has the id {id}; see `unified-login scim detained list`")
    })
}

async fn show(store: &SqlScimStore, id: i64) -> anyhow::Result<()> {
    let entry = find(store, id).await?;
    println!("id:        {}", entry.id);
    println!("change:    {}", entry.operation.as_str());
    println!("user id:   {}", entry.user_id);
    println!("user name: {}", entry.user_name.as_deref().unwrap_or("-"));
    println!("received:  {}", format_time(entry.created_at));
    println!("updated:   {}", format_time(entry.updated_at));
    println!("reason:    {}", entry.reason);
    println!("payload:");
    let pretty = serde_json::from_str::<Value>(&entry.payload)
        .ok()
        .and_then(|payload| serde_json::to_string_pretty(&payload).ok())
        .unwrap_or_else(|| entry.payload.clone());
    println!("{pretty}");
    Ok(())
}

fn scim_error(error: ScimError) -> anyhow::Error {
    match error {
        ScimError::Internal(error) => error,
        other => anyhow::anyhow!("{other}"),
    }
}

async fn apply(store: &SqlScimStore, id: i64, now: i64) -> anyhow::Result<()> {
    find(store, id).await?;
    match service::apply_detained(store, id, now)
        .await
        .map_err(scim_error)?
    {
        Outcome::Created(user) => println!(
            "Applied detained change {id}: created {}",
            user.record.user_name
        ),
        Outcome::Updated(user) => println!(
            "Applied detained change {id}: updated {}",
            user.record.user_name
        ),
        Outcome::Deleted => println!("Applied detained change {id}: deleted the user"),
        Outcome::Detained { reason, .. } => {
            bail!("detained change {id} still cannot be applied and stays detained: {reason}")
        }
    }
    Ok(())
}

async fn modify(
    store: &SqlScimStore,
    id: i64,
    assignments: &[String],
    payload_file: Option<&std::path::Path>,
    now: i64,
) -> anyhow::Result<()> {
    let entry = find(store, id).await?;
    if entry.operation == Operation::Delete {
        bail!(
            "detained change {id} is a delete, which has no payload to modify; apply or cancel it"
        );
    }
    let payload = match payload_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let payload: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            service::check_detained_payload(entry.operation, &payload)?;
            payload
        }
        None if assignments.is_empty() => bail!("give --set PATH=VALUE or --payload FILE"),
        None => modified_payload(&entry, assignments)?,
    };
    store
        .update_detained(id, &entry.reason, &payload.to_string(), now)
        .await?;
    println!(
        "Modified detained change {id}. Apply it with `unified-login scim detained apply {id}`."
    );
    Ok(())
}

/// Applies `PATH=VALUE` assignments: to the resource of a create or
/// replace, or as extra replace operations of a PATCH.
fn modified_payload(entry: &DetainedEntry, assignments: &[String]) -> anyhow::Result<Value> {
    let mut payload: Value = serde_json::from_str(&entry.payload).with_context(|| {
        format!(
            "the payload of detained change {} is not valid JSON",
            entry.id
        )
    })?;
    let mut operations = Vec::new();
    for assignment in assignments {
        let (path, value) = assignment
            .split_once('=')
            .with_context(|| format!("invalid --set '{assignment}': expected PATH=VALUE"))?;
        patch::PatchPath::parse(path)
            .map_err(|error| anyhow::anyhow!("invalid --set path '{path}': {error}"))?;
        operations.push(json!({"op": "replace", "path": path.trim(), "value": value}));
    }
    if entry.operation == Operation::Patch {
        let list = payload
            .get_mut("Operations")
            .and_then(Value::as_array_mut)
            .context("the detained PATCH has no Operations array")?;
        list.extend(operations);
    } else {
        let request = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations});
        let parsed: Vec<PatchOperation> = patch::parse_request(&request).map_err(scim_error)?;
        patch::apply(&mut payload, &parsed).map_err(scim_error)?;
    }
    service::check_detained_payload(entry.operation, &payload)?;
    Ok(payload)
}

async fn cancel(store: &SqlScimStore, id: i64, now: i64) -> anyhow::Result<()> {
    let entry = find(store, id).await?;
    let event = AuditEvent {
        kind: "scim.detained.cancel",
        outcome: "success",
        user_id: Some(entry.user_id.clone()),
        identifier: entry.user_name.clone(),
        detail: Some(format!(
            "command line: detained {} change {id}",
            entry.operation.as_str()
        )),
        ..AuditEvent::default()
    };
    if !store.cancel_detained(id, event, now).await? {
        bail!("no detained change has the id {id}");
    }
    println!("Cancelled detained change {id}; it will not be applied.");
    Ok(())
}

fn format_time(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_seconds.to_string())
}
