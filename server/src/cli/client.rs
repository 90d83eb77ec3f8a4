//! `action-host deploy` and `action-host actions ...`: the API from the
//! command line, for designers and CI. The service's URL and token come
//! from the environment (or flags), never from the process list by default.

use action_host_server::{Client, VersionRef, printable};
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{key_values, read};

/// Where the service is and who is asking.
#[derive(clap::Args)]
pub(crate) struct Target {
    /// The service's URL.
    #[arg(long, env = "ACTION_HOST_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The name of the environment variable that holds the token [default:
    /// ACTION_HOST_TOKEN].
    #[arg(long, value_name = "VAR", default_value = "ACTION_HOST_TOKEN")]
    token_env: String,
}

impl Target {
    fn client(&self) -> Result<Client> {
        let token = std::env::var(&self.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Client::new(&self.url, token)
    }
}

#[derive(clap::Args)]
pub(crate) struct DeployArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The action's name [default: the file's stem].
    #[arg(long)]
    name: Option<String>,
    /// The action's settings after the upload, as JSON or TOML (grants,
    /// secrets, config, limits, as in the host configuration file); needs
    /// the operator's token.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// A config value after the upload (repeatable); a designer's token is
    /// enough.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(crate) struct ActionsArgs {
    #[command(subcommand)]
    command: ActionsCommand,
}

#[derive(clap::Subcommand)]
enum ActionsCommand {
    /// Lists the serving actions: name, version, SHA-256.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Prints one action as JSON, with its kept versions.
    Show {
        /// The action.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Serves an earlier version again.
    Rollback {
        /// The action.
        name: String,
        /// The version number, or a SHA-256 (64 hex digits).
        to: String,
        /// Serve it with the settings it was uploaded with, not the current ones.
        #[arg(long)]
        as_uploaded: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Uploads, then applies the settings and config; prints what serves.
pub(crate) async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    let bytes = read(&args.file)?;
    let name = match args.name {
        Some(name) => name,
        None => super::run::name_from(&args.file),
    };
    // Read before anything is sent: a mistake in them changes nothing.
    let settings = args.settings.as_deref().map(read_settings).transpose()?;
    let config = key_values(&args.config)?;
    let client = args.target.client()?;
    let (mut shown, created) = client
        .deploy(&name, bytes)
        .await
        .with_context(|| format!("cannot deploy {}", args.file.display()))?;
    eprintln!(
        "{} {name}: version {}, sha256 {}",
        if created { "created" } else { "deployed" },
        printable(&shown["version"].to_string()),
        printable(shown["sha256"].as_str().unwrap_or("?"))
    );
    if let Some(settings) = settings {
        shown = client
            .set_settings(&name, settings)
            .await
            .context("the component serves, but its settings were not applied")?;
    }
    if !config.is_empty() {
        shown = client
            .set_config(&name, json!(config))
            .await
            .context("the component serves, but its config was not applied")?;
    }
    print_json(&shown)?;
    Ok(ExitCode::SUCCESS)
}

/// `actions list|show|rollback`.
pub(crate) async fn actions(args: ActionsArgs) -> Result<ExitCode> {
    match args.command {
        ActionsCommand::List { target } => {
            let client = target.client()?;
            let list = client.list().await?;
            let actions = list["actions"].as_array().cloned().unwrap_or_default();
            if actions.is_empty() {
                eprintln!("no action is deployed");
            }
            for action in actions {
                println!(
                    "{}\tversion {}\t{}",
                    printable(action["name"].as_str().unwrap_or("?")),
                    printable(&action["version"].to_string()),
                    printable(action["sha256"].as_str().unwrap_or("?"))
                );
            }
        }
        ActionsCommand::Show { name, target } => {
            let client = target.client()?;
            let mut action = client.show(&name).await?;
            action["versions"] = client.versions(&name).await?["versions"].take();
            print_json(&action)?;
        }
        ActionsCommand::Rollback {
            name,
            to,
            as_uploaded,
            target,
        } => {
            let client = target.client()?;
            let mut body = match VersionRef::parse(&to).map_err(anyhow::Error::msg)? {
                VersionRef::Number(version) => json!({"version": version}),
                VersionRef::Sha256(sha256) => json!({"sha256": sha256}),
            };
            if as_uploaded {
                body["settings"] = json!("as-uploaded");
            }
            let shown = client.rollback(&name, body).await?;
            eprintln!(
                "{name} serves version {} again (sha256 {})",
                printable(&shown["version"].to_string()),
                printable(shown["sha256"].as_str().unwrap_or("?"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what the service answered as JSON, its control characters escaped.
fn print_json(answer: &Value) -> Result<()> {
    println!("{}", printable(&serde_json::to_string_pretty(answer)?));
    Ok(())
}

/// An action's settings from a JSON or TOML file.
fn read_settings(path: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let settings: action_host_server::ActionDoc = if is_json {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid settings JSON", path.display()))?
    } else {
        toml::from_str(&text)
            .with_context(|| format!("{} is not valid settings TOML", path.display()))?
    };
    Ok(serde_json::to_value(settings)?)
}
