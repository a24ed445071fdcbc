//! `cl-auth enable|disable`: who signs in through CloudLink authentication.

use anyhow::bail;
use clap::Subcommand;

use super::user::{UserContext, find, read_new_password};
use crate::config::Config;
use crate::directory::{AuditEvent, AuditLog, UserStore};

#[derive(Debug, Subcommand)]
pub enum ClAuthCommand {
    /// Turn CL Auth on for the given users (login IDs or emails).
    Enable {
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Turn CL Auth off; the default password, read like `user add` does,
    /// becomes each user's local password.
    Disable {
        #[arg(required = true)]
        users: Vec<String>,
    },
}

pub async fn run(
    config: &Config,
    context: &UserContext,
    command: ClAuthCommand,
) -> anyhow::Result<()> {
    let (users, enable) = match &command {
        ClAuthCommand::Enable { users } => (users, true),
        ClAuthCommand::Disable { users } => (users, false),
    };
    if enable && config.ldap.is_some() {
        bail!(
            "Failed to enable CloudLink Authentication. [ldap] in the config file makes the on-premises \
             directory the source of authentication, and only one source of authentication may be active, \
             so remove [ldap] first"
        );
    }
    // Every user is looked up first, so a typo changes no user.
    let mut found = Vec::new();
    for identifier in users {
        found.push(find(context, identifier).await?);
    }
    let password_hash = if enable {
        None
    } else {
        let password = read_new_password(&[])?;
        Some(context.hasher.hash(password).await?)
    };
    if found.is_empty() {
        bail!("no users given");
    }
    for user in &found {
        context
            .directory
            .set_cl_auth(&user.id, enable, context.now)
            .await?;
        if let Some(hash) = &password_hash {
            context
                .directory
                .set_password(&user.id, hash, true, context.now)
                .await?;
        }
        let event = AuditEvent {
            kind: if enable {
                "cl_auth.enable"
            } else {
                "cl_auth.disable"
            },
            outcome: "success",
            user_id: Some(user.id.clone()),
            identifier: Some(user.login_id.clone()),
            detail: Some("command line".to_owned()),
            ..AuditEvent::default()
        };
        context.directory.append(event, context.now).await?;
        println!(
            "CL Auth {} for {}",
            if enable { "enabled" } else { "disabled" },
            user.login_id
        );
    }
    Ok(())
}
