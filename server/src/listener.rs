//! The accept loop: connections are capped, slow ones time out, and an
//! `accept` that fails (the process is out of file descriptors) backs off
//! instead of spinning.
//!
//! At the cap, or when `accept` fails for want of a descriptor, the
//! connection that has been idle longest (no request being answered) is
//! closed to make room, so a flood of connections that send nothing cannot
//! keep a client that does from being served. A connection that does not
//! send its request head within the header timeout is closed by hyper.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// When it last finished a request or opened, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Told to close.
    evict: Notify,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, Ordering::Relaxed);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self, epoch: Instant) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch,
            evict: Notify::new(),
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

/// Serves `handle` on `listener` until `stop` resolves, within `limits`;
/// connections still open then are left to `graceful`.
pub(crate) async fn accept_loop<H, F, B>(
    listener: &tokio::net::TcpListener,
    limits: Limits,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    handle: H,
    stop: impl Future<Output = ()>,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's header timeout needs a timer; without one it is off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let registry = Arc::new(Registry::default());
    let epoch = Instant::now();
    let mut backoff = Backoff::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        // At the cap, make room: close the connection idle longest, or wait
        // for one to close when all are answering requests.
        while registry.len() >= limits.max_connections && !registry.evict_oldest_idle() {
            tokio::select! {
                () = registry.closed.notified() => {}
                () = &mut stop => return,
            }
        }
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
        let (id, activity) = registry.open(epoch);
        let service = {
            let activity = Arc::clone(&activity);
            let handle = handle.clone();
            hyper::service::service_fn(move |request| {
                let activity = Arc::clone(&activity);
                let handle = handle.clone();
                async move {
                    activity.in_flight.fetch_add(1, Ordering::Relaxed);
                    let response = handle(request).await;
                    activity.in_flight.fetch_sub(1, Ordering::Relaxed);
                    activity.touch();
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            // Dropping the connection closes its socket.
            tokio::select! {
                _ = connection => {}
                () = activity.evict.notified() => {}
            }
            registry.close(id);
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
        let (old, old_activity) = registry.open(epoch);
        old_activity.idle_since_ms.store(1_000, Ordering::Relaxed);
        let (_, busy) = registry.open(epoch);
        busy.idle_since_ms.store(0, Ordering::Relaxed);
        busy.in_flight.store(1, Ordering::Relaxed);
        let (_, _recent) = registry.open(epoch);
        assert!(registry.evict_oldest_idle());
        assert!(!registry.lock().contains_key(&old));
        assert!(registry.evict_oldest_idle());
        assert!(!registry.evict_oldest_idle(), "only the busy one is left");
        assert_eq!(registry.len(), 1);
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
