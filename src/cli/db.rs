//! `db`: the schema version, and migrations as a separate upgrade step.

use clap::Subcommand;

use crate::config::Config;
use crate::db;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Show the engine, the schema version and any pending migrations.
    Status,
    /// Apply pending migrations, for deployments that start the service with
    /// `[database] migrations = "verify"`.
    Migrate,
}

pub async fn run(config: &Config, command: DbCommand) -> anyhow::Result<()> {
    let pool = db::open(&config.database_url, &config.database).await?;
    match command {
        DbCommand::Status => {
            let status = db::schema_status(&pool).await?;
            println!("database:       {}", db::redact(&config.database_url));
            println!("engine:         {:?}", pool.engine());
            println!(
                "schema version: {}",
                status
                    .applied
                    .map_or_else(|| "none".to_owned(), |v| v.to_string())
            );
            println!("latest known:   {}", status.latest);
            if status.is_current() {
                println!("pending:        none");
            } else {
                let pending: Vec<String> = status.pending.iter().map(i64::to_string).collect();
                println!("pending:        {}", pending.join(", "));
            }
        }
        DbCommand::Migrate => {
            let before = db::schema_status(&pool).await?;
            db::migrate(&pool).await?;
            if before.is_current() {
                println!("The schema is already at version {}.", before.latest);
            } else {
                println!(
                    "Applied {} migration(s); the schema is now at version {}.",
                    before.pending.len(),
                    before.latest
                );
            }
        }
    }
    Ok(())
}
