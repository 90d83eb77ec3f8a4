//! `action-host replay`: a recorded call run again offline, on the version
//! that ran it or on another component, printed beside the record with
//! their differences.

use action_host::{ActionSettings, Grant, Host, HostConfig, sha256_hex};
use action_host_server::records::{self, InvocationRecord};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::process::ExitCode;

use super::read;

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The invocation record (JSON, as `GET /v1/invocations/{id}` gives it).
    record: PathBuf,
    /// The component to run; by default the version that ran the call, from
    /// the data directory.
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// The data directory to find the recorded version in.
    #[arg(long, default_value = "data", conflicts_with = "wasm")]
    data: PathBuf,
}

/// Prints the replay as JSON; exits 0 when it did what the record did, 1
/// when it differs (each difference named on stderr).
pub(crate) async fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let text = read(&args.record)?;
    let recorded: InvocationRecord = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not an invocation record (the JSON of GET /v1/invocations/{{id}})",
            args.record.display()
        )
    })?;
    let (file, version) = match &args.wasm {
        Some(file) => (file.clone(), 0),
        None => {
            // The record names a file in the data directory: only by a hash.
            action_host_server::VersionRef::sha256(&recorded.sha256).map_err(|why| {
                anyhow::anyhow!(
                    "{} is not an invocation record: {why}",
                    args.record.display()
                )
            })?;
            (
                args.data
                    .join("versions")
                    .join(format!("{}.wasm", recorded.sha256)),
                recorded.version,
            )
        }
    };
    let bytes = std::fs::read(&file).with_context(|| match &args.wasm {
        Some(_) => format!("cannot read {}", file.display()),
        None => format!(
            "version {} of `{}` is not in {} (pass the component with --wasm)",
            recorded.version,
            recorded.action,
            args.data.display()
        ),
    })?;
    let host = Host::new(HostConfig {
        pool_size: 4,
        snapshot_after_describe: false,
        ..HostConfig::default()
    })?;
    // Nothing reaches the network in a replay: every request is answered
    // from the record, so the record's own destinations are granted.
    let settings = ActionSettings {
        grants: recorded
            .exchanges
            .iter()
            .filter_map(|e| {
                let mut url = url::Url::parse(&e.url).ok()?;
                url.set_query(None);
                url.set_fragment(None);
                Grant::parse(&format!("{} {url}", e.method)).ok()
            })
            .collect(),
        ..ActionSettings::default()
    };
    let action = host
        .prepare(&recorded.action, &bytes, settings, None)
        .await
        .with_context(|| format!("{} cannot be loaded", file.display()))?;
    let sha256 = sha256_hex(&bytes);
    let replay = records::replay(&action, recorded, version, &sha256).await;
    println!("{}", serde_json::to_string_pretty(&replay)?);
    if replay.differences.is_empty() {
        eprintln!("the replay did what the record did");
        return Ok(ExitCode::SUCCESS);
    }
    for difference in &replay.differences {
        eprintln!(
            "differs: {}: recorded {}, replayed {}",
            difference.field, difference.recorded, difference.replayed
        );
    }
    Ok(ExitCode::FAILURE)
}
