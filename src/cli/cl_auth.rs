//! `cl-auth enable|disable|setup-email`: who signs in through CloudLink
//! authentication, with the emails each change sends.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::user::{UserContext, read_new_password};
use crate::admin::service::{AdminService, ClAuthContext, Outcome, Selection, UserOutcome};
use crate::config::Config;
use crate::connector::saml::settings::IdpSettings;
use crate::directory::SamlStore;
use crate::directory::sql::SqlDirectory;

#[derive(Debug, Subcommand)]
pub enum ClAuthCommand {
    /// Turn CL Auth on for the selected users. When Mitel credentials apply,
    /// each user gets an account-setup email.
    Enable(Selected),
    /// Turn CL Auth off. The default password, read twice as `user add` reads
    /// a password, becomes each user's temporary local password, and each
    /// user gets a welcome email with it.
    Disable(Selected),
    /// Send a new CloudLink account-setup email; earlier links stop working.
    SetupEmail {
        /// Login ID or email.
        user: String,
    },
}

#[derive(Debug, Args)]
pub struct Selected {
    /// Login IDs or emails.
    users: Vec<String>,
    /// Every user whose login ID, email or name contains this text.
    #[arg(long, conflicts_with_all = ["users", "all"])]
    matching: Option<String>,
    /// Every user in the directory.
    #[arg(long, conflicts_with = "users")]
    all: bool,
}

impl Selected {
    fn selection(&self) -> anyhow::Result<Selection> {
        match (&self.matching, self.all) {
            (Some(text), false) => Ok(Selection::Matching(text.clone())),
            (None, true) => Ok(Selection::All),
            (None, false) if !self.users.is_empty() => Ok(Selection::Users(self.users.clone())),
            _ => bail!("select users: give login IDs or emails, --matching TEXT, or --all"),
        }
    }
}

pub async fn run(config: &Config, command: ClAuthCommand) -> anyhow::Result<()> {
    let context = UserContext::open(config).await?;
    let admin = super::admin::open_service(config).await?;
    let cl_auth = cl_auth_context(config, &context.directory).await?;
    let actor = "command line";

    let outcomes = match &command {
        ClAuthCommand::Enable(selected) => {
            let selection = checked_selection(&admin, selected).await?;
            admin.enable_cl_auth(&selection, cl_auth, actor).await?
        }
        ClAuthCommand::Disable(selected) => {
            let selection = checked_selection(&admin, selected).await?;
            let password = read_new_password(&[])?;
            admin
                .disable_cl_auth(&selection, &password, &password, actor)
                .await?
        }
        ClAuthCommand::SetupEmail { user } => {
            vec![admin.resend_setup_email(user, cl_auth, actor).await?]
        }
    };

    // Sends what the change queued, so the emails leave even when no server runs.
    if let Err(error) = admin.mailer().send_due().await {
        eprintln!("warning: the emails stay queued for the running service to send: {error:#}");
    }
    report(&command, &outcomes)
}

/// Resolves the selection first, so a mistyped identifier changes no user.
async fn checked_selection(admin: &AdminService, selected: &Selected) -> anyhow::Result<Selection> {
    let selection = selected.selection()?;
    let (users, unknown) = admin.select(&selection).await?;
    if let Some(identifier) = unknown.first() {
        bail!("no user has the login ID or email '{identifier}'; nothing was changed");
    }
    if users.is_empty() {
        bail!("no users match the selection; nothing was changed");
    }
    Ok(selection)
}

fn report(command: &ClAuthCommand, outcomes: &[UserOutcome]) -> anyhow::Result<()> {
    let done = match command {
        ClAuthCommand::Enable(_) => "CL Auth enabled for",
        ClAuthCommand::Disable(_) => "CL Auth disabled for",
        ClAuthCommand::SetupEmail { .. } => "Account-setup email queued for",
    };
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome.outcome {
            Outcome::Changed => println!("{done} {}", outcome.user),
            Outcome::Unchanged => println!("{} already had that setting", outcome.user),
            Outcome::Failed => failures.push(format!(
                "{}: {}",
                outcome.user,
                outcome.error.as_deref().unwrap_or_default()
            )),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => bail!("{}", failures[0]),
        count => {
            for failure in &failures[1..] {
                eprintln!("{failure}");
            }
            bail!("{count} users failed; first: {}", failures[0])
        }
    }
}

/// Works out from the config and the stored SAML settings whether an IdP is
/// set up and whether CL Auth users get Mitel credentials.
pub async fn cl_auth_context(
    config: &Config,
    directory: &SqlDirectory,
) -> anyhow::Result<ClAuthContext> {
    if let Some(oidc) = &config.oidc {
        return Ok(ClAuthContext {
            idp_configured: true,
            mitel_credentials: oidc.mitel_credentials,
            ldap_active: config.ldap.is_some(),
        });
    }
    let saml = match &config.saml.idp {
        Some(settings) => Some(settings.clone()),
        None => match directory.load_idp_settings().await? {
            Some(json) => Some(
                serde_json::from_str::<IdpSettings>(&json)
                    .context("the stored SAML IdP settings are unreadable")?,
            ),
            None => None,
        },
    };
    Ok(match saml {
        Some(settings) => ClAuthContext {
            idp_configured: true,
            mitel_credentials: settings.mitel_credentials,
            ldap_active: config.ldap.is_some(),
        },
        None => ClAuthContext {
            idp_configured: false,
            mitel_credentials: true,
            ldap_active: config.ldap.is_some(),
        },
    })
}
