//! `action-host serve`: the HTTP API for designers (upload, grants, try) and
//! for the dialog platform (invoke, the OpenDialog webhook), over one [`Host`]
//! and one [`DataDir`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config_file::{ActionDoc, HostFile};
use crate::context::CallContext;
use crate::error::{ErrorKind, InvokeError, LoadError};
use crate::host::{ArtifactCache, Host, sha256_hex};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::store::{ActionRecord, DataDir};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen [127.0.0.1:8080].
    pub listen: SocketAddr,
    /// The data directory [./data].
    pub data: std::path::PathBuf,
    /// Operator settings by action; they win over settings stored earlier,
    /// and the API cannot change them.
    pub host_file: HostFile,
    /// Who may use which routes [a fresh random token per role].
    pub auth: Auth,
    /// The largest component an upload may carry [64 MiB].
    pub max_upload_bytes: usize,
    /// Invocations running at once, in total; more get 429 [128].
    pub max_concurrency: usize,
    /// Invocations running at once per action; more get 429 [32].
    pub max_concurrency_per_action: usize,
    /// How long calls in flight may take to finish at shutdown [10 s].
    pub shutdown_grace: Duration,
    /// Connections open at once; at the cap, the connection idle longest is
    /// closed to make room [1024].
    pub max_connections: usize,
    /// How long a client may take to send a request's line and headers [10 s].
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body [60 s].
    pub body_timeout: Duration,
    /// How long an upload's compilation may take, waiting included, before
    /// the upload is answered 503 [300 s].
    pub compile_timeout: Duration,
    /// Uploads compiled at once [2].
    pub max_parallel_compiles: usize,
    /// Components to deploy at start, as (name, file).
    pub deploy: Vec<(String, std::path::PathBuf)>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: "data".into(),
            host_file: HostFile::default(),
            auth: Auth::Tokens(Tokens::generate()),
            max_upload_bytes: 64 << 20,
            max_concurrency: 128,
            max_concurrency_per_action: 32,
            shutdown_grace: Duration::from_secs(10),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            compile_timeout: Duration::from_secs(300),
            max_parallel_compiles: 2,
            deploy: Vec::new(),
        }
    }
}

/// Who may use the API. There is no "partly on": either every role has its
/// token, or auth is off on purpose.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A bearer token per role.
    Tokens(Tokens),
    /// No tokens: anyone who can reach the listener may upload and run code.
    /// For local demos only.
    Off,
}

/// The roles of the API, each with its own bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Grants, secrets and limits: what an action may reach. Every route.
    Operator,
    /// Upload, configure, try and read actions; never what they may reach.
    Designer,
    /// The dialog platform: invoke and the webhooks.
    Invoke,
    /// A metrics scraper: `GET /metrics` only.
    Metrics,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Designer => "designer",
            Role::Invoke => "invoke",
            Role::Metrics => "metrics",
        }
    }
}

/// The bearer token of each role. Each must be distinct and at least
/// [`Tokens::MIN_LEN`] characters long, so that no token stands for two roles
/// and none is guessable by trying.
#[derive(Clone)]
pub struct Tokens {
    operator: String,
    designer: String,
    invoke: String,
    metrics: String,
}

impl Tokens {
    /// The shortest token accepted.
    pub const MIN_LEN: usize = 16;

    /// The four tokens, or what is wrong with them.
    pub fn new(
        operator: String,
        designer: String,
        invoke: String,
        metrics: String,
    ) -> Result<Tokens, String> {
        let tokens = Tokens {
            operator,
            designer,
            invoke,
            metrics,
        };
        let all = tokens.by_role();
        for (role, token) in all {
            if token.chars().count() < Tokens::MIN_LEN || token.trim() != token {
                return Err(format!(
                    "the {} token must be at least {} characters, without surrounding spaces",
                    role.name(),
                    Tokens::MIN_LEN
                ));
            }
        }
        for (i, (role, token)) in all.iter().enumerate() {
            if let Some((other, _)) = all[i + 1..].iter().find(|(_, t)| t == token) {
                return Err(format!(
                    "the {} and {} tokens are the same: each role needs its own",
                    role.name(),
                    other.name()
                ));
            }
        }
        Ok(tokens)
    }

    /// A new random token for every role.
    pub fn generate() -> Tokens {
        Tokens {
            operator: random_token(),
            designer: random_token(),
            invoke: random_token(),
            metrics: random_token(),
        }
    }

    /// The token of `role`.
    pub fn of(&self, role: Role) -> &str {
        match role {
            Role::Operator => &self.operator,
            Role::Designer => &self.designer,
            Role::Invoke => &self.invoke,
            Role::Metrics => &self.metrics,
        }
    }

    fn by_role(&self) -> [(Role, &str); 4] {
        [Role::Operator, Role::Designer, Role::Invoke, Role::Metrics]
            .map(|role| (role, self.of(role)))
    }

    /// The role whose token `presented` is, compared in constant time with
    /// every token.
    fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (role, token) in self.by_role() {
            if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(role);
            }
        }
        found
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

/// 256 random bits, as 64 hex digits.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The largest JSON body a request may carry.
const MAX_JSON_BYTES: usize = 1 << 20;

/// The running service's state.
pub struct Service {
    host: Host,
    data: Arc<DataDir>,
    options: ServeOptions,
    actions: RwLock<HashMap<String, Served>>,
    metrics: Metrics,
    total: Arc<Semaphore>,
    per_action: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Uploads and settings changes, one at a time, so versions and pointers
    /// stay in step; invocations never wait on it, nor does compiling.
    changes: tokio::sync::Mutex<()>,
    /// Places for compiling uploads.
    compiles: Arc<Semaphore>,
}

/// What the service knows of a serving action.
#[derive(Clone)]
struct Served {
    record: ActionRecord,
    manifest: Arc<Manifest>,
    starts_from: crate::StartsFrom,
}

/// An error as the API answers it: `{"error": {"code", "message"}}` and a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    logs: Option<Json>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            logs: None,
        }
    }

    fn body(&self) -> Json {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(logs) = &self.logs {
            error["logs"] = logs.clone();
        }
        json!({ "error": error })
    }
}

impl From<LoadError> for ApiError {
    fn from(error: LoadError) -> ApiError {
        match error {
            LoadError::Host(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            ),
            _ => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-action",
                error.to_string(),
            ),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(error: InvokeError) -> ApiError {
        // The one place an invocation's error kind becomes a status.
        let status = match error.kind {
            ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::UnknownAction => StatusCode::NOT_FOUND,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Upstream | ErrorKind::Denied => StatusCode::BAD_GATEWAY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let logs = serde_json::to_value(&error.logs).ok();
        ApiError {
            status,
            code: error.kind.as_str(),
            message: error.message,
            logs,
        }
    }
}

fn internal(error: anyhow::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{error:#}"),
    )
}

/// Who may use each kind of route.
const OPERATOR: &[Role] = &[Role::Operator];
const DESIGNER: &[Role] = &[Role::Operator, Role::Designer];
const INVOKE: &[Role] = &[Role::Operator, Role::Designer, Role::Invoke];
const METRICS: &[Role] = &[Role::Operator, Role::Metrics];

impl Service {
    /// Opens the data directory and serves again every action stored there
    /// (from cached artifacts, without recompiling), then deploys `options.deploy`.
    pub async fn start(host: Host, options: ServeOptions) -> anyhow::Result<Arc<Service>> {
        let data = Arc::new(DataDir::open(&options.data)?);
        let options_compiles = options.max_parallel_compiles.max(1);
        let service = Arc::new(Service {
            host,
            data,
            total: Arc::new(Semaphore::new(options.max_concurrency)),
            options,
            actions: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            per_action: std::sync::Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            compiles: Arc::new(Semaphore::new(options_compiles)),
        });
        for (name, record) in service.data.actions()? {
            // One broken action must not keep the others from serving.
            let restored = match record {
                Ok(record) => service.restore(&name, record).await,
                Err(error) => Err(internal(error)),
            };
            if let Err(error) = restored {
                eprintln!("warning: action `{name}` is not served: {}", error.message);
            }
        }
        for (name, file) in service.options.deploy.clone() {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            service
                .upload(&name, Bytes::from(bytes))
                .await
                .map_err(|e| anyhow::anyhow!("cannot deploy {}: {}", file.display(), e.message))?;
        }
        Ok(service)
    }

    /// The host behind the service.
    pub fn host(&self) -> &Host {
        &self.host
    }

    async fn restore(&self, name: &str, mut record: ActionRecord) -> Result<(), ApiError> {
        match self.host_file_doc(name) {
            Some(doc) => record.settings = doc,
            // Stored settings came through the API, which may not read the
            // host's environment (an older version let it).
            None if record
                .settings
                .secrets
                .iter()
                .any(|s| s.value_env.is_some()) =>
            {
                return Err(settings_error(
                    "its stored settings read a secret from the host's environment \
                     (`value_env`), which only the host configuration file may do"
                        .into(),
                ));
            }
            None => {}
        }
        let settings = record.settings.settings().map_err(settings_error)?;
        let prepared = self.reload(name, &record.sha256, settings).await?;
        self.install(name, record, prepared);
        Ok(())
    }

    /// The settings a new version of `name` serves with: the host file's, or
    /// the serving version's, or none.
    fn settings_for_upload(&self, name: &str) -> ActionDoc {
        match (self.host_file_doc(name), self.served(name)) {
            (Some(doc), _) => doc,
            (None, Some(previous)) => previous.record.settings,
            (None, None) => ActionDoc::default(),
        }
    }

    /// Validates, compiles and stores a new version, then serves it. A failure
    /// at any step leaves the serving version as it was. The compilation runs
    /// before the lock that serializes changes is taken, within the compile
    /// bounds, so a slow one holds up no other change.
    async fn upload(&self, name: &str, bytes: Bytes) -> Result<Served, ApiError> {
        let sha256 = sha256_hex(&bytes);
        let same = |served: &Option<Served>| {
            served
                .as_ref()
                .filter(|p| p.record.sha256 == sha256)
                .cloned()
        };
        // The same bytes again (a repeated deploy) are not a new version.
        if let Some(previous) = same(&self.served(name)) {
            return Ok(previous);
        }
        let doc = self.settings_for_upload(name);
        let prepared = self.prepare_bounded(name, &bytes, &doc).await?;
        let _one_change = self.changes.lock().await;
        let previous = self.served(name);
        if let Some(previous) = same(&previous) {
            return Ok(previous);
        }
        // Settings changed while it compiled: prepare it again with the new
        // ones, from the artifact just cached.
        let current = self.settings_for_upload(name);
        let prepared = if current == doc {
            prepared
        } else {
            let settings = current.settings().map_err(settings_error)?;
            self.host
                .prepare(name, &bytes, settings, Some(self.cache()))
                .await?
        };
        let record = ActionRecord {
            sha256: sha256.clone(),
            version: previous.map_or(0, |p| p.record.version) + 1,
            settings: current,
        };
        self.persist(name, Some((sha256, bytes)), record.clone())
            .await?;
        Ok(self.install(name, record, prepared))
    }

    /// Prepares `bytes` as `name` with `doc`, at most
    /// [`ServeOptions::max_parallel_compiles`] at once and within
    /// [`ServeOptions::compile_timeout`] (waiting included). A compilation past
    /// the timeout cannot be stopped: it goes on, holding its place, and its
    /// artifact is cached for the next upload of the same bytes.
    async fn prepare_bounded(
        &self,
        name: &str,
        bytes: &Bytes,
        doc: &ActionDoc,
    ) -> Result<crate::Prepared, ApiError> {
        let settings = doc.settings().map_err(settings_error)?;
        let timeout = self.options.compile_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let place = tokio::time::timeout_at(deadline, Arc::clone(&self.compiles).acquire_owned())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "other uploads kept the compiler busy for {} s; retry later",
                        timeout.as_secs()
                    ),
                )
            })?
            .map_err(|e| internal(e.into()))?;
        let (host, cache, name, bytes) = (
            self.host.clone(),
            self.cache(),
            name.to_owned(),
            bytes.clone(),
        );
        let compiling = tokio::spawn(async move {
            let _place = place;
            host.prepare(&name, &bytes, settings, Some(cache)).await
        });
        match tokio::time::timeout_at(deadline, compiling).await {
            Ok(Ok(prepared)) => Ok(prepared?),
            Ok(Err(failed)) => Err(internal(anyhow::anyhow!(
                "the compilation failed: {failed}"
            ))),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "compile-timeout",
                format!(
                    "compiling it took longer than {} s; it goes on in the background and its \
                     artifact is kept, so uploading it again later is quicker",
                    timeout.as_secs()
                ),
            )),
        }
    }

    /// Changes an action's settings (`change` makes the new ones from the
    /// current ones): reloads its version (from the cached artifact) with
    /// them, stores them, then serves it. Settings the host file gives cannot
    /// be changed here.
    async fn set_settings(
        &self,
        name: &str,
        change: impl FnOnce(ActionDoc) -> ActionDoc,
    ) -> Result<Served, ApiError> {
        let _one_change = self.changes.lock().await;
        let previous = self.served(name).ok_or_else(|| unknown_action(name))?;
        if self.host_file_doc(name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "managed-by-host-file",
                format!(
                    "the settings of `{name}` come from the host configuration file; change \
                     them there"
                ),
            ));
        }
        let doc = change(previous.record.settings.clone());
        let settings = doc.settings().map_err(settings_error)?;
        let prepared = self.reload(name, &previous.record.sha256, settings).await?;
        let record = ActionRecord {
            settings: doc,
            ..previous.record
        };
        self.persist(name, None, record.clone()).await?;
        Ok(self.install(name, record, prepared))
    }

    /// Serves a prepared version and remembers its record.
    fn install(&self, name: &str, record: ActionRecord, prepared: crate::Prepared) -> Served {
        let served = Served {
            record,
            manifest: Arc::clone(prepared.manifest()),
            starts_from: prepared.starts_from().clone(),
        };
        self.host.install(prepared);
        self.served_mut().insert(name.to_owned(), served.clone());
        served
    }

    /// Prepares the stored version `sha256` of `name` with `settings` (from the
    /// cached artifact, so without compiling).
    async fn reload(
        &self,
        name: &str,
        sha256: &str,
        settings: crate::ActionSettings,
    ) -> Result<crate::Prepared, ApiError> {
        let data = Arc::clone(&self.data);
        let sha256 = sha256.to_owned();
        let bytes = tokio::task::spawn_blocking(move || data.version(&sha256))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(internal)?;
        Ok(self
            .host
            .prepare(name, &bytes, settings, Some(self.cache()))
            .await?)
    }

    async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _one_change = self.changes.lock().await;
        if self.served(name).is_none() {
            return Err(unknown_action(name));
        }
        let data = Arc::clone(&self.data);
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || data.remove_action(&owned))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(internal)?;
        self.host.unload(name);
        self.served_mut().remove(name);
        Ok(())
    }

    /// Writes the version (if new) and then the pointer, off the async workers.
    async fn persist(
        &self,
        name: &str,
        version: Option<(String, Bytes)>,
        record: ActionRecord,
    ) -> Result<(), ApiError> {
        let data = Arc::clone(&self.data);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some((sha256, bytes)) = version {
                data.put_version(&sha256, &bytes)?;
            }
            data.set_action(&name, &record)
        })
        .await
        .map_err(|e| internal(e.into()))?
        .map_err(internal)
    }

    fn cache(&self) -> Arc<dyn ArtifactCache> {
        Arc::clone(&self.data) as Arc<dyn ArtifactCache>
    }

    fn host_file_doc(&self, name: &str) -> Option<ActionDoc> {
        self.options.host_file.docs.get(name).cloned()
    }

    fn is_served(&self, name: &str) -> bool {
        self.actions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    fn served(&self, name: &str) -> Option<Served> {
        self.actions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn served_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Served>> {
        self.actions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for one invocation of `name`, or refuses at once: the
    /// service never queues calls without bound.
    fn admit(&self, name: &str) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ApiError> {
        let overloaded = || {
            self.metrics.overloaded(name);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "too many invocations at once; retry shortly",
            )
        };
        let total = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| overloaded())?;
        let action = {
            let mut per_action = self.per_action.lock().unwrap_or_else(|p| p.into_inner());
            let limit = self.options.max_concurrency_per_action;
            // Look up before inserting: the name is allocated only the first time.
            match per_action.get(name) {
                Some(semaphore) => Arc::clone(semaphore),
                None => {
                    let semaphore = Arc::new(Semaphore::new(limit));
                    per_action.insert(name.to_owned(), Arc::clone(&semaphore));
                    semaphore
                }
            }
        };
        let action = action.try_acquire_owned().map_err(|_| overloaded())?;
        Ok((total, action))
    }

    async fn invoke(
        &self,
        name: &str,
        context: CallContext,
        input: &Map<String, Json>,
    ) -> Result<crate::Invocation, ApiError> {
        if !self.is_served(name) {
            return Err(unknown_action(name));
        }
        let _permits = self.admit(name)?;
        let started = Instant::now();
        let result = self.host.invoke(name, context, input).await;
        let label = match &result {
            Ok(done) if done.success => "success",
            Ok(_) => "failure",
            Err(error) => error.kind.as_str(),
        };
        self.metrics.invocation(name, label, started.elapsed());
        result.map_err(ApiError::from)
    }

    /// Serves one request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let webhook = segments.first() == Some(&"webhooks");
        let result = self.route(&method, &segments, request).await;
        match result {
            Ok(response) => response,
            Err(error) if webhook => json_response(
                error.status,
                &json!({"successful": false, "errors": [{"message": error.message}]}),
            ),
            Err(error) => json_response(error.status, &error.body()),
        }
    }

    async fn route(
        &self,
        method: &Method,
        segments: &[&str],
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        match (method, segments) {
            (&Method::GET, ["healthz"]) => {
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            (&Method::GET, ["metrics"]) => {
                self.authorize(&request, METRICS)?;
                let text = self.metrics.render(&self.host);
                Ok(Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(text)))
                    .expect("a valid response"))
            }
            (&Method::GET, ["v1", "actions"]) => {
                self.authorize(&request, DESIGNER)?;
                let mut names: Vec<String> = self
                    .actions
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                names.sort();
                let list: Vec<Json> = names.iter().filter_map(|n| self.describe(n)).collect();
                Ok(json_response(StatusCode::OK, &json!({ "actions": list })))
            }
            (&Method::GET, ["v1", "actions", name]) => {
                self.authorize(&request, DESIGNER)?;
                let shown = self.describe(name).ok_or_else(|| unknown_action(name))?;
                Ok(json_response(StatusCode::OK, &shown))
            }
            (&Method::PUT, ["v1", "actions", name]) => {
                self.authorize(&request, DESIGNER)?;
                let bytes = read_body(
                    request,
                    self.options.max_upload_bytes,
                    self.options.body_timeout,
                )
                .await?;
                let first = self.served(name).is_none();
                self.upload(name, bytes).await?;
                let status = if first {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(
                    status,
                    &self.describe(name).unwrap_or(Json::Null),
                ))
            }
            (&Method::DELETE, ["v1", "actions", name]) => {
                self.authorize(&request, DESIGNER)?;
                self.delete(name).await?;
                Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::default())
                    .expect("a valid response"))
            }
            (&Method::PUT, ["v1", "actions", name, "grants"]) => {
                self.authorize(&request, OPERATOR)?;
                let body = read_json(request, self.options.body_timeout).await?;
                let doc: ActionDoc = serde_json::from_value(body).map_err(|e| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-settings",
                        format!("invalid settings: {e}"),
                    )
                })?;
                if let Some(secret) = doc.secrets.iter().find(|s| s.value_env.is_some()) {
                    return Err(settings_error(format!(
                        "secret `{}`: `value_env` reads the host's environment and is for the \
                         host configuration file only; send the value",
                        secret.name
                    )));
                }
                self.set_settings(name, |_| doc).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &self.describe(name).unwrap_or(Json::Null),
                ))
            }
            (&Method::PUT, ["v1", "actions", name, "config"]) => {
                self.authorize(&request, DESIGNER)?;
                let body = read_json(request, self.options.body_timeout).await?;
                let config: BTreeMap<String, String> =
                    serde_json::from_value(body).map_err(|e| {
                        settings_error(format!(
                            "invalid config: {e}; send a JSON object of strings, \
                             {{\"key\": \"value\"}}"
                        ))
                    })?;
                self.set_settings(name, |current| ActionDoc { config, ..current })
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &self.describe(name).unwrap_or(Json::Null),
                ))
            }
            (&Method::POST, ["v1", "actions", name, "invoke"]) => {
                self.authorize(&request, INVOKE)?;
                let body = read_json(request, self.options.body_timeout).await?;
                let (context, input) = invoke_body(&body)?;
                let done = self.invoke(name, context, &input).await?;
                let body = serde_json::to_vec(&done).map_err(|e| internal(e.into()))?;
                Ok(Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("a valid response"))
            }
            (&Method::POST, ["webhooks", "opendialog", name]) => {
                self.authorize(&request, INVOKE)?;
                let body = read_json(request, self.options.body_timeout).await?;
                let input = body
                    .pointer("/input_data/attributes")
                    .and_then(Json::as_object)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid-input",
                            "expected {\"input_data\": {\"attributes\": {...}}}",
                        )
                    })?;
                let done = self.invoke(name, CallContext::default(), &input).await?;
                let answer = if done.success {
                    json!({"successful": true, "output_data": {"attributes": done.attributes}})
                } else {
                    let message = if done.messages.is_empty() {
                        "the action reported no success".to_owned()
                    } else {
                        done.messages.join(" ")
                    };
                    json!({"successful": false, "errors": [{"message": message}]})
                };
                Ok(json_response(StatusCode::OK, &answer))
            }
            (
                _,
                ["healthz" | "metrics"] | ["v1", "actions", ..] | ["webhooks", "opendialog", _],
            ) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not allowed here"),
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such route",
            )),
        }
    }

    /// An action as the API shows it: secrets' values redacted.
    fn describe(&self, name: &str) -> Option<Json> {
        let served = self.served(name)?;
        Some(json!({
            "name": name,
            "version": served.record.version,
            "sha256": served.record.sha256,
            "manifest": &*served.manifest,
            "starts_from": served.starts_from,
            "settings": served.record.settings.redacted(),
            "invocations": self.metrics.counts(name),
        }))
    }

    /// Checks the bearer token (in constant time) against the roles that may
    /// use the route. With auth off, allows all.
    fn authorize(&self, request: &Request<Incoming>, allowed: &[Role]) -> Result<(), ApiError> {
        let Auth::Tokens(tokens) = &self.options.auth else {
            return Ok(());
        };
        let presented = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer <token>`",
                )
            })?;
        let role = tokens.role_of(presented).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
        })?;
        if allowed.contains(&role) {
            return Ok(());
        }
        let needed: Vec<&str> = allowed.iter().map(|role| role.name()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs the {} token; this is the {} token",
                needed.join(" or "),
                role.name()
            ),
        ))
    }
}

fn unknown_action(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown-action",
        format!("no action is deployed as `{name}`"),
    )
}

fn settings_error(why: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-settings", why)
}

/// Reads `{"input": {...}, "context": {...}}`, naming what is wrong.
fn invoke_body(body: &Json) -> Result<(CallContext, Map<String, Json>), ApiError> {
    let invalid =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", message);
    let object = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|k| *k != "input" && *k != "context") {
        return Err(invalid(format!(
            "unknown field `{unknown}`: send {{\"input\": {{...}}, \"context\": {{...}}}}"
        )));
    }
    let input = match object.get("input") {
        None => Map::new(),
        Some(Json::Object(input)) => input.clone(),
        Some(_) => {
            return Err(invalid(
                "`input` must be a JSON object of attributes".into(),
            ));
        }
    };
    let context = match object.get("context") {
        None | Some(Json::Null) => CallContext::default(),
        Some(context) => CallContext::from_json(context).map_err(invalid)?,
    };
    Ok((context, input))
}

/// Reads a request's body, at most `cap` bytes within `timeout`: a client
/// that sends slowly holds a connection and memory, and is cut off.
async fn read_body(
    request: Request<Incoming>,
    cap: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(request.into_body(), cap).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            )
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body is larger than {cap} bytes"),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("cannot read the body: {error}"),
        )),
    }
}

async fn read_json(request: Request<Incoming>, timeout: Duration) -> Result<Json, ApiError> {
    let bytes = read_body(request, MAX_JSON_BYTES, timeout).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn json_response(status: StatusCode, body: &Json) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// Serves until SIGTERM or SIGINT, then stops accepting and lets calls in
/// flight finish within the grace period.
pub async fn serve(service: Arc<Service>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = crate::listener::Limits {
        max_connections: service.options.max_connections.max(1),
        header_timeout: service.options.header_timeout,
    };
    let handler = {
        let service = Arc::clone(&service);
        move |request| Arc::clone(&service).handle(request)
    };
    crate::listener::accept_loop(&listener, limits, &graceful, handler, shutdown_signal()).await;
    drop(listener);
    eprintln!(
        "shutting down: waiting up to {:?} for calls in flight",
        service.options.shutdown_grace
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(service.options.shutdown_grace) => {
            eprintln!("warning: calls still running after the grace period were cut off");
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
