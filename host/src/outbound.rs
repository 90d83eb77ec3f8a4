//! The capability-limited HTTP client. Both ways out of a sandbox, the
//! contract's `http` import and `wasi:http/outgoing-handler`, pass the same
//! gate ([`Gate::admit`]) and the same client ([`Outbound::send`]).

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::log::clip;
use crate::policy::{Destination, Grant};
use crate::settings::{HttpLimits, Secret};
use crate::ssrf;

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

/// One action's outbound policy and its HTTP client (connections are reused
/// within the action only, so one action's grants never serve another's).
pub(crate) struct Outbound {
    grants: Arc<Vec<Grant>>,
    secrets: Vec<Secret>,
    /// The secrets' values in each form a response may repeat them.
    redactions: Vec<Vec<u8>>,
    limits: HttpLimits,
    client: reqwest::Client,
    counters: Arc<OutboundCounters>,
}

/// Outbound requests by result, for one action name across its versions.
#[derive(Default)]
pub(crate) struct OutboundCounters([std::sync::atomic::AtomicU64; 7]);

const RESULTS: [&str; 7] = [
    "ok",
    "denied",
    "timeout",
    "too-large",
    "invalid-request",
    "transport",
    "budget-exhausted",
];

impl OutboundCounters {
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
        self.0[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Each result's name and count.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RESULTS
            .iter()
            .zip(&self.0)
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

/// Whether the host sets the header `name` itself, so an action may not.
pub(crate) fn is_host_set_header(name: &str) -> bool {
    HOST_SET_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// What a redacted secret reads as.
const REDACTED: &[u8] = b"[redacted]";

/// Every form in which a response may repeat a secret's value: as sent, and
/// as a JSON string carries it (an upstream that echoes headers as JSON).
/// Longest first, so that a longer form is replaced whole.
fn redactions(secrets: &[Secret]) -> Vec<Vec<u8>> {
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for secret in secrets {
        let raw = secret.value.as_bytes().to_vec();
        let quoted = serde_json::to_string(&secret.value).unwrap_or_default();
        let json = quoted.as_bytes()[1..quoted.len().saturating_sub(1).max(1)].to_vec();
        let json_slashes = String::from_utf8_lossy(&json)
            .replace('/', "\\/")
            .into_bytes();
        for form in [raw, json, json_slashes] {
            if !form.is_empty() && !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms
}

/// `bytes` with every occurrence of each of `forms` replaced by [`REDACTED`];
/// `None` when there is none.
fn redacted(bytes: &[u8], forms: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut text = std::borrow::Cow::Borrowed(bytes);
    for form in forms {
        if memchr::memmem::find(&text, form).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut rest: &[u8] = &text;
        while let Some(at) = memchr::memmem::find(rest, form) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED);
            rest = &rest[at + form.len()..];
        }
        out.extend_from_slice(rest);
        text = std::borrow::Cow::Owned(out);
    }
    match text {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(out) => Some(out),
    }
}

impl Outbound {
    pub(crate) fn new(
        grants: Vec<Grant>,
        secrets: Vec<Secret>,
        limits: HttpLimits,
        counters: Arc<OutboundCounters>,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> anyhow::Result<Outbound> {
        let grants = Arc::new(grants);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(extra_roots)?)
            .dns_resolver(Arc::new(GuardedResolver {
                grants: Arc::clone(&grants),
            }))
            // Redirects are not followed: the action sees the 3xx and decides,
            // and a request to the new location passes the gate like any other.
            .redirect(reqwest::redirect::Policy::none())
            // Proxies from the environment would route around the address check.
            .no_proxy()
            .build()?;
        Ok(Outbound {
            grants,
            redactions: redactions(&secrets),
            secrets,
            limits,
            client,
            counters,
        })
    }

    /// Counts a request's result.
    pub(crate) fn record(&self, result: &Result<Response, OutboundError>) {
        self.counters.record(result);
    }

    /// The most request body bytes an action may send.
    pub(crate) fn body_cap(&self) -> usize {
        self.limits.max_request_body_bytes
    }

    /// Sends an admitted request and reads the response, up to the size cap.
    pub(crate) async fn send(&self, admitted: Admitted) -> Result<Response, OutboundError> {
        let Admitted {
            destination,
            headers,
            body,
            timeout,
        } = admitted;
        let method = reqwest::Method::from_bytes(destination.method.as_bytes()).map_err(|_| {
            OutboundError::InvalidRequest(format!("invalid method `{}`", destination.method))
        })?;
        let mut request = self
            .client
            .request(method, destination.url.clone())
            .timeout(timeout);
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
}

impl Admitted {
    /// Sets a body that arrived after the gate admitted the request (wasi:http
    /// streams it); the caller has capped its size.
    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }
}

/// One invocation's way out: the action's [`Outbound`], its request budget
/// and its deadline.
pub(crate) struct Gate {
    outbound: Arc<Outbound>,
    sent: AtomicU32,
    deadline: Instant,
}

impl Gate {
    pub(crate) fn new(outbound: Arc<Outbound>, deadline: Instant) -> Gate {
        Gate {
            outbound,
            sent: AtomicU32::new(0),
            deadline,
        }
    }

    pub(crate) fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

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
        let destination = Destination::parse(&request.method, &request.url)
            .map_err(OutboundError::InvalidRequest)?;
        if !outbound
            .grants
            .iter()
            .any(|grant| grant.allows(&destination))
        {
            let hint = if crate::policy::NAMED_ONLY.contains(&destination.method.as_str()) {
                format!(
                    " ({} is allowed only by a grant that names it)",
                    destination.method
                )
            } else {
                String::new()
            };
            return Err(OutboundError::Denied(format!(
                "no grant allows {destination}{hint}"
            )));
        }
        if let Some(ip) = destination.ip()
            && let Some(reason) = ssrf::internal_reason(ip)
            && !outbound.grants.iter().any(|grant| grant.names_ip(ip))
        {
            return Err(OutboundError::Denied(format!("{ip} is {reason}")));
        }
        for (name, _) in &request.headers {
            if is_host_set_header(name) {
                return Err(OutboundError::InvalidRequest(format!(
                    "the header `{}` is set by the host",
                    clip(name)
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
            .map(|(name, value)| {
                let value = fill_secrets(&name, &value, &outbound.secrets, &destination)?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, OutboundError>>()?;
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

/// The resolver's refusal of a name that resolves only to internal addresses.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves a name once and hands the client only the addresses it checked,
/// so the address connected to is the address allowed (no DNS rebinding).
struct GuardedResolver {
    grants: Arc<Vec<Grant>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let grants = Arc::clone(&self.grants);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match ssrf::internal_reason(addr.ip()) {
                    Some(_) if grants.iter().any(|grant| grant.names_ip(addr.ip())) => true,
                    Some(reason) => {
                        refusals.push(format!("{} ({reason})", addr.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let refused = Refused(format!(
                    "`{host}` resolves to {}; only a grant naming that IP or CIDR allows it",
                    refusals.join(", ")
                ));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
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
    fn a_secret_is_redacted_in_every_form_a_response_repeats_it() {
        let secrets = [secret(
            "t",
            "tok/en\"with\\specials-123",
            "https://a.example/",
        )];
        let forms = redactions(&secrets);
        for echo in [
            "raw: tok/en\"with\\specials-123.".to_string(),
            format!(
                "json: {{\"authorization\": {}}}",
                serde_json::to_string("tok/en\"with\\specials-123").unwrap()
            ),
            "json with slashes: tok\\/en\\\"with\\\\specials-123".to_string(),
        ] {
            let clean = redacted(echo.as_bytes(), &forms).expect(&echo);
            let clean = String::from_utf8(clean).unwrap();
            assert!(
                clean.contains("[redacted]") && !clean.contains("specials"),
                "{clean}"
            );
        }
        assert!(redacted(b"nothing to hide", &forms).is_none());
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
