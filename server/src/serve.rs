//! `action-host serve`: the service's options, its start (the listener first,
//! then the actions restored and deployed in the background, smallest first),
//! and the accept loop with its graceful shutdown.

use action_host::{Host, HostConfig};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::api::auth::{Auth, Tokens};
use crate::api::{self, AppState};
use crate::catalog::{Bounds, Catalog};
use crate::config_file::HostFile;
use crate::keys::OperatorKey;
use crate::progress::Progress;
use crate::store::{ActionRecord, DataDir, Postgres, Store};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen [127.0.0.1:8080].
    pub listen: SocketAddr,
    /// The data directory [./data]; not used when `postgres` is given.
    pub data: PathBuf,
    /// A PostgreSQL database to keep everything in instead, shared with
    /// other replicas (`postgres://USER@HOST/DB`) \[none\]. It needs
    /// `secret_key`.
    pub postgres: Option<String>,
    /// The operator key: secret values at rest are encrypted, and compiled
    /// artifacts sealed, under keys derived from it [the key kept in the data
    /// directory, made the first time].
    pub secret_key: Option<OperatorKey>,
    /// Operator settings by action; they win over settings stored earlier,
    /// and the API cannot change them.
    pub host_file: HostFile,
    /// Who may use which routes [a fresh random token per role].
    pub auth: Auth,
    /// The largest component an upload may carry [64 MiB].
    pub max_upload_bytes: usize,
    /// Invocations running at once, in total; more get 429 \[128\].
    pub max_concurrency: usize,
    /// Invocations running at once per action; more get 429 \[32\].
    pub max_concurrency_per_action: usize,
    /// How long calls in flight may take to finish at shutdown [10 s].
    pub shutdown_grace: Duration,
    /// Connections open at once; at the cap, the connection idle longest is
    /// closed to make room \[1024\].
    pub max_connections: usize,
    /// How long a client may take to send a request's line and headers,
    /// and to send its first request after connecting [10 s].
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request to answer [75 s]:
    /// longer than the idle timeout of the load balancer in front, so that
    /// the balancer, not the service, closes idle connections.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's body [60 s].
    pub body_timeout: Duration,
    /// How long an upload's compilation may take, waiting included, before
    /// the upload is answered 503 [300 s].
    pub compile_timeout: Duration,
    /// Uploads compiled at once \[2\].
    pub max_parallel_compiles: usize,
    /// How many uploaded versions of each action are kept \[20\].
    pub keep_versions: usize,
    /// How long invocation records are kept [1000, 7 days and 64 MiB per
    /// action].
    pub record_retention: crate::records::Retention,
    /// Components to deploy at start, as (name, file).
    pub deploy: Vec<(String, PathBuf)>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: "data".into(),
            secret_key: None,
            postgres: None,
            host_file: HostFile::default(),
            auth: Auth::Tokens(Tokens::generate()),
            max_upload_bytes: 64 << 20,
            max_concurrency: 128,
            max_concurrency_per_action: 32,
            shutdown_grace: Duration::from_secs(10),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            compile_timeout: Duration::from_secs(300),
            max_parallel_compiles: 2,
            keep_versions: 20,
            record_retention: crate::records::Retention::default(),
            deploy: Vec::new(),
        }
    }
}

/// The running service: the catalog and the router over it.
pub struct Service {
    catalog: Arc<Catalog>,
    router: crate::api::Api,
    options: ServeOptions,
    /// What is left to load at start, smallest first.
    pending: std::sync::Mutex<Vec<Pending>>,
}

/// An action to load at start.
struct Pending {
    name: String,
    size: u64,
    source: Source,
}

enum Source {
    /// Its record in the store.
    Stored(Box<anyhow::Result<ActionRecord>>),
    /// A component named by `--deploy`.
    File(Bytes),
}

impl Service {
    /// Opens the store, makes the host that serves from it (its artifacts
    /// sealed under the key derived from the operator key, whatever
    /// `config` says) and reads what there is to serve (the store's records
    /// and the components to deploy), without loading any of it yet:
    /// [`Service::load_in_background`] does that while the service already
    /// answers.
    pub async fn start(config: HostConfig, options: ServeOptions) -> anyhow::Result<Arc<Service>> {
        let (store, key): (Arc<dyn Store>, OperatorKey) =
            match (&options.postgres, &options.secret_key) {
                (Some(url), Some(key)) => (Postgres::connect(url, key).await?, key.clone()),
                (Some(_), None) => anyhow::bail!(
                    "the PostgreSQL store needs the operator key (ACTION_HOST_SECRET_KEY or \
                 --secret-key-file): every replica must be given the same one, and it is never \
                 stored in the database, which holds the secret values it encrypts"
                ),
                (None, key) => {
                    let key = match key {
                        Some(key) => key.clone(),
                        None => DataDir::kept_key(&options.data)?,
                    };
                    (Arc::new(DataDir::open(&options.data, &key)?), key)
                }
            };
        Service::start_on(store, &key, config, options).await
    }

    /// [`Service::start`] on a store opened by the caller, whose records'
    /// secret values are sealed under `key`: several services on one store
    /// are replicas that serve each other's changes.
    pub async fn start_on(
        store: Arc<dyn Store>,
        key: &OperatorKey,
        mut config: HostConfig,
        options: ServeOptions,
    ) -> anyhow::Result<Arc<Service>> {
        config.artifact_key = key.artifact_key();
        let host = Host::new(config)?;
        let catalog = Arc::new(Catalog::new(
            host,
            Arc::clone(&store),
            options.host_file.clone(),
            Bounds {
                max_concurrency: options.max_concurrency,
                max_concurrency_per_action: options.max_concurrency_per_action,
                compile_timeout: options.compile_timeout,
                max_parallel_compiles: options.max_parallel_compiles,
                keep_versions: options.keep_versions,
                record_retention: options.record_retention,
            },
        ));
        // Changes another writer stores from now on are served here too.
        tokio::spawn(Catalog::follow(Arc::downgrade(&catalog)));
        let mut pending = Vec::new();
        for (name, record) in store.records().await? {
            let size = match &record {
                Ok(record) => store.version_len(&record.sha256).await.unwrap_or(u64::MAX),
                Err(_) => 0,
            };
            pending.push(Pending {
                name,
                size,
                source: Source::Stored(Box::new(record)),
            });
        }
        for (name, file) in &options.deploy {
            // A file that cannot be read is the operator's mistake: said at once.
            let bytes = std::fs::read(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            pending.retain(|p| p.name != *name);
            pending.push(Pending {
                name: name.clone(),
                size: bytes.len() as u64,
                source: Source::File(Bytes::from(bytes)),
            });
        }
        // Smallest first: the quick ones serve while the large ones compile.
        pending.sort_by_key(|p| p.size);
        catalog.loading(pending.iter().map(|p| p.name.clone()).collect());
        let state = Arc::new(AppState {
            catalog: Arc::clone(&catalog),
            auth: options.auth.clone(),
            max_upload_bytes: options.max_upload_bytes,
            upload_room: Arc::new(api::upload_room(
                options.max_upload_bytes,
                options.max_parallel_compiles,
            )),
            body_timeout: options.body_timeout,
            webhooks: options.host_file.webhooks.clone(),
        });
        Ok(Arc::new(Service {
            router: api::router(state),
            catalog,
            options,
            pending: std::sync::Mutex::new(pending),
        }))
    }

    /// Restores and deploys the actions found at start, smallest first and
    /// as many at once as compilations may run, reporting each to
    /// `progress`. Calls to an action still loading are answered 503 with
    /// `Retry-After`. Returns when all are done.
    pub async fn load_in_background(self: &Arc<Self>, progress: Progress) {
        let pending: Vec<Pending> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            pending,
        )));
        let progress = Arc::new(progress);
        let workers = (0..self.options.max_parallel_compiles.max(1)).map(|_| {
            let (service, queue, progress) =
                (Arc::clone(self), Arc::clone(&queue), Arc::clone(&progress));
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(pending) = next else { break };
                    service.load_one(pending, &progress).await;
                }
            })
        });
        for worker in workers.collect::<Vec<_>>() {
            let _ = worker.await;
        }
        progress.finish();
    }

    /// Loads one action, its log lines in a span of its own. (A span entered
    /// with a guard across an `.await` would stay entered on the thread while
    /// other tasks run there, and their lines would nest in it.)
    async fn load_one(&self, pending: Pending, progress: &Progress) {
        let span = tracing::info_span!(parent: None, "load", action = %pending.name);
        self.load_in_span(pending, progress).instrument(span).await;
    }

    async fn load_in_span(&self, pending: Pending, progress: &Progress) {
        let name = pending.name;
        progress.started(&name, pending.size);
        let started = Instant::now();
        let compilations = self.catalog.host().compilations();
        let loaded = match pending.source {
            Source::Stored(stored) => match *stored {
                Ok(_) => self.catalog.restore(&name).await,
                Err(error) => Err(crate::api::error::ApiError::internal(error)),
            },
            Source::File(bytes) => self
                .catalog
                .deploy(&name, bytes, "host", None)
                .await
                .map(|_| ()),
        };
        let compiled = self.catalog.host().compilations() > compilations;
        match loaded {
            // The line first: once `/healthz` says all are loaded, each
            // one's line has been written.
            Ok(()) => {
                let starts_from = self.catalog.view(&name).map(|v| v.starts_from).ok();
                progress.ready(&name, started.elapsed(), compiled, starts_from);
                self.catalog.loaded(&name, None);
            }
            Err(error) => {
                let why = error.message();
                progress.failed(&name, &why);
                self.catalog.loaded(&name, Some(why));
            }
        }
    }

    /// The catalog of serving actions.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The host behind the service.
    pub fn host(&self) -> &Host {
        self.catalog.host()
    }

    /// The names of the actions to load at start, smallest first.
    pub fn pending(&self) -> Vec<String> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.iter().map(|p| p.name.clone()).collect()
    }

    /// The HTTP API, for serving or for calling in-process
    /// (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> crate::api::Api {
        self.router.clone()
    }
}

/// Serves until SIGTERM or SIGINT, then stops accepting and lets calls in
/// flight finish within the grace period.
pub async fn serve(service: Arc<Service>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let drain = crate::listener::Drain::new();
    let limits = crate::listener::Limits {
        max_connections: service.options.max_connections.max(1),
        header_timeout: service.options.header_timeout,
        idle_timeout: service.options.idle_timeout,
    };
    let router = service.router();
    let handler = move |request: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            match router.oneshot(request.map(axum::body::Body::new)).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            }
        }
    };
    crate::listener::accept_loop(&listener, limits, &drain, handler, shutdown_signal()).await;
    drop(listener);
    tracing::info!(
        "shutting down: waiting up to {:?} for calls in flight",
        service.options.shutdown_grace
    );
    tokio::select! {
        () = drain.close_all() => {}
        () = tokio::time::sleep(service.options.shutdown_grace) => {
            tracing::warn!("calls still running after the grace period were cut off");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
