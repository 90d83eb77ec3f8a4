//! `action-host run`: one call of one component, printed as JSON.

use action_host::{CallContext, Grant, Host, HostConfig, Limits, LogLine, Secret};
use action_host_server::webhooks::{self, Call, Platform};
use action_host_server::{ApiError, HostFile};
use anyhow::{Context as _, Result};
use axum::http::StatusCode;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{json_object, key_values, parse_json, read, read_roots};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The input attributes, as a JSON object.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The conversation's context, as a JSON object (user_id, timezone, ...).
    #[arg(long, default_value = "{}")]
    context: String,
    /// A Rasa action server request (JSON, as Rasa sends it): the input and
    /// context are read from it, and what Rasa would receive is printed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "context", "dialogflow_cx"])]
    rasa: Option<PathBuf>,
    /// A Dialogflow CX `WebhookRequest` (JSON): the input and context are read
    /// from it, and what CX would receive is printed.
    #[arg(long = "dialogflow-cx", value_name = "FILE", conflicts_with_all = ["input", "context"])]
    dialogflow_cx: Option<PathBuf>,
    /// An operator setting the action reads through `config` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// The deadline in milliseconds.
    #[arg(long, value_name = "N")]
    timeout_ms: Option<u64>,
    /// The linear memory limit in MiB.
    #[arg(long, value_name = "N")]
    memory_mib: Option<usize>,
    /// The name to load the action under; defaults to the file's stem.
    #[arg(long)]
    name: Option<String>,
    /// A destination the action may call, such as `GET https://api.example.com/orders`
    /// (repeatable). Without one, every request is denied.
    #[arg(long = "allow", value_name = "GRANT")]
    allow: Vec<String>,
    /// A secret for `{{secret:NAME}}` in request headers, bound to one destination
    /// (repeatable). The value is visible to other users of this machine in the
    /// process list: prefer --secret-env or --secret-file.
    #[arg(long = "secret", value_name = "NAME=VALUE@GRANT")]
    secrets: Vec<String>,
    /// Like --secret, with the value read from the environment variable VAR.
    #[arg(long = "secret-env", value_name = "NAME=VAR@GRANT")]
    secrets_env: Vec<String>,
    /// Like --secret, with the value read from FILE (without a final newline).
    #[arg(long = "secret-file", value_name = "NAME=FILE@GRANT")]
    secrets_file: Vec<String>,
    /// A header the secret NAME may fill (repeatable); without one, a secret
    /// fills only `Authorization`.
    #[arg(long = "secret-header", value_name = "NAME=HEADER")]
    secret_headers: Vec<String>,
    /// A host configuration file (TOML); the action's entry gives its grants,
    /// secrets, config and limits, and the flags above add to it.
    #[arg(long, value_name = "FILE")]
    host_config: Option<PathBuf>,
    /// Root certificates (PEM) to trust for outbound HTTPS besides the public ones.
    #[arg(long, value_name = "FILE")]
    tls_roots: Option<PathBuf>,
}

pub(crate) async fn run(args: RunArgs) -> Result<ExitCode> {
    let name = args.name.clone().unwrap_or_else(|| name_from(&args.file));
    let mut file = match &args.host_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            HostFile::parse(&text).map_err(|why| {
                anyhow::anyhow!("invalid host configuration {}: {why}", path.display())
            })?
        }
        None => HostFile::default(),
    };
    let mut settings = file.actions.remove(&name).unwrap_or_default();
    let platform = match (&args.rasa, &args.dialogflow_cx) {
        (Some(request), _) => Some((Platform::Rasa, parse_json_file(request)?)),
        (_, Some(request)) => Some((Platform::DialogflowCx, parse_json_file(request)?)),
        _ => None,
    };
    let adapter = platform
        .as_ref()
        .map(|(platform, request)| (webhooks::adapter(*platform, &file.webhooks), request));
    let call = match &adapter {
        Some((adapter, request)) => match adapter.decode(Some(&name), request) {
            Ok(call) => {
                if call.action != name {
                    eprintln!(
                        "note: the request names the action `{}`; running {} as it",
                        call.action,
                        args.file.display()
                    );
                }
                call
            }
            Err(error) => {
                return print_platform_answer(adapter.encode_error(Some(*request), &error));
            }
        },
        None => Call {
            action: name.clone(),
            context: CallContext::from_json(&parse_json("--context", &args.context)?)
                .map_err(anyhow::Error::msg)?,
            input: json_object("--input", &args.input)?,
        },
    };
    settings.config.extend(key_values(&args.config)?);
    for grant in &args.allow {
        settings.grants.push(Grant::parse(grant)?);
    }
    for secret in &args.secrets {
        settings
            .secrets
            .push(parse_secret("--secret", secret, |value| {
                Ok(value.to_owned())
            })?);
    }
    for secret in &args.secrets_env {
        settings
            .secrets
            .push(parse_secret("--secret-env", secret, |var| {
                std::env::var(var)
                    .with_context(|| format!("the environment variable `{var}` is not set"))
            })?);
    }
    for secret in &args.secrets_file {
        settings
            .secrets
            .push(parse_secret("--secret-file", secret, |file| {
                let text =
                    std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
                Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
            })?);
    }
    let mut bound: Vec<&str> = Vec::new();
    for pair in &args.secret_headers {
        let (name, header) = pair
            .split_once('=')
            .filter(|(n, h)| !n.is_empty() && !h.is_empty())
            .with_context(|| format!("--secret-header expects NAME=HEADER, got `{pair}`"))?;
        let secret = settings
            .secrets
            .iter_mut()
            .find(|s| s.name == name)
            .with_context(|| format!("--secret-header {pair}: no secret is named `{name}`"))?;
        if !bound.contains(&name) {
            // The first header named replaces the default.
            secret.headers.clear();
            bound.push(name);
        }
        secret.headers.push(header.to_owned());
    }
    let defaults = settings.limits.unwrap_or_default();
    // The platform waits no longer than its timeout, nor does the action.
    let cap = adapter
        .as_ref()
        .and_then(|(adapter, _)| adapter.deadline_cap())
        .unwrap_or(Duration::MAX);
    let limits = Limits {
        deadline: args
            .timeout_ms
            .map_or(defaults.deadline, Duration::from_millis)
            .min(cap),
        memory_bytes: args
            .memory_mib
            .map_or(defaults.memory_bytes, |mib| mib << 20),
        ..defaults
    };
    let bytes = read(&args.file)?;

    let host = Host::new(HostConfig {
        default_limits: limits,
        max_memory_bytes: limits
            .memory_bytes
            .max(HostConfig::default().max_memory_bytes),
        // One call at a time: a small pool starts faster.
        pool_size: 4,
        tls_roots_pem: read_roots(args.tls_roots.as_deref())?,
        // For one call, snapshotting after `describe` would cost a second
        // compilation and save nothing.
        snapshot_after_describe: false,
        ..HostConfig::default()
    })?;
    settings.limits = Some(limits);
    host.load_with(&name, &bytes, settings).await?;
    let result = host.invoke(&name, call.context.clone(), &call.input).await;
    if let Some((adapter, request)) = &adapter {
        let answer = match result {
            Ok(done) => {
                print_logs(&done.logs);
                adapter.encode(&call, done)
            }
            Err(error) => {
                print_logs(&error.logs);
                adapter.encode_error(Some(*request), &ApiError::from(error))
            }
        };
        return print_platform_answer(answer);
    }
    match result {
        Ok(invocation) => {
            println!("{}", serde_json::to_string_pretty(&invocation)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            print_logs(&error.logs);
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_logs(logs: &[LogLine]) {
    for line in logs {
        eprintln!("[{:?} {:?}] {}", line.source, line.level, line.message);
    }
}

/// Prints the body the platform would receive, and its status when it is
/// not a success; the exit code says which.
fn print_platform_answer((status, body): (StatusCode, Json)) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the platform would receive HTTP {status}");
        Ok(ExitCode::FAILURE)
    }
}

fn parse_json_file(file: &Path) -> Result<Json> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

/// Reads `NAME=WHAT@GRANT` (for `flag`), with the secret's value found from
/// `WHAT` by `value`: the value itself, an environment variable or a file.
/// `WHAT` may contain `=` and `@`; a grant contains neither.
fn parse_secret(
    flag: &str,
    text: &str,
    value: impl FnOnce(&str) -> Result<String>,
) -> Result<Secret> {
    let usage = || {
        anyhow::anyhow!(
            "{flag} expects NAME=VALUE@GRANT, for example crm_token=abc@https://crm.example"
        )
    };
    let (name, rest) = text.split_once('=').ok_or_else(usage)?;
    let (what, grant) = rest.rsplit_once('@').ok_or_else(usage)?;
    if name.is_empty() || what.is_empty() {
        return Err(usage());
    }
    let value = value(what).with_context(|| format!("{flag} {name}"))?;
    Ok(Secret::new(name, value, vec![Grant::parse(grant)?]))
}

/// A valid action name made from a file name: `Greeting v2.wasm` -> `greeting-v2`.
pub(crate) fn name_from(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "action".into()
    } else {
        name
    }
}
