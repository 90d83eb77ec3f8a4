//! `action-host serve`: the options, the tokens, and the start: listening
//! at once, the actions loading in the background.

use action_host::HostConfig;
use action_host_server::records::Retention;
use action_host_server::{
    Auth, HostFile, OperatorKey, Progress, Role, ServeOptions, Service, Tokens,
};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::read_roots;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// A host configuration file (TOML): grants, secrets, config and limits per action.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The data directory: uploaded versions, compiled artifacts, settings
    /// [default: data].
    #[arg(long, conflicts_with = "store")]
    data: Option<PathBuf>,
    /// A PostgreSQL database to keep everything in, shared by replicas,
    /// instead of a data directory: postgres://USER@HOST/DB (a password, if
    /// any, is better given as PGPASSWORD than in the URL).
    #[arg(
        long,
        env = "ACTION_HOST_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    store: Option<String>,
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
    /// Serves without tokens, to requests that name the service by an
    /// address or localhost and, from browsers, to its own page only. For
    /// local demos only.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Connections open at once; at the cap, the one idle longest is closed.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// How long a client may take to send a request's head, and its first
    /// request after connecting, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// How long a connection may stay open with no request to answer, in
    /// seconds; keep it above the idle timeout of a load balancer in front.
    #[arg(long, value_name = "S", default_value_t = 75)]
    idle_timeout_s: u64,
    /// How long a client may take to send a request's body, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    body_timeout_ms: u64,
    /// Root certificates (PEM) to trust for outbound HTTPS besides the public ones.
    #[arg(long, value_name = "FILE")]
    tls_roots: Option<PathBuf>,
    /// The operator key, as 64 hex digits: stored secret values are encrypted
    /// and compiled artifacts sealed under keys derived from it. Also
    /// `ACTION_HOST_SECRET_KEY` (the digits themselves); without either, the
    /// key kept in the data directory (made the first time).
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
    /// How long compiling one upload may take before the upload is answered
    /// 503 (the compilation goes on and its artifact is kept), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    compile_timeout_s: u64,
    /// Uploads compiled at once; more wait (within the compile timeout).
    #[arg(long, default_value_t = 2)]
    max_parallel_compiles: usize,
    /// How many uploaded versions of each action are kept for rollback.
    #[arg(long, value_name = "N", default_value_t = 20)]
    keep_versions: usize,
    /// How many invocation records of each action are kept, the newest
    /// (0 keeps none).
    #[arg(long, value_name = "N", default_value_t = Retention::default().per_action)]
    keep_records: usize,
    /// How long invocation records are kept, in hours.
    #[arg(long, value_name = "H", default_value_t = Retention::default().max_age.as_secs() / 3600)]
    keep_records_hours: u64,
    /// How many MiB of invocation records of each action are kept, the
    /// newest (the newest record is kept whatever its size).
    #[arg(long, value_name = "MIB", default_value_t = Retention::default().bytes_per_action >> 20)]
    keep_records_mib: u64,
    /// How log lines are written: `text` for people, `json` (one object per
    /// line) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How the service writes its log.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people, with a progress bar at start on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sends the service's log lines to stderr, filtered by `RUST_LOG` (default
/// `info`), as text or JSON. A `RUST_LOG` that is not a filter is reported and
/// the default used, so a typo does not keep the service from starting.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("RUST_LOG").ok();
    let (filter, refused) = action_host_server::logging::filter(spec.as_deref());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = fmt::layer()
        .with_writer(action_host_server::LogWriter)
        .with_ansi(colour);
    let lines = match format {
        LogFormat::Text if colour => lines.with_target(false).boxed(),
        // The same text, without an allocation per field of every request's
        // span (logging.rs).
        LogFormat::Text => lines
            .with_target(false)
            .fmt_fields(action_host_server::logging::PlainFields)
            .boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .init();
    if let Some(why) = refused {
        tracing::warn!(
            "{why}; logging at {}",
            action_host_server::logging::DEFAULT_FILTER
        );
    }
}

pub(crate) async fn serve(args: ServeArgs) -> Result<ExitCode> {
    init_logging(args.log_format);
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
        tracing::warn!(
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
    if let Some(url) = &args.store
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bail!("--store takes a postgres:// URL; a data directory is given with --data");
    }
    let options = ServeOptions {
        listen: args.listen,
        data: args.data.unwrap_or_else(|| "data".into()),
        postgres: args.store,
        host_file,
        auth,
        max_upload_bytes: args.max_upload_mib << 20,
        max_concurrency: args.max_concurrency,
        max_concurrency_per_action: args.max_concurrency_per_action,
        max_connections: connection_cap(args.max_connections),
        compile_timeout: Duration::from_secs(args.compile_timeout_s.max(1)),
        max_parallel_compiles: args.max_parallel_compiles.max(1),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_s.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
        keep_versions: args.keep_versions.max(1),
        record_retention: Retention {
            per_action: args.keep_records,
            max_age: Duration::from_secs(args.keep_records_hours.saturating_mul(3600)),
            bytes_per_action: args.keep_records_mib.saturating_mul(1 << 20),
        },
        secret_key: secret_key(args.secret_key_file.as_deref())?,
        deploy,
        ..ServeOptions::default()
    };
    let config = HostConfig {
        // Room for every permitted call plus loads running beside them.
        pool_size: u32::try_from(args.max_concurrency + 32).unwrap_or(u32::MAX),
        tls_roots_pem: read_roots(args.tls_roots.as_deref())?,
        ..HostConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let service = Service::start(config, options).await?;
    tracing::info!("listening on http://{address}");
    tracing::info!(
        "the designer's page: http://{address}/ (sign in with the designer or operator token)"
    );
    if !service.host().resets_by_page_scan() {
        tracing::warn!(
            "instances are reset without the kernel's page scan (swap is on, or Linux is older \
             than 6.7), so calls are slower; see docs/host-config.md"
        );
    }
    // Listening already: the actions load while the service answers, and a
    // call to one still loading gets 503 with Retry-After.
    let loading = {
        let service = std::sync::Arc::clone(&service);
        let progress = Progress::new(service.pending().len(), args.log_format == LogFormat::Text);
        tokio::spawn(async move {
            service.load_in_background(progress).await;
            let actions = service.catalog().list().actions;
            let names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
            tracing::info!("serving {} action(s): {}", names.len(), names.join(", "));
            if let Some(first) = names.first() {
                let auth = invoke_token.as_ref().map_or(String::new(), |t| {
                    format!("-H 'Authorization: Bearer {t}' ")
                });
                tracing::info!(
                    "try: curl -s {auth}-d '{{\"input\": {{\"first_name\": \"Ada\"}}, \"context\": {{\"timezone\": \"Europe/London\"}}}}' http://{address}/v1/actions/{first}/invoke"
                );
                tracing::info!(
                    "try: curl -s {auth}-d '{{\"input_data\": {{\"attributes\": {{\"first_name\": \"Ada\"}}}}}}' http://{address}/webhooks/opendialog/{first}"
                );
            }
        })
    };
    action_host_server::serve(service, listener).await?;
    loading.abort();
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
        tracing::warn!(
            "--max-connections {wanted} is above what the open-file limit of {} leaves; \
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
            tracing::warn!("{ADMIN_TOKEN} is ignored: {OPERATOR_TOKEN} is set");
            Some(operator)
        }
        (None, Some(admin)) => {
            tracing::warn!(
                "{ADMIN_TOKEN} is deprecated: it is read as {OPERATOR_TOKEN}; set that instead"
            );
            Some(admin)
        }
        (operator, None) => operator,
    };
    let or_generate = |variable: &str, token: Option<String>| {
        token.unwrap_or_else(|| {
            let token = Tokens::generate().of(Role::Operator).to_owned();
            tracing::warn!("{variable} was not set; generated: {token}");
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

const SECRET_KEY: &str = "ACTION_HOST_SECRET_KEY";

/// The operator key from `--secret-key-file` or `ACTION_HOST_SECRET_KEY`,
/// if either is given (not both: which one wins would be a guess).
fn secret_key(file: Option<&Path>) -> Result<Option<OperatorKey>> {
    let from_env = std::env::var(SECRET_KEY)
        .ok()
        .filter(|k| !k.trim().is_empty());
    match (file, from_env) {
        (Some(_), Some(_)) => {
            bail!("give the key with --secret-key-file or {SECRET_KEY}, not both")
        }
        (Some(file), None) => Ok(Some(OperatorKey::read_file(file)?)),
        (None, Some(hex)) => match OperatorKey::from_hex(&hex) {
            Ok(key) => Ok(Some(key)),
            Err(why) => bail!("{SECRET_KEY}: {why}"),
        },
        (None, None) => Ok(None),
    }
}
