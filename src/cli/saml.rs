//! `saml …` commands: the values to paste into the IdP, and the IdP's
//! settings as the broker keeps them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SpKeyLocation};
use crate::connector::saml::SamlBroker;
use crate::connector::saml::settings::IdpSettings;
use crate::db;
use crate::directory::sql::SqlDirectory;
use crate::directory::{AuditEvent, AuditLog, SamlStore};

#[derive(Debug, Subcommand)]
pub enum SamlCommand {
    /// Print the SP entity ID and Reply (ACS) URL to enter at the IdP, and
    /// the IdP settings in force.
    Show,
    /// Set or change IdP settings; options not given keep their values.
    Set(SetArgs),
    /// Fill the IdP settings from the IdP's metadata XML file.
    ImportMetadata {
        /// Metadata XML file downloaded from the IdP.
        file: PathBuf,
        /// Name shown to users; required the first time.
        #[arg(long)]
        name: Option<String>,
        /// Also re-fetch the metadata from this URL on a schedule.
        #[arg(long)]
        metadata_url: Option<Url>,
    },
    /// Delete the IdP settings saved by `saml set` or `saml import-metadata`,
    /// which turns SAML single sign-on off.
    Remove,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// IdP name shown on buttons.
    #[arg(long)]
    name: Option<String>,
    /// The IdP's Sign-in URL.
    #[arg(long)]
    sso_url: Option<Url>,
    /// The IdP's entity ID (Identifier).
    #[arg(long)]
    entity_id: Option<String>,
    /// PEM file with one or more signing certificates, one after the other.
    #[arg(long, value_name = "FILE")]
    certificates: Option<PathBuf>,
    /// Offer Mitel credentials next to the IdP.
    #[arg(long)]
    mitel_credentials: Option<bool>,
    /// Allowed clock difference to the IdP, in seconds.
    #[arg(long)]
    clock_skew: Option<u32>,
    /// Accept IdP-initiated (unsolicited) responses.
    #[arg(long)]
    allow_unsolicited: Option<bool>,
    /// Send the typed email as the AuthnRequest Subject (Entra ID rejects it).
    #[arg(long)]
    send_subject: Option<bool>,
    /// Attribute carrying the email, such as Entra's UPN claim; "" means the NameID.
    #[arg(long)]
    identity_attribute: Option<String>,
    /// Extra accepted audience, such as spn:<application id>; repeat for more.
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Metadata URL to re-fetch for certificate rollover; "" removes it.
    #[arg(long)]
    metadata_url: Option<String>,
    /// Accept RSA-SHA1 signatures. Insecure: SHA-1 signatures can be forged.
    #[arg(long)]
    insecure_allow_sha1: Option<bool>,
}

pub async fn run(config: &Config, command: SamlCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url, &config.database).await?;
    let directory = Arc::new(SqlDirectory::new(pool));
    let now = SystemClock.now();
    match command {
        SamlCommand::Show => show(config, directory, now).await,
        SamlCommand::Set(args) => {
            reject_while_ldap(config)?;
            if config.saml.idp.is_some() {
                bail!(
                    "the IdP settings come from the [saml.idp] table of the config file; edit it there"
                );
            }
            let current = stored(&*directory).await?;
            let settings = merge(current, args)?;
            save(&directory, &settings, now).await
        }
        SamlCommand::ImportMetadata {
            file,
            name,
            metadata_url,
        } => {
            reject_while_ldap(config)?;
            if config.saml.idp.is_some() {
                bail!(
                    "the IdP settings come from the [saml.idp] table of the config file; edit it there"
                );
            }
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let current = stored(&*directory).await?;
            let name = match (&name, &current) {
                (Some(name), _) => name.clone(),
                (None, Some(current)) => current.name.clone(),
                (None, None) => bail!("--name is required the first time: the IdP name users see"),
            };
            let mut settings = IdpSettings::from_metadata(&xml, &name, current.as_ref())
                .with_context(|| format!("cannot import {}", file.display()))?;
            if let Some(url) = metadata_url {
                settings.metadata_url = Some(url);
            }
            save(&directory, &settings, now).await
        }
        SamlCommand::Remove => remove(config, &directory, now).await,
    }
}

/// Fails while `[ldap]` is configured: the directory is then the one source
/// of authentication, and a SAML IdP would be a second one.
fn reject_while_ldap(config: &Config) -> anyhow::Result<()> {
    if config.ldap.is_some() {
        bail!(
            "the IdP settings were not saved: [ldap] in the config file makes the on-premises directory the \
             source of authentication, and only one source of authentication may be active, so remove [ldap] \
             first to use CloudLink authentication"
        );
    }
    Ok(())
}

async fn remove(config: &Config, directory: &SqlDirectory, now: i64) -> anyhow::Result<()> {
    if config.saml.idp.is_some() {
        bail!(
            "the IdP settings come from the [saml.idp] table of the config file; remove the table there"
        );
    }
    if !directory.delete_idp_settings().await? {
        bail!("no IdP settings are saved, so there is nothing to remove");
    }
    let event = AuditEvent {
        kind: "saml.settings",
        outcome: "success",
        detail: Some("IdP settings removed, command line".to_owned()),
        ..AuditEvent::default()
    };
    directory.append(event, now).await?;
    println!("Removed the saved IdP settings; SAML single sign-on is off.");
    Ok(())
}

async fn stored(store: &dyn SamlStore) -> anyhow::Result<Option<IdpSettings>> {
    match store.load_idp_settings().await? {
        Some(json) => Ok(Some(
            serde_json::from_str(&json).context("stored IdP settings are unreadable")?,
        )),
        None => Ok(None),
    }
}

fn merge(current: Option<IdpSettings>, args: SetArgs) -> anyhow::Result<IdpSettings> {
    let certificates_pem = match &args.certificates {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let mut settings = match current {
        Some(current) => current,
        None => {
            let missing: Vec<&str> = [
                ("--name", args.name.is_none()),
                ("--sso-url", args.sso_url.is_none()),
                ("--entity-id", args.entity_id.is_none()),
                ("--certificates", certificates_pem.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, missing)| missing.then_some(flag))
            .collect();
            if !missing.is_empty() {
                bail!(
                    "no IdP is set up yet, so {} must be given",
                    missing.join(", ")
                );
            }
            IdpSettings::new("", args.sso_url.clone().context("--sso-url")?, "", "")
        }
    };
    if let Some(name) = args.name {
        settings.name = name;
    }
    if let Some(url) = args.sso_url {
        settings.sso_url = url;
    }
    if let Some(entity_id) = args.entity_id {
        settings.entity_id = entity_id;
    }
    if let Some(pem) = certificates_pem {
        settings.certificates_pem = pem;
    }
    if let Some(value) = args.mitel_credentials {
        settings.mitel_credentials = value;
    }
    if let Some(value) = args.clock_skew {
        settings.clock_skew_seconds = value;
    }
    if let Some(value) = args.allow_unsolicited {
        settings.allow_unsolicited = value;
    }
    if let Some(value) = args.send_subject {
        settings.send_subject = value;
    }
    if let Some(value) = args.identity_attribute {
        settings.identity_attribute = Some(value).filter(|value| !value.is_empty());
    }
    if !args.audiences.is_empty() {
        settings.extra_audiences = args.audiences;
    }
    if let Some(value) = args.metadata_url {
        settings.metadata_url = if value.is_empty() {
            None
        } else {
            Some(Url::parse(&value).with_context(|| format!("invalid --metadata-url '{value}'"))?)
        };
    }
    if let Some(value) = args.insecure_allow_sha1 {
        settings.insecure_allow_sha1 = value;
    }
    Ok(settings)
}

async fn save(directory: &SqlDirectory, settings: &IdpSettings, now: i64) -> anyhow::Result<()> {
    let certificates = settings
        .validate()
        .context("the IdP settings were not saved")?;
    directory
        .save_idp_settings(&serde_json::to_string(settings)?, now)
        .await?;
    let event = AuditEvent {
        kind: "saml.settings",
        outcome: "success",
        detail: Some(format!(
            "IdP {} with {} signing certificate(s), command line",
            settings.entity_id,
            certificates.len()
        )),
        ..AuditEvent::default()
    };
    directory.append(event, now).await?;
    println!(
        "Saved IdP settings for {} ({} signing certificate(s)).",
        settings.name,
        certificates.len()
    );
    if settings.insecure_allow_sha1 {
        println!(
            "WARNING: RSA-SHA1 signatures are accepted; turn this off as soon as the IdP signs with SHA-256."
        );
    }
    Ok(())
}

async fn show(config: &Config, directory: Arc<SqlDirectory>, now: i64) -> anyhow::Result<()> {
    let broker = SamlBroker::new(&config.saml, &config.public_url(), directory, now).await?;
    println!("Enter these at the identity provider:");
    println!("  Identifier (SP entity ID):  {}", broker.entity_id());
    println!("  Reply URL (ACS URL):        {}", broker.acs_url());
    println!(
        "  SP metadata:                {}",
        config.public_url().join("saml/metadata")?
    );
    let stored_in = match broker.sp_key_location() {
        SpKeyLocation::Database { .. } => "the database".to_owned(),
        SpKeyLocation::Files { certificate, .. } => certificate.display().to_string(),
    };
    println!(
        "  SP certificate:             SHA-256 {} (in {stored_in})",
        broker.sp_certificate_fingerprint()?
    );
    println!();
    match broker.active_idp().await? {
        None => println!(
            "No IdP is configured: run `unified-login saml set` or `unified-login saml import-metadata`."
        ),
        Some(idp) => {
            let settings = &idp.settings;
            println!("IdP settings (from the {}):", idp.source);
            println!("  Name:                 {}", settings.name);
            println!("  Sign-in URL:          {}", settings.sso_url);
            println!("  Entity ID:            {}", settings.entity_id);
            for cert in &idp.certificates {
                println!(
                    "  Signing certificate:  {} (SHA-256 {}, expires {})",
                    cert.subject, cert.fingerprint, cert.not_after
                );
            }
            println!(
                "  Mitel credentials:    {}",
                if settings.mitel_credentials {
                    "enabled"
                } else {
                    "disabled"
                }
            );
            println!("  Clock skew:           {} s", settings.clock_skew_seconds);
            println!(
                "  Unsolicited:          {}",
                if settings.allow_unsolicited {
                    "accepted"
                } else {
                    "rejected"
                }
            );
            println!(
                "  Subject in request:   {}",
                if settings.send_subject {
                    "sent"
                } else {
                    "not sent"
                }
            );
            println!(
                "  Identity from:        {}",
                settings.identity_attribute.as_deref().unwrap_or("NameID")
            );
            if !settings.extra_audiences.is_empty() {
                println!(
                    "  Extra audiences:      {}",
                    settings.extra_audiences.join(", ")
                );
            }
            if let Some(url) = &settings.metadata_url {
                println!("  Metadata URL:         {url}");
            }
            if settings.insecure_allow_sha1 {
                println!("  WARNING: RSA-SHA1 signatures are accepted.");
            }
        }
    }
    Ok(())
}
