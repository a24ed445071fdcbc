//! `user …` commands.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::credentials::password::{PasswordHasher, check_strength};
use crate::credentials::{recovery, totp};
use crate::db;
use crate::directory::sql::SqlDirectory;
use crate::directory::{
    AuditEvent, AuditLog, NewUser, User, UserStore, identifier_key, parse_email,
};
use crate::scim::sql::SqlScimStore;
use crate::scim::store::ScimStore;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with a local password, read from standard input when it is
    /// not a terminal, or else prompted for twice.
    Add {
        /// Login ID, unique among login IDs and email addresses.
        #[arg(long)]
        login_id: String,
        /// Primary email address, unique.
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
    },
    /// List all users.
    List,
    /// Show one user, found by login ID or email.
    Show { user: String },
    /// Set a user's local password (read like `user add` does).
    SetPassword { user: String },
    /// Set the separate Mitel-credentials password of a CL Auth user.
    SetClPassword { user: String },
    /// Manage a user's TOTP second factor.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Enrol a new TOTP secret and print its otpauth URI and recovery codes.
    Enroll { user: String },
    /// Remove the TOTP secret and recovery codes, for a user who lost the device.
    Reset { user: String },
}

pub struct UserContext {
    pub directory: SqlDirectory,
    pub scim: SqlScimStore,
    pub hasher: PasswordHasher,
    pub now: i64,
}

impl UserContext {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config.database_url, &config.database).await?;
        Ok(Self {
            scim: SqlScimStore::new(pool.clone()),
            directory: SqlDirectory::new(pool),
            hasher: PasswordHasher::new(&config.password)?,
            now: SystemClock.now(),
        })
    }
}

pub async fn run(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let context = UserContext::open(config).await?;
    match command {
        UserCommand::Add {
            login_id,
            email,
            first_name,
            last_name,
        } => add(&context, login_id, email, first_name, last_name).await,
        UserCommand::List => list(&context).await,
        UserCommand::Show { user } => show(&context, &user).await,
        UserCommand::SetPassword { user } => set_password(&context, &user).await,
        UserCommand::SetClPassword { user } => set_cl_password(&context, &user).await,
        UserCommand::Totp {
            command: TotpCommand::Enroll { user },
        } => totp_enroll(&context, &user).await,
        UserCommand::Totp {
            command: TotpCommand::Reset { user },
        } => totp_reset(&context, &user).await,
    }
}

async fn add(
    context: &UserContext,
    login_id: String,
    email: String,
    first_name: String,
    last_name: String,
) -> anyhow::Result<()> {
    if context.scim.token_hash().await?.is_some() {
        bail!(
            "users come from the identity provider while SCIM synchronisation is on: add the user \
             there, or turn synchronisation off with `unified-login scim disable`"
        );
    }
    let login_id = login_id.trim().to_owned();
    identifier_key(&login_id).map_err(|error| anyhow::anyhow!("invalid --login-id: {error}"))?;
    if login_id.chars().any(char::is_whitespace) {
        bail!("invalid --login-id '{login_id}': login IDs cannot contain spaces");
    }
    let email = parse_email(&email).map_err(|error| anyhow::anyhow!("invalid --email: {error}"))?;
    if last_name.trim().is_empty() {
        bail!("--last-name is empty: every user needs a last name");
    }

    // Check uniqueness before asking for a password, so a typo costs no typing.
    for (flag, value) in [("--login-id", &login_id), ("--email", &email)] {
        if context
            .directory
            .find_by_key(&identifier_key(value)?)
            .await?
            .is_some()
        {
            bail!("{flag} '{value}' is already used by another user");
        }
    }

    let full_name = format!("{first_name}{last_name}");
    let password = read_new_password(&[&login_id, &email, &first_name, &last_name, &full_name])?;
    let password_hash = context.hasher.hash(password).await?;
    let user = context
        .directory
        .create(
            NewUser {
                login_id,
                email,
                first_name,
                last_name,
                password_hash: Some(password_hash),
            },
            context.now,
        )
        .await?;
    audit(context, "user.create", &user).await?;
    println!(
        "Added user {} ({} <{}>)",
        user.login_id,
        user.display_name(),
        user.email
    );
    Ok(())
}

async fn list(context: &UserContext) -> anyhow::Result<()> {
    let users = context.directory.list().await?;
    println!(
        "{:<24} {:<32} {:<24} {:<7} {:<6} {:<6}",
        "LOGIN ID", "EMAIL", "NAME", "CL AUTH", "TOTP", "ACTIVE"
    );
    for user in &users {
        println!(
            "{:<24} {:<32} {:<24} {:<7} {:<6} {:<6}",
            user.login_id,
            user.email,
            user.display_name(),
            yes_no(user.cl_auth_enabled),
            yes_no(user.has_second_factor()),
            yes_no(user.active),
        );
    }
    Ok(())
}

async fn show(context: &UserContext, identifier: &str) -> anyhow::Result<()> {
    let user = find(context, identifier).await?;
    let recovery_left = context.directory.remaining_recovery_codes(&user.id).await?;
    println!("id:             {}", user.id);
    println!("login ID:       {}", user.login_id);
    println!("email:          {}", user.email);
    println!("name:           {}", user.display_name());
    println!("active:         {}", yes_no(user.active));
    println!("CL Auth:        {}", yes_no(user.cl_auth_enabled));
    println!("password set:   {}", yes_no(user.password_hash.is_some()));
    println!("TOTP:           {}", yes_no(user.has_second_factor()));
    println!("recovery codes: {recovery_left} unused");
    println!("created:        {}", format_time(user.created_at));
    println!(
        "last sign-in:   {}",
        user.last_login_at
            .map_or_else(|| "never".to_owned(), format_time)
    );
    Ok(())
}

async fn set_password(context: &UserContext, identifier: &str) -> anyhow::Result<()> {
    let user = find(context, identifier).await?;
    let hash = new_password_hash(context, &user).await?;
    context
        .directory
        .set_password(&user.id, &hash, false, context.now)
        .await?;
    audit(context, "user.set_password", &user).await?;
    println!("Password set for {}", user.login_id);
    Ok(())
}

async fn set_cl_password(context: &UserContext, identifier: &str) -> anyhow::Result<()> {
    let user = find(context, identifier).await?;
    if !user.cl_auth_enabled {
        bail!(
            "user '{}' does not use CL Auth; run `unified-login cl-auth enable {}` first",
            user.login_id,
            user.login_id
        );
    }
    let hash = new_password_hash(context, &user).await?;
    context
        .directory
        .set_cl_password(&user.id, &hash, context.now)
        .await?;
    audit(context, "user.set_cl_password", &user).await?;
    println!("Mitel-credentials password set for {}", user.login_id);
    Ok(())
}

/// Reads a new password for `user`, checks it against the policy and the
/// user's own names, and returns its hash.
async fn new_password_hash(context: &UserContext, user: &User) -> anyhow::Result<String> {
    let full_name = format!("{}{}", user.first_name, user.last_name);
    let password = read_new_password(&[
        &user.login_id,
        &user.email,
        &user.first_name,
        &user.last_name,
        &full_name,
    ])?;
    context.hasher.hash(password).await
}

async fn totp_enroll(context: &UserContext, identifier: &str) -> anyhow::Result<()> {
    let user = find(context, identifier).await?;
    if user.has_second_factor() {
        bail!(
            "user '{}' already has TOTP enrolled; run `unified-login user totp reset {}` first",
            user.login_id,
            user.login_id
        );
    }
    let secret = totp::generate_secret();
    let uri = totp::otpauth_uri(&secret, &user.email)?;
    let codes = recovery::generate_codes();
    let digests: Vec<String> = codes
        .iter()
        .filter_map(|code| recovery::normalize(code))
        .map(|code| recovery::digest(&code))
        .collect();
    context
        .directory
        .set_totp(&user.id, Some(&secret), &digests, context.now)
        .await?;
    audit(context, "totp.enroll", &user).await?;

    println!("TOTP enrolled for {}.", user.login_id);
    println!("otpauth URI (import into an authenticator app): {uri}");
    println!("secret: {secret}");
    println!("recovery codes (each works once; shown only now):");
    for code in &codes {
        println!("  {code}");
    }
    Ok(())
}

async fn totp_reset(context: &UserContext, identifier: &str) -> anyhow::Result<()> {
    let user = find(context, identifier).await?;
    if !user.has_second_factor() {
        bail!(
            "user '{}' has no TOTP enrolled; nothing to reset",
            user.login_id
        );
    }
    context
        .directory
        .set_totp(&user.id, None, &[], context.now)
        .await?;
    audit(context, "totp.reset", &user).await?;
    println!("TOTP and recovery codes removed for {}", user.login_id);
    Ok(())
}

pub async fn find(context: &UserContext, identifier: &str) -> anyhow::Result<User> {
    let key = identifier_key(identifier).with_context(|| format!("invalid user '{identifier}'"))?;
    context.directory.find_by_key(&key).await?.with_context(|| {
        format!(
            "no user has the login ID or email '{}'; see `unified-login user list`",
            identifier.trim()
        )
    })
}

async fn audit(context: &UserContext, kind: &'static str, user: &User) -> anyhow::Result<()> {
    let event = AuditEvent {
        kind,
        outcome: "success",
        user_id: Some(user.id.clone()),
        identifier: Some(user.login_id.clone()),
        detail: Some("command line".to_owned()),
        ..AuditEvent::default()
    };
    Ok(context.directory.append(event, context.now).await?)
}

/// Reads a new password from standard input (first line) when it is not a
/// terminal, or prompts twice, then applies the password policy.
pub fn read_new_password(user_inputs: &[&str]) -> anyhow::Result<SecretString> {
    let password = if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("New password: ").context("cannot read the password")?;
        let second =
            rpassword::prompt_password("Repeat password: ").context("cannot read the password")?;
        if first != second {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let password = SecretString::from(password);
    // zxcvbn matches user inputs as whole words, so the parts of an email
    // address count separately as well as together.
    let inputs: Vec<&str> = user_inputs
        .iter()
        .flat_map(|input| std::iter::once(*input).chain(input.split(['@', '.', ' '])))
        .collect();
    check_strength(password.expose_secret(), &inputs)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    std::io::stdout().flush().ok();
    Ok(password)
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
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
