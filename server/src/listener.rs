//! The accept loop: connections are capped, slow ones time out, and an
//! `accept` that fails (the process is out of file descriptors) backs off
//! instead of spinning.
//!
//! At the cap, or when `accept` fails for want of a descriptor, the
//! connection that has been idle longest (no request being answered) is
//! closed to make room, so a flood of connections that send nothing cannot
//! keep a client that does from being served.
//!
//! Each connection also has a watch of its own (`watch`), which closes it
//! when no request is being answered and either its first request has not
//! arrived within the header timeout (a client that connects and sends
//! nothing, in either protocol), or an HTTP/1 request head it began has not
//! arrived within the header timeout, or it has been idle for the idle
//! timeout. A connection is idle when it answers no request and has written
//! nothing to its client: a client that stops reading its answer, or gives
//! HTTP/2 no window for it, is idle too. hyper's own header timeout is off:
//! it also ends idle keep-alive connections, which must outlive a load
//! balancer's idle timeout.
//!
//! A connection that served requests and went idle is closed gracefully
//! (an HTTP/2 GOAWAY first), as every connection is when the service shuts
//! down: a request that crosses the close is either answered or known to
//! the client as not taken, safe to retry. One that never finished a request
//! in time, or is evicted at the cap, is dropped at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How the listener treats its clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// How long a client may take to send a request's head.
    pub(crate) header_timeout: Duration,
    /// How long a connection may stay open with no request to answer and
    /// nothing written.
    pub(crate) idle_timeout: Duration,
}

/// The open connections.
#[derive(Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Woken when a connection closes.
    closed: Notify,
}

/// What a connection is doing, for choosing which to close.
struct Activity {
    /// Requests being answered, until their response is made.
    in_flight: AtomicUsize,
    /// When it last finished a request, wrote to its client or opened, in
    /// milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    /// When bytes of a request head came while it was idle, or `NONE`.
    head_since_ms: AtomicU64,
    /// Whether a request has reached the service, and whether it was HTTP/2
    /// (whose idle connections receive frames that are not requests).
    served: AtomicBool,
    http2: AtomicBool,
    epoch: Instant,
    /// Told to close.
    evict: Notify,
    /// Told that a request head began whose deadline comes before the
    /// watch's next look (`watch_wakes_ms`), so that it looks sooner. Under
    /// load the watch is not woken for every request.
    head_began: Notify,
    watch_wakes_ms: AtomicU64,
    /// The header timeout, in milliseconds.
    header_ms: u64,
}

/// A request being answered; when dropped, the connection is idle from then
/// unless another is being answered or bytes are written (`wrote`).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No time: `head_since_ms` when no request head is being received.
const NONE: u64 = u64::MAX;

/// How long a connection closed gracefully may stay without a request to
/// answer (an HTTP/2 client that never acknowledges the GOAWAY's ping).
const GRACE: Duration = Duration::from_secs(1);

/// Why the watch closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Served requests and has been idle for the idle timeout: closed
    /// gracefully.
    Idle,
    /// Sent no request, or not a whole head, within the header timeout:
    /// dropped.
    Stalled,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A request reached the service; it is answered when the guard drops,
    /// once its response is made (or when hyper drops the call unfinished,
    /// as for an HTTP/2 stream the client reset).
    fn begin(self: &Arc<Self>, version: hyper::Version) -> Answering {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NONE, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        if version == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        Answering(Arc::clone(self))
    }

    fn touch(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes went to the client: the connection is not idle. hyper reads an
    /// HTTP/1 client's next head only once the answer before it is written,
    /// so a head that began meanwhile has the header timeout from now.
    fn wrote(&self) {
        let now = self.now_ms();
        self.idle_since_ms.store(now, Ordering::Relaxed);
        if self.head_since_ms.load(Ordering::Relaxed) != NONE {
            // Not a plain store: `begin` may have ended the head meanwhile.
            let _ =
                self.head_since_ms
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                        (since != NONE).then_some(now)
                    });
        }
    }

    /// Bytes came from the client: the start of a request head when no
    /// request is being answered. (Bytes that come while one is, are taken
    /// for its body: a head sent then has the idle timeout to arrive.)
    fn received(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let now = self.now_ms();
            let began = self
                .head_since_ms
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            let deadline = now.saturating_add(self.header_ms);
            if began && deadline < self.watch_wakes_ms.load(Ordering::Relaxed) {
                self.head_began.notify_one();
            }
        }
    }

    /// When, in milliseconds since `epoch`, the connection is to be closed
    /// as things stand, and why; `None` while it answers a request.
    fn closes_at(&self, limits: &Limits) -> Option<(u64, Close)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        let idle_since = self.idle_since_ms.load(Ordering::Relaxed);
        let served = self.served.load(Ordering::Relaxed);
        let mut at = idle_since.saturating_add(ms(limits.idle_timeout));
        if !served {
            at = at.min(idle_since.saturating_add(ms(limits.header_timeout)));
        }
        let mut close = (at, if served { Close::Idle } else { Close::Stalled });
        let head_since = self.head_since_ms.load(Ordering::Relaxed);
        if head_since != NONE && !self.http2.load(Ordering::Relaxed) {
            let at = head_since.saturating_add(ms(limits.header_timeout));
            if at < close.0 {
                close = (at, Close::Stalled);
            }
        }
        Some(close)
    }
}

/// Returns when [`Activity::closes_at`] says the connection of `activity`
/// is to close, with why.
async fn watch(activity: &Activity, limits: Limits) -> Close {
    loop {
        let now = activity.now_ms();
        let wait = match activity.closes_at(&limits) {
            Some((at, close)) if at <= now => return close,
            Some((at, _)) => Duration::from_millis(at - now),
            // Answering: look again when a request that ends now would
            // have used up the shorter timeout.
            None => limits.header_timeout.min(limits.idle_timeout),
        };
        let wakes = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        activity.watch_wakes_ms.store(wakes, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = activity.head_began.notified() => {}
        }
    }
}

/// A client's stream, telling its connection's [`Activity`] when bytes come
/// and go.
struct Watched {
    stream: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self, epoch: Instant, header_timeout: Duration) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NONE),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            epoch,
            evict: Notify::new(),
            head_began: Notify::new(),
            watch_wakes_ms: AtomicU64::new(u64::MAX),
            header_ms: u64::try_from(header_timeout.as_millis()).unwrap_or(u64::MAX / 2),
        });
        activity.touch();
        self.lock().insert(id, Arc::clone(&activity));
        (id, activity)
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
        self.closed.notify_waiters();
    }

    /// Closes the connection idle longest, if one is idle; returns whether
    /// one was.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .filter(|(_, a)| a.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, a)| a.idle_since_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(activity) => {
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Whether an `accept` error means the process or system is out of
/// descriptors or memory for sockets: closing a connection may help.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The service's shutdown, as the open connections see it.
pub(crate) struct Drain(tokio::sync::watch::Sender<bool>);

impl Drain {
    pub(crate) fn new() -> Drain {
        Drain(tokio::sync::watch::Sender::new(false))
    }

    /// Tells every open connection to finish the requests it is answering
    /// and close, and returns when all have closed.
    pub(crate) async fn close_all(&self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

/// Serves `handle` on `listener` until `stop` resolves, within `limits`;
/// connections still open then close when `drain` says.
pub(crate) async fn accept_loop<H, F, B>(
    listener: &tokio::net::TcpListener,
    limits: Limits,
    drain: &Drain,
    handle: H,
    stop: impl Future<Output = ()>,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    // The header and idle timeouts are the watch's (see the module's doc).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let registry = Arc::new(Registry::default());
    let epoch = Instant::now();
    let mut backoff = Backoff::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.reset();
                    stream
                }
                Err(error) => {
                    if out_of_descriptors(&error) {
                        registry.evict_oldest_idle();
                    }
                    backoff.failed(&error).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        // At the cap, make room for it: close the connection idle longest,
        // or wait for one to close or go idle. (Room is made after the
        // accept, so a connection is never evicted before it could send its
        // request.)
        loop {
            // Waiting for a close before looking, so that none is missed.
            let closed = registry.closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if registry.len() < limits.max_connections || registry.evict_oldest_idle() {
                break;
            }
            tokio::select! {
                () = closed => {}
                () = tokio::time::sleep(limits.header_timeout.min(Duration::from_secs(1))) => {}
                () = &mut stop => return,
            }
        }
        let (id, activity) = registry.open(epoch, limits.header_timeout);
        let service = {
            let activity = Arc::clone(&activity);
            let handle = handle.clone();
            hyper::service::service_fn(move |request| {
                let activity = Arc::clone(&activity);
                let handle = handle.clone();
                async move {
                    let _answering = activity.begin(request.version());
                    Ok::<_, std::convert::Infallible>(handle(request).await)
                }
            })
        };
        let stream = Watched {
            stream,
            activity: Arc::clone(&activity),
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let registry = Arc::clone(&registry);
        let mut draining = drain.0.subscribe();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // Dropping the connection closes its socket.
            let graceful = tokio::select! {
                _ = connection.as_mut() => false,
                () = activity.evict.notified() => false,
                close = watch(&activity, limits) => close == Close::Idle,
                _ = draining.wait_for(|draining| *draining) => true,
            };
            if graceful {
                // hyper closes an idle HTTP/1 connection at once; HTTP/2
                // sends GOAWAY and answers the streams the client opened
                // before it. A client that keeps the connection open
                // without a request is dropped after `GRACE`.
                connection.as_mut().graceful_shutdown();
                activity.touch();
                let grace = Limits {
                    header_timeout: GRACE.min(limits.header_timeout),
                    idle_timeout: GRACE,
                    ..limits
                };
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = activity.evict.notified() => {}
                    _ = watch(&activity, grace) => {}
                }
            }
            registry.close(id);
            drop(draining);
        });
    }
}

/// The wait after a failed `accept`: growing from 5 ms to 1 s while `accept`
/// keeps failing, so a process out of descriptors does not spin; and at most
/// one warning a second, with how many failures it stands for.
struct Backoff {
    delay: Duration,
    failures: u64,
    warned: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            delay: Backoff::FIRST,
            failures: 0,
            warned: None,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MOST: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.delay = Backoff::FIRST;
    }

    async fn failed(&mut self, error: &std::io::Error) {
        self.failures += 1;
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                "accepting a connection failed: {error} ({} time(s) since the last \
                 warning); retrying in {:?}",
                self.failures,
                self.delay
            );
            self.failures = 0;
            self.warned = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Backoff::MOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_idle_longest_is_evicted_and_busy_ones_never() {
        let registry = Registry::default();
        let epoch = Instant::now() - Duration::from_secs(10);
        let (old, old_activity) = registry.open(epoch, Duration::from_secs(10));
        old_activity.idle_since_ms.store(1_000, Ordering::Relaxed);
        let (_, busy) = registry.open(epoch, Duration::from_secs(10));
        busy.idle_since_ms.store(0, Ordering::Relaxed);
        busy.in_flight.store(1, Ordering::Relaxed);
        // Opened long ago, but writing to its client just now.
        let (writing, writing_activity) = registry.open(epoch, Duration::from_secs(10));
        writing_activity.idle_since_ms.store(0, Ordering::Relaxed);
        writing_activity.wrote();
        // Idle since after `old`, before the write.
        let (quieter, quieter_activity) = registry.open(epoch, Duration::from_secs(10));
        quieter_activity
            .idle_since_ms
            .store(5_000, Ordering::Relaxed);
        assert!(registry.evict_oldest_idle());
        assert!(!registry.lock().contains_key(&old));
        assert!(registry.evict_oldest_idle());
        assert!(!registry.lock().contains_key(&quieter));
        assert!(
            registry.lock().contains_key(&writing),
            "evicted before a quieter one"
        );
        assert!(registry.evict_oldest_idle());
        assert!(!registry.evict_oldest_idle(), "only the busy one is left");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_connection_closes_at_the_first_timeout_that_applies_to_it() {
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
        };
        let registry = Registry::default();
        let (_, activity) = registry.open(
            Instant::now() - Duration::from_secs(100),
            limits.header_timeout,
        );
        activity.idle_since_ms.store(1_000, Ordering::Relaxed);
        // Connected, nothing asked yet: the header timeout.
        assert_eq!(activity.closes_at(&limits), Some((11_000, Close::Stalled)));
        activity.received();
        let answering = activity.begin(hyper::Version::HTTP_11);
        assert_eq!(activity.closes_at(&limits), None, "answering");
        // Bytes while answering are the request's body, not a new head.
        activity.received();
        drop(answering);
        let idle = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.closes_at(&limits),
            Some((idle + 75_000, Close::Idle))
        );
        // A new head began: it has the header timeout to arrive.
        activity
            .head_since_ms
            .store(idle + 5_000, Ordering::Relaxed);
        assert_eq!(
            activity.closes_at(&limits),
            Some((idle + 15_000, Close::Stalled))
        );
        // Writing to the client is not idle; a head that began while an
        // answer was written (long ago here) has the header timeout from
        // the last write, as hyper reads it only then.
        activity.head_since_ms.store(2_000, Ordering::Relaxed);
        activity.wrote();
        let wrote = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.closes_at(&limits),
            Some((wrote + 10_000, Close::Stalled))
        );
        activity.head_since_ms.store(NONE, Ordering::Relaxed);
        activity.wrote();
        assert_eq!(activity.head_since_ms.load(Ordering::Relaxed), NONE);
        // HTTP/2 sends frames that are not requests: only idleness counts.
        drop(activity.begin(hyper::Version::HTTP_2));
        activity
            .head_since_ms
            .store(idle + 5_000, Ordering::Relaxed);
        let idle = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.closes_at(&limits),
            Some((idle + 75_000, Close::Idle))
        );
    }

    #[test]
    fn descriptor_exhaustion_is_told_apart_from_other_failures() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
