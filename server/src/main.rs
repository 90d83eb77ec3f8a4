//! The `action-host` command: CLI wiring only.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use action_host::{Host, HostConfig};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs WebAssembly actions for conversation platforms, in a sandbox.
#[derive(Parser)]
#[command(name = "action-host", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs an action once and prints the result as JSON.
    Run(cli::run::RunArgs),
    /// Serves the HTTP API: upload, configure and invoke actions.
    Serve(cli::serve::ServeArgs),
    /// Prints an action's manifest, imports and exports as JSON.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Uploads a component to a running service (and optionally its
    /// settings), then prints the action as the service shows it.
    Deploy(cli::client::DeployArgs),
    /// Lists, shows or rolls back the actions of a running service.
    Actions(cli::client::ActionsArgs),
    /// Runs a recorded call again, answering its outbound requests from the
    /// record, and prints both with their differences.
    Replay(cli::replay::ReplayArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => cli::run::run(args).await,
        Command::Serve(args) => cli::serve::serve(args).await,
        Command::Inspect { file } => inspect(&file).await,
        Command::Deploy(args) => cli::client::deploy(args).await,
        Command::Actions(args) => cli::client::actions(args).await,
        Command::Replay(args) => cli::replay::replay(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn inspect(file: &Path) -> Result<ExitCode> {
    let bytes = cli::read(file)?;
    let host = Host::new(HostConfig {
        pool_size: 4,
        ..HostConfig::default()
    })?;
    let inspection = host.inspect(&bytes).await?;
    println!("{}", serde_json::to_string_pretty(&inspection)?);
    Ok(ExitCode::SUCCESS)
}
