//! The `action-host` command: CLI wiring only.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use action_host::{
    ActionSettings, ArtifactKey, Auth, CallContext, DataDir, Grant, Host, HostConfig, HostFile,
    Limits, Role, Secret, ServeOptions, Service, Tokens,
};
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    Run(RunArgs),
    /// Serves the HTTP API: upload, configure and invoke actions.
    Serve(ServeArgs),
    /// Prints an action's manifest, imports and exports as JSON.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A host configuration file (TOML): grants, secrets, config and limits per action.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The data directory: uploaded versions, compiled artifacts, settings.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Deploys a component at start (repeatable).
    #[arg(long = "deploy", value_name = "NAME=FILE")]
    deploy: Vec<String>,
    /// The largest upload, in MiB.
    #[arg(long, default_value_t = 64)]
    max_upload_mib: usize,
    /// Invocations running at once, in total; more get 429.
    #[arg(long, default_value_t = 128)]
    max_concurrency: usize,
    /// Invocations running at once per action; more get 429.
    #[arg(long, default_value_t = 32)]
    max_concurrency_per_action: usize,
    /// Serves without tokens. For local demos only.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Connections open at once; at the cap, the one idle longest is closed.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// How long a client may take to send a request's head, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// How long a client may take to send a request's body, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    body_timeout_ms: u64,
    /// Root certificates (PEM) to trust for outbound HTTPS besides the public ones.
    #[arg(long, value_name = "FILE")]
    tls_roots: Option<PathBuf>,
    /// The key that seals compiled artifacts, as 64 hex digits; without it, the
    /// key in the data directory (made the first time).
    #[arg(long, value_name = "FILE")]
    artifact_key_file: Option<PathBuf>,
    /// How long compiling one upload may take before the upload is answered
    /// 503 (the compilation goes on and its artifact is kept), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    compile_timeout_s: u64,
    /// Uploads compiled at once; more wait (within the compile timeout).
    #[arg(long, default_value_t = 2)]
    max_parallel_compiles: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The input attributes, as a JSON object.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The conversation's context, as a JSON object (user_id, timezone, ...).
    #[arg(long, default_value = "{}")]
    context: String,
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
    /// A destination the action may call, such as 'GET https://api.example.com/orders'
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Inspect { file } => inspect(&file).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let input = json_object("--input", &args.input)?;
    let context = CallContext::from_json(&parse_json("--context", &args.context)?)
        .map_err(anyhow::Error::msg)?;
    let name = args.name.clone().unwrap_or_else(|| name_from(&args.file));
    let mut settings = match &args.host_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut file = HostFile::parse(&text).map_err(|why| {
                anyhow::anyhow!("invalid host configuration {}: {why}", path.display())
            })?;
            file.actions.remove(&name).unwrap_or_default()
        }
        None => ActionSettings::default(),
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
    let limits = Limits {
        deadline: args
            .timeout_ms
            .map_or(defaults.deadline, Duration::from_millis),
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
    match host.invoke(&name, context, &input).await {
        Ok(invocation) => {
            println!("{}", serde_json::to_string_pretty(&invocation)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            for line in &error.logs {
                eprintln!("[{:?} {:?}] {}", line.source, line.level, line.message);
            }
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let host_file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            HostFile::parse(&text).map_err(|why| {
                anyhow::anyhow!("invalid host configuration {}: {why}", path.display())
            })?
        }
        None => HostFile::default(),
    };
    let deploy = args
        .deploy
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, file)) if !name.is_empty() && !file.is_empty() => {
                Ok((name.to_owned(), PathBuf::from(file)))
            }
            _ => bail!("--deploy expects NAME=FILE, got `{pair}`"),
        })
        .collect::<Result<Vec<_>>>()?;
    let (auth, invoke_token) = if args.insecure_no_auth {
        eprintln!(
            "WARNING: --insecure-no-auth: anyone who can reach {} can upload and run code",
            args.listen
        );
        (Auth::Off, None)
    } else {
        let tokens = tokens_from_env()?;
        // A token that came from the environment is not printed: the
        // operator has it, and logs should not.
        let invoke = if std::env::var_os(INVOKE_TOKEN).is_some() {
            format!("${INVOKE_TOKEN}")
        } else {
            tokens.of(Role::Invoke).to_owned()
        };
        (Auth::Tokens(tokens), Some(invoke))
    };
    let options = ServeOptions {
        listen: args.listen,
        data: args.data,
        host_file,
        auth,
        max_upload_bytes: args.max_upload_mib << 20,
        max_concurrency: args.max_concurrency,
        max_concurrency_per_action: args.max_concurrency_per_action,
        max_connections: connection_cap(args.max_connections),
        compile_timeout: Duration::from_secs(args.compile_timeout_s.max(1)),
        max_parallel_compiles: args.max_parallel_compiles.max(1),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
        deploy,
        ..ServeOptions::default()
    };
    let artifact_key = match &args.artifact_key_file {
        Some(file) => read_artifact_key(file)?,
        None => DataDir::open(&options.data)?.artifact_key()?,
    };
    let host = Host::new(HostConfig {
        // Room for every permitted call plus loads running beside them.
        pool_size: u32::try_from(args.max_concurrency + 32).unwrap_or(u32::MAX),
        tls_roots_pem: read_roots(args.tls_roots.as_deref())?,
        artifact_key,
        ..HostConfig::default()
    })?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let service = Service::start(host, options).await?;
    eprintln!("listening on http://{address}");
    if !service.host().resets_by_page_scan() {
        eprintln!(
            "note: instances are reset without the kernel's page scan (swap is on, or Linux is \
             older than 6.7), so calls are slower; see docs/host-config.md"
        );
    }
    let actions = service.host().actions();
    eprintln!(
        "serving {} action(s): {}",
        actions.len(),
        actions.join(", ")
    );
    if let Some(first) = actions.first() {
        let auth = invoke_token.as_ref().map_or(String::new(), |t| {
            format!("-H 'Authorization: Bearer {t}' ")
        });
        eprintln!("try:");
        eprintln!(
            "  curl -s {auth}-d '{{\"input\": {{\"first_name\": \"Ada\"}}, \"context\": {{\"timezone\": \"Europe/London\"}}}}' http://{address}/v1/actions/{first}/invoke"
        );
        eprintln!(
            "  curl -s {auth}-d '{{\"input_data\": {{\"attributes\": {{\"first_name\": \"Ada\"}}}}}}' http://{address}/webhooks/opendialog/{first}"
        );
    }
    action_host::serve(service, listener).await?;
    Ok(ExitCode::SUCCESS)
}

/// `wanted` connections, or fewer if the process may not open that many
/// descriptors: it raises its soft limit to the hard one first, and keeps
/// room for files, the engine and its threads.
fn connection_cap(wanted: usize) -> usize {
    const RESERVE: u64 = 128;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let room = usize::try_from(limit.rlim_cur.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
    if wanted > room {
        eprintln!(
            "note: --max-connections {wanted} is above what the open-file limit of {} leaves; \
             serving at most {room} connections",
            limit.rlim_cur
        );
        return room.max(1);
    }
    wanted
}

const OPERATOR_TOKEN: &str = "ACTION_HOST_OPERATOR_TOKEN";
const DESIGNER_TOKEN: &str = "ACTION_HOST_DESIGNER_TOKEN";
const INVOKE_TOKEN: &str = "ACTION_HOST_INVOKE_TOKEN";
const METRICS_TOKEN: &str = "ACTION_HOST_METRICS_TOKEN";
/// The operator token's earlier name.
const ADMIN_TOKEN: &str = "ACTION_HOST_ADMIN_TOKEN";

/// Each role's token from the environment; a role without one gets a new
/// random token, printed once.
fn tokens_from_env() -> Result<Tokens> {
    let set = |variable: &str| {
        std::env::var(variable)
            .ok()
            .filter(|t| !t.trim().is_empty())
    };
    let operator = match (set(OPERATOR_TOKEN), set(ADMIN_TOKEN)) {
        (Some(operator), Some(_)) => {
            eprintln!("warning: {ADMIN_TOKEN} is ignored: {OPERATOR_TOKEN} is set");
            Some(operator)
        }
        (None, Some(admin)) => {
            eprintln!(
                "warning: {ADMIN_TOKEN} is deprecated: it is read as {OPERATOR_TOKEN}; set that \
                 instead"
            );
            Some(admin)
        }
        (operator, None) => operator,
    };
    let or_generate = |variable: &str, token: Option<String>| {
        token.unwrap_or_else(|| {
            let token = Tokens::generate().of(Role::Operator).to_owned();
            eprintln!("{variable} was not set; generated: {token}");
            token
        })
    };
    let tokens = Tokens::new(
        or_generate(OPERATOR_TOKEN, operator),
        or_generate(DESIGNER_TOKEN, set(DESIGNER_TOKEN)),
        or_generate(INVOKE_TOKEN, set(INVOKE_TOKEN)),
        or_generate(METRICS_TOKEN, set(METRICS_TOKEN)),
    )
    .map_err(|why| anyhow::anyhow!("{why} (the ACTION_HOST_*_TOKEN variables)"))?;
    Ok(tokens)
}

async fn inspect(file: &Path) -> Result<ExitCode> {
    let bytes = read(file)?;
    let host = Host::new(HostConfig {
        pool_size: 4,
        ..HostConfig::default()
    })?;
    let inspection = host.inspect(&bytes).await?;
    println!("{}", serde_json::to_string_pretty(&inspection)?);
    Ok(ExitCode::SUCCESS)
}

/// A key of 32 bytes written as 64 hex digits (surrounding space ignored).
fn read_artifact_key(file: &Path) -> Result<ArtifactKey> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = text.trim();
    let hex = |at: usize| u8::from_str_radix(text.get(at..at + 2)?, 16).ok();
    let bytes: Option<Vec<u8>> = (0..32).map(|i| hex(2 * i)).collect();
    match bytes {
        Some(bytes) if text.len() == 64 => {
            Ok(ArtifactKey::from_bytes(bytes.try_into().expect("32 bytes")))
        }
        _ => bail!(
            "{} must hold 64 hex digits (32 bytes), such as the output of `openssl rand -hex 32`",
            file.display()
        ),
    }
}

fn read_roots(file: Option<&Path>) -> Result<Option<String>> {
    file.map(|file| {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    })
    .transpose()
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn parse_json(flag: &str, text: &str) -> Result<Json> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

fn json_object(flag: &str, text: &str) -> Result<Map<String, Json>> {
    match parse_json(flag, text)? {
        Json::Object(object) => Ok(object),
        _ => bail!(
            "{flag} must be a JSON object of attributes, for example '{{\"first_name\": \"Ada\"}}'"
        ),
    }
}

fn key_values(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!("--config expects KEY=VALUE, got `{pair}`"),
        })
        .collect()
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
fn name_from(file: &Path) -> String {
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
