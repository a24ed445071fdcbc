//! `admin token create|list|revoke` and `report users`.

use std::sync::Arc;

use anyhow::bail;
use clap::Subcommand;

use crate::admin::service::AdminService;
use crate::admin::tokens;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::credentials::password::PasswordHasher;
use crate::db;
use crate::db::DbPool;
use crate::directory::sql::SqlDirectory;
use crate::email::Mailer;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Give or take the admin role, which opens the admin pages at /admin.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Give USER (login ID or email) the admin role.
    Grant { user: String },
    /// Take the admin role from USER.
    Revoke { user: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once; only its digest is stored.
    Create {
        /// A name that says who or what uses the token.
        name: String,
    },
    /// List tokens by name, without the tokens themselves.
    List,
    /// Revoke the active token with this name.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The user summary: first name, last name, email, UCC bundle,
    /// department and location.
    Users,
}

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, &config.database).await?;
    let now = SystemClock.now();
    let command = match command {
        AdminCommand::Token { command } => command,
        AdminCommand::Role { command } => return set_role(&pool, command, now).await,
    };
    match command {
        TokenCommand::Create { name } => {
            let token = tokens::create(&pool, &name, now).await?;
            println!("{token}");
            eprintln!(
                "Admin token '{}' created. It is shown only now; send it as Authorization: Bearer.",
                name.trim()
            );
        }
        TokenCommand::List => {
            for token in tokens::list(&pool).await? {
                let status = if token.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let last_used = token.last_used_at.map_or_else(
                    || "never used".to_owned(),
                    |at| format!("last used at {at}"),
                );
                println!("{}\t{status}\t{last_used}", token.name);
            }
        }
        TokenCommand::Revoke { name } => {
            if !tokens::revoke(&pool, &name, now).await? {
                bail!("no active admin token is named '{}'", name.trim());
            }
            println!("Admin token '{}' revoked", name.trim());
        }
    }
    Ok(())
}

pub async fn report(config: &Config, command: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Users = command;
    let admin = open_service(config).await?;
    print!("{}", admin.user_report_csv().await?);
    Ok(())
}

/// Builds the admin operations on the configured database, as `serve`
/// does, for commands that run without the service.
pub(super) async fn open_service(config: &Config) -> anyhow::Result<AdminService> {
    let pool = db::connect(&config.database_url, &config.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(AdminService::new(
        pool.clone(),
        Arc::new(SqlDirectory::new(pool.clone())),
        PasswordHasher::new(&config.password)?,
        Arc::new(Mailer::new(&config.email, pool, clock.clone())?),
        clock,
        config.public_url(),
    ))
}

async fn set_role(pool: &DbPool, command: RoleCommand, now: i64) -> anyhow::Result<()> {
    let (identifier, grant) = match &command {
        RoleCommand::Grant { user } => (user, true),
        RoleCommand::Revoke { user } => (user, false),
    };
    let key = crate::directory::identifier_key(identifier)?;
    let result = sqlx::query(
        "UPDATE users SET is_admin = $1, updated_at = $2 WHERE login_id_key = $3 OR email_key = $4",
    )
    .bind(i64::from(grant))
    .bind(now)
    .bind(&key)
    .bind(&key)
    .execute(pool)
    .await?;
    if result.rows_affected() == 0 {
        bail!("no user has the login ID or email '{identifier}'");
    }
    let kind = if grant {
        "admin.role_granted"
    } else {
        "admin.role_revoked"
    };
    sqlx::query("INSERT INTO audit_events (at, kind, outcome, identifier, detail) VALUES ($1, $2, 'success', $3, 'command line')")
        .bind(now)
        .bind(kind)
        .bind(identifier)
        .execute(pool)
        .await?;
    println!(
        "Admin role {} for {identifier}",
        if grant { "granted" } else { "revoked" }
    );
    Ok(())
}
