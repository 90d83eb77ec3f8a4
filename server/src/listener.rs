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
//! timeout; or when a response it is sending has not been taken within the
//! idle timeout (a client that stops reading, or gives HTTP/2 no window).
//! hyper's own header timeout is off: it also ends idle keep-alive
//! connections, which must outlive a load balancer's idle timeout.
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
    /// How long a connection may stay open with no request to answer.
    pub(crate) idle_timeout: Duration,
    /// How long a client may take to take a response (the idle timeout,
    /// also while a connection closes gracefully).
    pub(crate) send_timeout: Duration,
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
    /// Responses being sent, oldest first.
    sending: Mutex<Sending>,
    /// When it last finished a request or opened, in milliseconds since `epoch`.
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
/// unless another is being answered or sent.
struct Answering(Arc<Activity>);

/// The responses a connection is sending: when each began, oldest first,
/// with the number that finds it again.
#[derive(Default)]
struct Sending {
    next: u64,
    began_ms: std::collections::VecDeque<(u64, u64)>,
}

/// A response being sent; removed from [`Sending`] when dropped.
struct Sent {
    activity: Arc<Activity>,
    number: u64,
}

impl Drop for Sent {
    fn drop(&mut self) {
        let mut sending = self.activity.lock_sending();
        if let Some(at) = sending.began_ms.iter().position(|(n, _)| *n == self.number) {
            sending.began_ms.remove(at);
        }
        drop(sending);
        self.activity.touch();
        // hyper reads an HTTP/1 client's next head only once this response
        // is written: bytes of it that came meanwhile have the header
        // timeout from now.
        let now = self.activity.now_ms();
        let _ = self.activity.head_since_ms.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |since| (since != NONE).then_some(now),
        );
    }
}

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
    /// Sent no request, or not a whole head, within the header timeout, or
    /// did not take a response within the idle timeout: dropped.
    Stalled,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A request reached the service; it is answered when the guard drops
    /// (also when hyper drops the answer unfinished, as for an HTTP/2 stream
    /// the client reset).
    fn begin(self: &Arc<Self>, version: hyper::Version) -> Answering {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NONE, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        if version == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        Answering(Arc::clone(self))
    }

    /// The request of `answering` has its response, which is being sent
    /// until the returned guard drops.
    fn sends(self: &Arc<Self>, answering: Answering) -> Sent {
        let now = self.now_ms();
        let mut sending = self.lock_sending();
        let number = sending.next;
        sending.next += 1;
        sending.began_ms.push_back((number, now));
        drop(sending);
        drop(answering);
        Sent {
            activity: Arc::clone(self),
            number,
        }
    }

    fn lock_sending(&self) -> std::sync::MutexGuard<'_, Sending> {
        self.sending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the oldest response being sent began, if one is.
    fn sending_since_ms(&self) -> Option<u64> {
        self.lock_sending().began_ms.front().map(|(_, at)| *at)
    }

    /// Since when the connection has done nothing for its client, for
    /// choosing which to evict: since it last finished a request, or since
    /// the oldest response it has not managed to send began. `None` while
    /// it answers a request or sends one begun within the header timeout.
    fn quiet_since_ms(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.sending_since_ms() {
            Some(began) if began.saturating_add(self.header_ms) > self.now_ms() => None,
            Some(began) => Some(began),
            None => Some(self.idle_since_ms.load(Ordering::Relaxed)),
        }
    }

    fn touch(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
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
        if let Some(began) = self.sending_since_ms() {
            return Some((
                began.saturating_add(ms(limits.send_timeout)),
                Close::Stalled,
            ));
        }
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

/// A response's body, holding its [`Sent`] until it is sent (or dropped): a
/// connection writing a large answer to a slow reader is not idle.
struct AnsweredBody<B> {
    body: B,
    _sent: Sent,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for AnsweredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client's stream, telling its connection's [`Activity`] when bytes come.
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
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
            sending: Mutex::default(),
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

    /// Closes the connection quiet longest (idle, or not taking a response
    /// it is sent), if one is; returns whether one was.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .filter_map(|(id, a)| Some((a.quiet_since_ms()?, *id)))
            .min()
            .map(|(_, id)| id);
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
        // At the cap, make room for it: close the connection quiet longest,
        // or wait for one to close or to have been quiet long enough. (Room
        // is made after the accept, so a connection is never evicted before
        // it could send its request.)
        while registry.len() >= limits.max_connections && !registry.evict_oldest_idle() {
            tokio::select! {
                () = registry.closed.notified() => {}
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
                    let answering = activity.begin(request.version());
                    let response = handle(request).await;
                    // Sending until the body is sent, not only its head.
                    let sent = activity.sends(answering);
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| AnsweredBody { body, _sent: sent }),
                    )
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
    fn the_connection_quiet_longest_is_evicted_and_busy_ones_never() {
        let registry = Registry::default();
        let epoch = Instant::now() - Duration::from_secs(100);
        let header_timeout = Duration::from_secs(10);
        let (old, old_activity) = registry.open(epoch, header_timeout);
        old_activity.idle_since_ms.store(1_000, Ordering::Relaxed);
        let (_, busy) = registry.open(epoch, header_timeout);
        busy.idle_since_ms.store(0, Ordering::Relaxed);
        busy.in_flight.store(1, Ordering::Relaxed);
        // A response not taken since before `old` went idle, and one just
        // begun, which is not evicted.
        let (stalled, stalled_activity) = registry.open(epoch, header_timeout);
        let _not_taken = stalled_activity.sends(stalled_activity.begin(hyper::Version::HTTP_2));
        stalled_activity.lock_sending().began_ms[0].1 = 500;
        let (_, sending) = registry.open(epoch, header_timeout);
        let _being_taken = sending.sends(sending.begin(hyper::Version::HTTP_11));
        let (_, _recent) = registry.open(epoch, header_timeout);
        assert!(registry.evict_oldest_idle());
        assert!(!registry.lock().contains_key(&stalled));
        assert!(registry.evict_oldest_idle());
        assert!(!registry.lock().contains_key(&old));
        assert!(registry.evict_oldest_idle());
        assert!(
            !registry.evict_oldest_idle(),
            "only the busy one and the one sending are left"
        );
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_connection_closes_at_the_first_timeout_that_applies_to_it() {
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(75),
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
        // A response being sent has the idle timeout to be taken.
        let body = AnsweredBody {
            body: http_body_util::Empty::<bytes::Bytes>::new(),
            _sent: activity.sends(activity.begin(hyper::Version::HTTP_11)),
        };
        let began = activity.now_ms();
        let (at, close) = activity.closes_at(&limits).unwrap();
        assert!((began..began + 100).contains(&(at - 75_000)), "{at}");
        assert_eq!(close, Close::Stalled);
        drop(body);
        assert_eq!(activity.closes_at(&limits).unwrap().1, Close::Idle);
        // A head that came while a response was sent (long ago here) has
        // the header timeout from when the response was done.
        let body = AnsweredBody {
            body: http_body_util::Empty::<bytes::Bytes>::new(),
            _sent: activity.sends(activity.begin(hyper::Version::HTTP_11)),
        };
        activity.received();
        activity.head_since_ms.store(2_000, Ordering::Relaxed);
        drop(body);
        let done = activity.now_ms();
        let (at, close) = activity.closes_at(&limits).unwrap();
        assert!((done..done + 100).contains(&(at - 10_000)), "{at}");
        assert_eq!(close, Close::Stalled);
        activity.head_since_ms.store(NONE, Ordering::Relaxed);
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
