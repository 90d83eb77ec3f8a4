//! Every request named and traced: it gets an id (the client's
//! `x-request-id` when it sent a usable one, else a new UUID), runs inside one
//! span that carries the id with the method and path (the catalog adds the
//! action and the invocation id, [`CALL_FIELDS`]), and its answer carries the
//! id back. A server error is logged in that span. Being the one layer every
//! answer passes, it also marks each answer for caches and browsers
//! ([`answer_headers`]).
//!
//! One layer of the service's own instead of tower-http's three (set the id,
//! trace, propagate the id): those copy the id into the request's headers and
//! extensions and the answer's, build a classifier per request and wrap the
//! answer's body to poll it inside the span. Nothing here reads the id but
//! the log and the client, and every answer is one buffer, so that work was
//! paid on every request for nothing (BENCHMARKS.md measures it).

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Span;

/// The header that names a request in the service's log and its answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one (or one with
/// other than visible ASCII) is replaced, so a client cannot fill every log
/// line of its request with whatever it likes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The fields of a request's span that the catalog fills in once it runs an
/// action for the request.
pub const CALL_FIELDS: [&str; 2] = ["action", "invocation_id"];

/// Wraps a service in [`Traced`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceRequests;

impl<S> Layer<S> for TraceRequests {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

/// A service whose every request has an id and a span (see the module).
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Traced<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let id = request_id(request.headers());
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            // Only visible ASCII is kept or made, so this never falls back.
            request_id = id.to_str().unwrap_or("-"),
            action = tracing::field::Empty,
            invocation_id = tracing::field::Empty,
        );
        let future = span.in_scope(|| self.inner.call(request));
        TracedFuture {
            future,
            span,
            id: Some(id),
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The answer of a [`Traced`] service: polled inside the request's span.
    pub struct TracedFuture<F> {
        #[pin]
        future: F,
        span: Span,
        id: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, R, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.future.poll(cx))?;
        let status = response.status();
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                latency_ms = this.started.elapsed().as_secs_f64() * 1e3,
                "response failed"
            );
        }
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        answer_headers(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

/// Answers hold records, logs and what users said: no cache keeps one (a
/// shared browser, a proxy), and no browser reads one as another type than
/// it says. An answer that set its own (the page's files) keeps it.
fn answer_headers(headers: &mut HeaderMap) {
    use axum::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
}

/// The client's request id when it is 1 to [`MAX_REQUEST_ID_LEN`] visible
/// ASCII characters (a load balancer's or the platform's, so that one id
/// follows a request through both logs), else a new random UUID.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(sent) = headers.get(&REQUEST_ID) {
        let bytes = sent.as_bytes();
        if (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
        {
            return sent.clone();
        }
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    fn is_new_uuid(id: &HeaderValue) -> bool {
        uuid::Uuid::parse_str(id.to_str().unwrap())
            .is_ok_and(|id| id.get_version() == Some(uuid::Version::Random))
    }

    #[test]
    fn a_request_without_an_id_gets_a_new_uuid_each_time() {
        let first = request_id(&HeaderMap::new());
        let second = request_id(&HeaderMap::new());
        assert!(is_new_uuid(&first), "{first:?}");
        assert_ne!(first, second);
    }

    #[test]
    fn a_clients_id_is_kept() {
        let id = request_id(&sent(b"Root=1-67891233-abcdef012345678912345678"));
        assert_eq!(id, "Root=1-67891233-abcdef012345678912345678");
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id(&sent(longest.as_bytes())), longest.as_str());
    }

    #[test]
    fn a_clients_id_too_long_or_not_visible_ascii_is_replaced() {
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            too_long.as_bytes(),
            b"",
            b"two words",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            let id = request_id(&sent(bad));
            assert!(is_new_uuid(&id), "{bad:?} gave {id:?}");
        }
    }
}
