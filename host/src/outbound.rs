//! The capability-limited HTTP client. Both ways out of a sandbox, the
//! contract's `http` import and `wasi:http/outgoing-handler`, pass the same
//! gate ([`Gate::admit`]) and the same client ([`Outbound::send`]).

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::log::clip;
use crate::policy::{Destination, Grant};
use crate::redact::{redacted, redactions};
use crate::resolve::{ACTION_LOOKUPS, GuardedResolver, Refused, Resolver};
use crate::settings::{HttpLimits, Secret};
use crate::ssrf;
use crate::tape::{Deck, Exchange, RecordedBody, Replayed};

/// Why a request got no response; mapped onto `http-error` and wasi:http's
/// `error-code`. Never carries a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutboundError {
    Denied(String),
    Timeout,
    TooLarge,
    InvalidRequest(String),
    Transport(String),
    BudgetExhausted,
}

/// A response read whole, within the size cap.
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A request as the action made it.
pub(crate) struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub timeout: Option<Duration>,
}

/// What every action's HTTP clients share: TLS set up once (the public roots
/// and the operator's), and the resolver.
pub(crate) struct Network {
    tls: rustls::ClientConfig,
    resolver: Resolver,
}

impl Network {
    pub(crate) fn new(
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
        resolver: Resolver,
    ) -> anyhow::Result<Network> {
        Ok(Network {
            tls: tls_config(extra_roots)?,
            resolver,
        })
    }
}

/// One action's outbound policy and its HTTP clients (connections are reused
/// within the action only, so one action's grants never serve another's).
pub(crate) struct Outbound {
    grants: Vec<Grant>,
    secrets: Vec<Secret>,
    /// The secrets' values in each form a response may repeat them.
    redactions: Vec<Vec<u8>>,
    limits: HttpLimits,
    network: Arc<Network>,
    /// A client per set of IP and CIDR grants (by index) that may let a
    /// request through a name reach an internal address; the empty set's, for
    /// most requests, is made at once. A client pools its connections, so a
    /// connection to an internal address is only ever reused by requests
    /// that the same grants allow.
    clients: std::sync::Mutex<std::collections::HashMap<Vec<usize>, reqwest::Client>>,
    shared: Arc<ActionOutbound>,
}

/// The most idle connections a client keeps to one upstream, for the next
/// calls, and for how long.
const IDLE_PER_HOST: usize = 16;
const IDLE_FOR: Duration = Duration::from_secs(30);

/// What the versions of one action name share of their outbound requests:
/// the count of each result, and the slots for name lookups in flight (see
/// [`ACTION_LOOKUPS`]), which a lookup its version no longer waits for keeps
/// until it ends, so that reloading an action does not give it more.
pub(crate) struct ActionOutbound {
    results: [std::sync::atomic::AtomicU64; 7],
    lookups: Arc<tokio::sync::Semaphore>,
}

impl Default for ActionOutbound {
    fn default() -> ActionOutbound {
        ActionOutbound {
            results: Default::default(),
            lookups: Arc::new(tokio::sync::Semaphore::new(ACTION_LOOKUPS)),
        }
    }
}

const RESULTS: [&str; 7] = [
    "ok",
    "denied",
    "timeout",
    "too-large",
    "invalid-request",
    "transport",
    "budget-exhausted",
];

impl ActionOutbound {
    fn record(&self, result: &Result<Response, OutboundError>) {
        let index = match result {
            Ok(_) => 0,
            Err(OutboundError::Denied(_)) => 1,
            Err(OutboundError::Timeout) => 2,
            Err(OutboundError::TooLarge) => 3,
            Err(OutboundError::InvalidRequest(_)) => 4,
            Err(OutboundError::Transport(_)) => 5,
            Err(OutboundError::BudgetExhausted) => 6,
        };
        self.results[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether nothing holds or has counted anything here: no version of
    /// the action loaded, no lookup of its running, no request counted. The
    /// entry of a name whose load failed, for one, can be forgotten.
    pub(crate) fn unused(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && Arc::strong_count(&self.lookups) == 1
            && self.results.iter().all(|n| n.load(Ordering::Relaxed) == 0)
    }

    /// Each result's name and count.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RESULTS
            .iter()
            .zip(&self.results)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What a call leaves for the action to return its outcome after the last
/// request's deadline.
const RESERVE: Duration = Duration::from_millis(25);

/// Headers the host sets itself; an action may not.
const HOST_SET_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The longest URL the gate takes: what common servers accept, and a bound
/// on what a refused attempt makes the host copy.
pub(crate) const MAX_URL_BYTES: usize = 8 << 10;

/// The most bytes of headers one request may carry as the action wrote them
/// (wasi:http's field limit) and once their secrets are filled in, counted
/// by `header_bytes`.
pub(crate) const MAX_HEADER_BYTES: usize = crate::state::FIELD_SIZE_LIMIT;
pub(crate) const MAX_FILLED_HEADER_BYTES: usize = 4 * MAX_HEADER_BYTES;

/// Headers an action may not send, and why: `range`, because a part of an
/// echo could hold part of a secret that redaction cannot recognise; the
/// others, because some servers and proxies read them as the request's real
/// method or path, in place of the one the grant allowed.
const REFUSED_HEADERS: &[(&str, &str)] = &[
    ("range", RANGE),
    ("x-http-method-override", OVERRIDE),
    ("x-http-method", OVERRIDE),
    ("x-method-override", OVERRIDE),
    ("x-original-method", OVERRIDE),
    ("x-original-url", OVERRIDE),
    ("x-rewrite-url", OVERRIDE),
];
const RANGE: &str = "a partial response could carry part of a secret past redaction";
const OVERRIDE: &str =
    "a server that honours it would run another method or path than the grant allows";

/// The bytes of `headers` as the caps count them: each name and value, and
/// 32 for each header's place, so that millions of empty headers are not free.
fn header_bytes(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 32)
        .sum()
}

/// Whether the host sets the header `name` itself, so an action may not.
pub(crate) fn is_host_set_header(name: &str) -> bool {
    HOST_SET_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

impl Outbound {
    pub(crate) fn new(
        grants: Vec<Grant>,
        secrets: Vec<Secret>,
        limits: HttpLimits,
        shared: Arc<ActionOutbound>,
        network: Arc<Network>,
    ) -> anyhow::Result<Outbound> {
        let outbound = Outbound {
            grants,
            redactions: redactions(&secrets),
            secrets,
            limits,
            network,
            clients: std::sync::Mutex::default(),
            shared,
        };
        outbound.client(&[])?;
        Ok(outbound)
    }

    /// The client for requests that the IP and CIDR grants `exempt` (indices
    /// into the grants) allow: its resolver keeps an internal address only
    /// when one of them names it.
    fn client(&self, exempt: &[usize]) -> anyhow::Result<reqwest::Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(exempt) {
            return Ok(client.clone());
        }
        let resolver = GuardedResolver {
            resolver: self.network.resolver.clone(),
            exempt: exempt.iter().map(|&i| self.grants[i].clone()).collect(),
            lookups: Arc::clone(&self.shared.lookups),
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(self.network.tls.clone())
            .dns_resolver(Arc::new(resolver))
            // Redirects are not followed: the action sees the 3xx and decides,
            // and a request to the new location passes the gate like any other.
            .redirect(reqwest::redirect::Policy::none())
            // Proxies from the environment would route around the address check.
            .no_proxy()
            // Each idle connection holds a descriptor of the whole host: a
            // burst of calls must not leave one per call open.
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_FOR)
            .build()?;
        clients.insert(exempt.to_vec(), client.clone());
        Ok(client)
    }

    /// Counts a request's result.
    pub(crate) fn record(&self, result: &Result<Response, OutboundError>) {
        self.shared.record(result);
    }

    /// The most requests an invocation may attempt.
    pub(crate) fn max_requests(&self) -> u32 {
        self.limits.max_requests
    }

    /// The most request body bytes an action may send.
    pub(crate) fn body_cap(&self) -> usize {
        self.limits.max_request_body_bytes
    }

    /// Sends an admitted request and reads the response, up to the size cap.
    /// A failure's words can hold what the upstream sent (a coding it
    /// claims, an HTTP/2 GOAWAY's debug data), so they are redacted like
    /// its headers, and clipped, before the action, the log or a record
    /// sees them.
    pub(crate) async fn send(&self, admitted: Admitted) -> Result<Response, OutboundError> {
        self.exchange(admitted).await.map_err(|error| match error {
            OutboundError::Transport(words) => {
                let words = redacted(words.as_bytes(), &self.redactions)
                    .map_or(words, |bytes| String::from_utf8_lossy(&bytes).into_owned());
                OutboundError::Transport(clip(&words).into_owned())
            }
            other => other,
        })
    }

    async fn exchange(&self, admitted: Admitted) -> Result<Response, OutboundError> {
        let Admitted {
            destination,
            headers,
            body,
            timeout,
            exempt,
        } = admitted;
        let client = self
            .client(&exempt)
            .map_err(|e| OutboundError::Transport(format!("the HTTP client failed: {e:#}")))?;
        let method = reqwest::Method::from_bytes(destination.method.as_bytes()).map_err(|_| {
            OutboundError::InvalidRequest(format!("invalid method `{}`", destination.method))
        })?;
        // Redaction reads the response's bytes: a compressed body would carry
        // an echoed secret past it, so the host asks for none (an action's
        // own `accept-encoding` is dropped at the gate).
        let mut request = client
            .request(method, destination.url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| classify(&e, &destination))?;
        let cap = self.limits.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > cap as u64)
        {
            return Err(OutboundError::TooLarge);
        }
        if !self.redactions.is_empty()
            && let Some(coding) = (response.headers())
                .get_all(reqwest::header::CONTENT_ENCODING)
                .iter()
                .find(|coding| {
                    !coding
                        .as_bytes()
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"identity")
                })
        {
            // Redacted before it is clipped: a clipped secret is not found.
            let coding = redacted(coding.as_bytes(), &self.redactions)
                .unwrap_or_else(|| coding.as_bytes().to_vec());
            return Err(OutboundError::Transport(format!(
                "the response is compressed (`{}`) although the host asked for none, so the \
                 host cannot find the action's secrets in it to redact them",
                clip(&String::from_utf8_lossy(&coding))
            )));
        }
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in response.headers() {
            // A header whose name repeats a secret goes; one whose value does
            // is kept with the secret redacted.
            if redacted(name.as_str().as_bytes(), &self.redactions).is_some() {
                continue;
            }
            let value = redacted(value.as_bytes(), &self.redactions)
                .unwrap_or_else(|| value.as_bytes().to_vec());
            headers.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        // Read chunk by chunk and stop at the cap: never buffer past it.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(&e, &destination))?
        {
            if body.len() + chunk.len() > cap {
                return Err(OutboundError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        // Redacted whole, after the last chunk: a value split across chunks
        // is found as well as one inside a chunk.
        if let Some(clean) = redacted(&body, &self.redactions) {
            body = clean;
            for (name, value) in &mut headers {
                if name.eq_ignore_ascii_case("content-length") {
                    *value = body.len().to_string();
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body: body.into(),
        })
    }
}

/// A request that passed the gate: granted, within budget, secrets filled in.
pub(crate) struct Admitted {
    destination: Destination,
    headers: Vec<(String, String)>,
    body: Bytes,
    timeout: Duration,
    /// The IP and CIDR grants that may let it reach an internal address its
    /// host name resolves to: those that allow it but for the host.
    exempt: Vec<usize>,
}

impl Admitted {
    /// Sets a body that arrived after the gate admitted the request (wasi:http
    /// streams it); the caller has capped its size.
    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }
}

/// One invocation's way out: the action's [`Outbound`], its request budget,
/// its deadline, and its tape (what a record keeps, or a replay answers).
pub(crate) struct Gate {
    outbound: Arc<Outbound>,
    sent: AtomicU32,
    deadline: Instant,
    deck: Arc<Deck>,
}

/// A request as a record keeps it, read before the gate fills in secrets:
/// a secret is still its `{{secret:NAME}}` placeholder.
pub(crate) struct Seen {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    pub(crate) body: RecordedBody,
    started: Instant,
    /// Its place on the tape, kept unfinished until its end is known; `None`
    /// once the tape is full (a replay still answers it from the record).
    place: Option<usize>,
}

impl Gate {
    pub(crate) fn new(outbound: Arc<Outbound>, deadline: Instant, deck: Arc<Deck>) -> Gate {
        Gate {
            outbound,
            sent: AtomicU32::new(0),
            deadline,
            deck,
        }
    }

    pub(crate) fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    pub(crate) fn deck(&self) -> &Arc<Deck> {
        &self.deck
    }

    /// What the tape keeps of `request`, when the call keeps or replays one.
    pub(crate) fn seen(&self, request: &Request) -> Option<Seen> {
        if !self.deck.recording() {
            return None;
        }
        let method = request.method.trim().to_ascii_uppercase();
        // The gate's reading of the URL, so that a replay matches the
        // request however the action spelled it. A URL or headers over the
        // gate's caps are refused, and kept only clipped: what the tape holds
        // stays bounded whatever the action sends.
        let url = if request.url.len() > MAX_URL_BYTES {
            clip(&request.url).into_owned()
        } else {
            Destination::parse(&request.method, &request.url)
                .map_or_else(|_| request.url.clone(), |d| d.url.to_string())
        };
        let headers: Vec<(String, String)> = if header_bytes(&request.headers) > MAX_HEADER_BYTES {
            (request.headers.iter().take(16))
                .map(|(name, value)| (clip(name).into_owned(), clip(value).into_owned()))
                .collect()
        } else {
            request.headers.clone()
        };
        let body = RecordedBody::of(&request.body);
        let place = self.deck.open(|| Exchange {
            method: method.clone(),
            url: url.clone(),
            request_headers: headers.clone(),
            request_body: body.clone(),
            outcome: crate::tape::unfinished(),
            duration_ms: 0.0,
        });
        Some(Seen {
            method,
            url,
            headers,
            body,
            started: Instant::now(),
            place,
        })
    }
}

impl Deck {
    /// Sends an admitted request, or, in a replay, answers it from the record.
    pub(crate) async fn send(
        &self,
        outbound: &Outbound,
        seen: Option<&Seen>,
        admitted: Admitted,
    ) -> Result<Response, OutboundError> {
        if let Some(seen) = seen
            && let Some(replayed) = self.replayed(&seen.method, &seen.url)
        {
            return match replayed {
                Replayed::Answer(answer) => answer,
                // The record's answer never came: neither does this one
                // (the call's deadline ends the wait, as it did then).
                Replayed::Unanswered => std::future::pending().await,
            };
        }
        outbound.send(admitted).await
    }

    /// Keeps what came of a request the tape saw.
    pub(crate) fn kept(&self, seen: Option<Seen>, result: &Result<Response, OutboundError>) {
        let Some(seen) = seen else { return };
        let Some(place) = seen.place else { return };
        self.close(
            place,
            Exchange {
                duration_ms: crate::tape::millis(seen.started.elapsed()),
                method: seen.method,
                url: seen.url,
                request_headers: seen.headers,
                request_body: seen.body,
                outcome: crate::tape::outcome_of(result),
            },
        );
    }
}

impl Gate {
    /// The one decision for every request: is it well formed, granted, within
    /// the budget and the body cap, and are its secrets bound to where it goes?
    pub(crate) fn admit(&self, request: Request) -> Result<Admitted, OutboundError> {
        let outbound = &self.outbound;
        let limits = &outbound.limits;
        // Every attempt counts, refused or not: an action that loops on
        // requests the gate refuses must stop getting answers, as one that
        // loops on granted requests does.
        if self.sent.fetch_add(1, Ordering::Relaxed) >= limits.max_requests {
            return Err(OutboundError::BudgetExhausted);
        }
        if request.url.len() > MAX_URL_BYTES {
            return Err(OutboundError::InvalidRequest(format!(
                "the URL of {} bytes is over the cap of {MAX_URL_BYTES} bytes",
                request.url.len()
            )));
        }
        let destination = Destination::parse(&request.method, &request.url)
            .map_err(OutboundError::InvalidRequest)?;
        if !outbound
            .grants
            .iter()
            .any(|grant| grant.allows(&destination))
        {
            let ambiguity = crate::policy::ambiguity(destination.url.path())
                .filter(|_| outbound.grants.iter().any(Grant::has_path_prefix));
            let hint = if crate::policy::NAMED_ONLY.contains(&destination.method.as_str()) {
                format!(
                    " ({} is allowed only by a grant that names it)",
                    destination.method
                )
            } else if let Some(why) = ambiguity {
                format!(
                    " (its path has {why}, which a server may read as another path: \
                     path-prefix grants refuse it)"
                )
            } else {
                String::new()
            };
            return Err(OutboundError::Denied(format!(
                "no grant allows {destination}{hint}"
            )));
        }
        // An IP in the URL is matched only by IP and CIDR grants, each of which
        // names the IP it allows: the grant that allowed it exempts it.
        if let Some(ip) = destination.ip()
            && let Some(reason) = ssrf::internal_reason(ip)
            && !outbound
                .grants
                .iter()
                .any(|grant| grant.allows(&destination) && grant.names_ip(ip))
        {
            return Err(OutboundError::Denied(format!("{ip} is {reason}")));
        }
        // A host name may resolve to internal addresses: only IP and CIDR
        // grants that allow this very request (but for its host) may exempt them.
        let exempt: Vec<usize> = match destination.ip() {
            Some(_) => Vec::new(),
            None => (outbound.grants.iter().enumerate())
                .filter(|(_, grant)| grant.names_addresses() && grant.allows_but_host(&destination))
                .map(|(index, _)| index)
                .collect(),
        };
        let written = header_bytes(&request.headers);
        if written > MAX_HEADER_BYTES {
            return Err(OutboundError::InvalidRequest(format!(
                "the headers are over the cap of {MAX_HEADER_BYTES} bytes: {written}, counting \
                 32 for each header besides its name and value"
            )));
        }
        for (name, _) in &request.headers {
            if is_host_set_header(name) {
                return Err(OutboundError::InvalidRequest(format!(
                    "the header `{}` is set by the host",
                    clip(name)
                )));
            }
            if let Some((refused, why)) = REFUSED_HEADERS
                .iter()
                .find(|(header, _)| name.eq_ignore_ascii_case(header))
            {
                return Err(OutboundError::InvalidRequest(format!(
                    "the header `{refused}` is refused: {why}"
                )));
            }
        }
        if request.body.len() > limits.max_request_body_bytes {
            return Err(OutboundError::InvalidRequest(format!(
                "the request body of {} bytes is over the cap of {} bytes",
                request.body.len(),
                limits.max_request_body_bytes
            )));
        }
        let headers = request
            .headers
            .into_iter()
            // The host asks for an uncompressed response (see `send`).
            .filter(|(name, _)| !name.eq_ignore_ascii_case("accept-encoding"))
            .map(|(name, value)| {
                let value = fill_secrets(&name, &value, &outbound.secrets, &destination)?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, OutboundError>>()?;
        // A secret may be named many times in one value: bound what that makes.
        if header_bytes(&headers) > MAX_FILLED_HEADER_BYTES {
            return Err(OutboundError::InvalidRequest(format!(
                "the headers are over {} KiB once their secrets are filled in",
                MAX_FILLED_HEADER_BYTES >> 10
            )));
        }
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(RESERVE);
        let timeout = [Some(left), Some(limits.request_timeout), request.timeout]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(left);
        if timeout.is_zero() {
            return Err(OutboundError::Timeout);
        }
        Ok(Admitted {
            destination,
            headers,
            body: request.body,
            timeout,
            exempt,
        })
    }
}

/// Replaces each `{{secret:NAME}}` in the value of the header `header`, only
/// where the secret is bound to the destination and to that header. Messages
/// name the secret, never its value.
fn fill_secrets(
    header: &str,
    value: &str,
    secrets: &[Secret],
    destination: &Destination,
) -> Result<String, OutboundError> {
    const OPEN: &str = "{{secret:";
    let mut filled = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find("}}") else {
            return Err(OutboundError::InvalidRequest(
                "an unclosed `{{secret:` in a header value".into(),
            ));
        };
        let name = &after[..end];
        let secret = secrets
            .iter()
            .find(|secret| secret.name == name)
            .ok_or_else(|| {
                OutboundError::Denied(format!(
                    "no secret named `{}` is set for this action",
                    clip(name)
                ))
            })?;
        if !secret.allow.iter().any(|grant| grant.allows(destination)) {
            return Err(OutboundError::Denied(format!(
                "the secret `{name}` is not bound to {destination}"
            )));
        }
        if !secret
            .headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(header))
        {
            return Err(OutboundError::Denied(format!(
                "the secret `{name}` may fill only the header(s) {}, not `{}`",
                secret.headers.join(", "),
                clip(header)
            )));
        }
        filled.push_str(&rest[..start]);
        filled.push_str(&secret.value);
        rest = &after[end + 2..];
    }
    filled.push_str(rest);
    Ok(filled)
}

/// Maps a client error, finding the resolver's refusal behind it.
fn classify(error: &reqwest::Error, destination: &Destination) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return OutboundError::Denied(refused.0.clone());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return OutboundError::Timeout;
    }
    // The client's own message repeats the URL; its causes say what failed.
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        causes.push(inner.to_string());
        cause = inner.source();
    }
    let detail = if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    };
    OutboundError::Transport(format!("{destination}: {detail}"))
}

/// TLS with the Mozilla root certificates (and the operator's extra roots),
/// HTTP/2 where the server offers it.
fn tls_config(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root.clone())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_versions_of_an_action_share_its_lookup_slots() {
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let resolver = Resolver::new(crate::resolve::Silent {
            waiting: Arc::clone(&waiting),
            answer: Arc::default(),
        });
        let network = Arc::new(Network::new(&[], resolver).unwrap());
        let shared = Arc::new(ActionOutbound::default());
        let version = || {
            let limits = HttpLimits::default();
            let shared = Arc::clone(&shared);
            Outbound::new(Vec::new(), Vec::new(), limits, shared, Arc::clone(&network)).unwrap()
        };
        let (first, second) = (version(), version());
        for (n, outbound) in [&first, &second]
            .iter()
            .cycle()
            .take(3 * ACTION_LOOKUPS)
            .enumerate()
        {
            let client = outbound.client(&[]).unwrap();
            let request = client.get(format!("http://n{n}.example/")).send();
            assert!(
                tokio::time::timeout(Duration::from_millis(20), request)
                    .await
                    .is_err()
            );
        }
        assert_eq!(waiting.load(Ordering::SeqCst), ACTION_LOOKUPS);
        // Another action has slots of its own.
        let other = Outbound::new(
            Vec::new(),
            Vec::new(),
            HttpLimits::default(),
            Arc::new(ActionOutbound::default()),
            Arc::clone(&network),
        )
        .unwrap();
        let request = other
            .client(&[])
            .unwrap()
            .get("http://other.example/")
            .send();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), request)
                .await
                .is_err()
        );
        assert_eq!(waiting.load(Ordering::SeqCst), ACTION_LOOKUPS + 1);
    }

    fn secret(name: &str, value: &str, grant: &str) -> Secret {
        Secret::new(name, value, vec![Grant::parse(grant).unwrap()])
    }

    fn destination(url: &str) -> Destination {
        Destination::parse("POST", url).unwrap()
    }

    #[test]
    fn a_secret_fills_in_for_its_bound_destination() {
        let secrets = [secret("crm_token", "s3cr3t", "https://crm.example/leads")];
        let filled = fill_secrets(
            "authorization",
            "Bearer {{secret:crm_token}}",
            &secrets,
            &destination("https://crm.example/leads/1"),
        );
        assert_eq!(filled.unwrap(), "Bearer s3cr3t");
    }

    #[test]
    fn a_secret_is_refused_elsewhere_by_name_without_its_value() {
        let secrets = [secret("crm_token", "s3cr3t", "https://crm.example/leads")];
        let err = fill_secrets(
            "authorization",
            "Bearer {{secret:crm_token}}",
            &secrets,
            &destination("https://other.example/"),
        )
        .unwrap_err();
        let OutboundError::Denied(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("`crm_token`"), "{message}");
        assert!(!message.contains("s3cr3t"));
    }

    #[test]
    fn a_secret_fills_only_the_headers_it_is_bound_to() {
        let secrets = [secret("crm_token", "s3cr3t-value", "https://crm.example/")];
        let d = destination("https://crm.example/leads");
        let err = fill_secrets("x-echo-me", "{{secret:crm_token}}", &secrets, &d).unwrap_err();
        assert_eq!(
            err,
            OutboundError::Denied(
                "the secret `crm_token` may fill only the header(s) authorization, not \
                 `x-echo-me`"
                    .into()
            )
        );
        assert!(fill_secrets("Authorization", "{{secret:crm_token}}", &secrets, &d).is_ok());
    }

    #[test]
    fn an_unknown_or_unclosed_secret_is_refused() {
        let d = destination("https://crm.example/");
        assert!(matches!(
            fill_secrets("authorization", "{{secret:nope}}", &[], &d),
            Err(OutboundError::Denied(_))
        ));
        assert!(matches!(
            fill_secrets("authorization", "{{secret:nope", &[], &d),
            Err(OutboundError::InvalidRequest(_))
        ));
        assert_eq!(
            fill_secrets("authorization", "plain", &[], &d).unwrap(),
            "plain"
        );
    }
}
