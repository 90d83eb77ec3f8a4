//! Name resolution for outbound requests. The host resolves a name once per
//! connection, checks every address it gets, and hands the client only the
//! addresses it allowed, so the address connected to is the address checked
//! (no DNS rebinding between the check and the connection).
//!
//! An internal address (see [`crate::ssrf`]) is allowed only when an IP or
//! CIDR grant that allows the request itself names it; which grants those are
//! depends on the request, so the gate finds them and the client it sends
//! through resolves with just those ([`GuardedResolver`]).
//!
//! A lookup through the system's resolver cannot be cancelled: one whose
//! name server never answers holds a thread of the blocking pool until the
//! resolver gives up (seconds to tens of seconds, per `resolv.conf`), long
//! after the call that asked has ended. The store's file writes and every
//! compile need that pool too, so lookups are bounded twice: host-wide
//! ([`SYSTEM_LOOKUPS`]) and per action name, across its versions
//! ([`ACTION_LOOKUPS`], so one action asking for names nobody answers holds
//! at most an eighth of the host's slots). Both bounds count a lookup until
//! it ends, not until its caller stops waiting.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::policy::Grant;
use crate::ssrf;

/// Looks up the addresses of a host name. The host's default asks the
/// system's resolver; an application (or a test) may give the host its own,
/// through [`HostConfig::resolver`](crate::HostConfig::resolver). Whatever it
/// answers, every address is checked before the host connects to it.
pub trait Resolve: Send + Sync {
    /// The addresses `name` resolves to.
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// A shared [`Resolve`]; the system's resolver by default.
#[derive(Clone)]
pub struct Resolver(Arc<dyn Resolve>);

impl Resolver {
    /// A resolver that asks `resolve`.
    pub fn new(resolve: impl Resolve + 'static) -> Resolver {
        Resolver(Arc::new(resolve))
    }
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(System::new(SYSTEM_LOOKUPS, system_lookup))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// The most lookups through the system's resolver in flight at once, for
/// one [`Resolver::default`]: an eighth of tokio's blocking pool.
const SYSTEM_LOOKUPS: usize = 64;

/// The most lookups one action may have in flight at once, whatever its
/// resolver; enough for a burst of new connections, few enough that eight
/// actions share the system's bound.
pub(crate) const ACTION_LOOKUPS: usize = 8;

/// The system's resolver (getaddrinfo) on the blocking pool, at most
/// `slots` lookups at once.
struct System {
    slots: Arc<Semaphore>,
    lookup: fn(&str) -> std::io::Result<Vec<IpAddr>>,
}

impl System {
    fn new(slots: usize, lookup: fn(&str) -> std::io::Result<Vec<IpAddr>>) -> System {
        System {
            slots: Arc::new(Semaphore::new(slots)),
            lookup,
        }
    }
}

impl Resolve for System {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            let slot = Arc::clone(&self.slots)
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let (name, lookup) = (name.to_owned(), self.lookup);
            // The slot goes with the lookup, which runs to its end whether
            // or not anyone still waits for it.
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                lookup(&name)
            })
            .await
            .map_err(std::io::Error::other)?
        })
    }
}

/// getaddrinfo, for addresses of any family.
fn system_lookup(name: &str) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs as _;
    Ok((name, 0)
        .to_socket_addrs()?
        .map(|address| address.ip())
        .collect())
}

/// The addresses of `host` (resolved to `resolved`) a request may connect
/// to: the public ones, and the internal ones one of `exempt` names. Or why
/// none is left.
pub(crate) fn allowed_addresses(
    host: &str,
    resolved: &[IpAddr],
    exempt: &[Grant],
) -> Result<Vec<IpAddr>, String> {
    let mut refusals = Vec::new();
    let allowed: Vec<IpAddr> = resolved
        .iter()
        .copied()
        .filter(|&ip| match ssrf::internal_reason(ip) {
            None => true,
            Some(_) if exempt.iter().any(|grant| grant.names_ip(ip)) => true,
            Some(reason) => {
                refusals.push(format!("{ip} ({reason})"));
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        if refusals.is_empty() {
            return Err(format!("`{host}` resolves to no address"));
        }
        return Err(format!(
            "`{host}` resolves to {}; only an IP or CIDR grant naming that address, with this \
             request's scheme, port, method and path, allows it",
            refusals.join(", ")
        ));
    }
    Ok(allowed)
}

/// The refusal of a name none of whose addresses a request may reach.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The client's resolver: resolves with the host's [`Resolver`] and keeps the
/// addresses [`allowed_addresses`] allows, with `exempt` the IP and CIDR
/// grants that allow the requests this client sends. `lookups` is the
/// action's bound on lookups in flight, shared by all its clients.
pub(crate) struct GuardedResolver {
    pub(crate) resolver: Resolver,
    pub(crate) exempt: Vec<Grant>,
    pub(crate) lookups: Arc<Semaphore>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let resolver = self.resolver.clone();
        let exempt = self.exempt.clone();
        let lookups = Arc::clone(&self.lookups);
        Box::pin(async move {
            let slot = lookups.acquire_owned().await?;
            // A task of its own holds the action's slot until the lookup
            // ends, even if the request that asked is dropped first.
            let (host, resolved) = tokio::spawn(async move {
                let _slot = slot;
                let resolved = resolver.0.resolve(&host).await;
                (host, resolved)
            })
            .await?;
            let resolved = resolved?;
            let allowed = allowed_addresses(&host, &resolved, &exempt).map_err(|why| {
                Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>
            })?;
            let addresses = allowed.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addresses) as reqwest::dns::Addrs)
        })
    }
}

/// For tests: a resolver whose names no server answers until `answer` is
/// notified (then `8.8.4.4`), counting the lookups waiting on it.
#[cfg(test)]
pub(crate) struct Silent {
    pub(crate) waiting: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) answer: Arc<tokio::sync::Notify>,
}

#[cfg(test)]
impl Resolve for Silent {
    fn resolve<'a>(
        &'a self,
        _name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.waiting.fetch_add(1, SeqCst);
            self.answer.notified().await;
            self.waiting.fetch_sub(1, SeqCst);
            Ok(vec![IpAddr::from([8, 8, 4, 4])])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(texts: &[&str]) -> Vec<IpAddr> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn public_answers_stay_and_internal_ones_go() {
        let allowed =
            allowed_addresses("mixed.example", &ips(&["8.8.8.8", "10.0.0.1", "::1"]), &[]).unwrap();
        assert_eq!(allowed, ips(&["8.8.8.8"]));
    }

    #[test]
    fn an_internal_answer_stays_only_for_a_grant_that_names_it() {
        let exempt = [Grant::parse("http://[10.0.0.0/8]:8080").unwrap()];
        let resolved = ips(&["10.1.2.3", "192.168.1.1"]);
        let allowed = allowed_addresses("svc.internal", &resolved, &exempt).unwrap();
        assert_eq!(allowed, ips(&["10.1.2.3"]));
        let why = allowed_addresses("svc.internal", &ips(&["192.168.1.1"]), &exempt).unwrap_err();
        assert!(
            why.starts_with("`svc.internal` resolves to 192.168.1.1 (a private address)"),
            "{why}"
        );
        assert!(
            allowed_addresses("empty.example", &[], &exempt)
                .unwrap_err()
                .contains("resolves to no address")
        );
    }

    /// A gate the test lookups wait at, with how many wait there now and the
    /// most that ever did.
    #[derive(Default)]
    struct Stall {
        open: std::sync::Mutex<bool>,
        opened: std::sync::Condvar,
        waiting: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl Stall {
        fn enter(&self) {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.waiting.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
        }

        /// Blocks this thread until the gate opens, like a name server that
        /// does not answer.
        fn wait(&self) {
            self.enter();
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }

        fn waiting(&self) -> usize {
            self.waiting.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn most(&self) -> usize {
            self.most.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    static UNANSWERED: std::sync::LazyLock<Stall> = std::sync::LazyLock::new(Stall::default);

    fn unanswered_lookup(_name: &str) -> std::io::Result<Vec<IpAddr>> {
        UNANSWERED.wait();
        Ok(ips(&["192.0.2.1"]))
    }

    /// Gives up on a lookup after a moment, as a call's deadline does.
    async fn impatient<T>(lookup: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(std::time::Duration::from_millis(50), lookup)
            .await
            .ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn system_lookups_that_never_end_hold_only_their_slots() {
        let system = System::new(3, unanswered_lookup);
        for n in 0..10 {
            assert!(
                impatient(system.resolve(&format!("n{n}.example")))
                    .await
                    .is_none()
            );
        }
        // Abandoned lookups keep their threads (getaddrinfo cannot be
        // stopped) and their slots, so no more threads are taken.
        assert_eq!(UNANSWERED.waiting(), 3);
        assert_eq!(UNANSWERED.most(), 3);
        UNANSWERED.open();
        let found = system.resolve("late.example").await.unwrap();
        assert_eq!(found, ips(&["192.0.2.1"]));
        assert_eq!(UNANSWERED.most(), 3);
    }

    #[tokio::test]
    async fn an_action_has_its_own_bound_on_lookups_even_after_giving_up() {
        use reqwest::dns::Resolve as _;
        use std::sync::atomic::Ordering::SeqCst;
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answer = Arc::new(tokio::sync::Notify::new());
        let guarded = GuardedResolver {
            resolver: Resolver::new(Silent {
                waiting: Arc::clone(&waiting),
                answer: Arc::clone(&answer),
            }),
            exempt: Vec::new(),
            lookups: Arc::new(Semaphore::new(ACTION_LOOKUPS)),
        };
        for n in 0..3 * ACTION_LOOKUPS {
            let name = format!("n{n}.example").parse().unwrap();
            assert!(impatient(guarded.resolve(name)).await.is_none());
        }
        assert_eq!(waiting.load(SeqCst), ACTION_LOOKUPS);
        // Another action's resolver is not held up by this one's.
        let other = GuardedResolver {
            lookups: Arc::new(Semaphore::new(ACTION_LOOKUPS)),
            ..guarded
        };
        assert!(
            impatient(other.resolve("other.example".parse().unwrap()))
                .await
                .is_none()
        );
        assert_eq!(waiting.load(SeqCst), ACTION_LOOKUPS + 1);
        answer.notify_waiters();
        tokio::task::yield_now().await;
        let lookup = tokio::spawn(other.resolve("again.example".parse().unwrap()));
        while waiting.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        answer.notify_waiters();
        let found: Vec<SocketAddr> = lookup.await.unwrap().unwrap().collect();
        assert_eq!(found, vec!["8.8.4.4:0".parse().unwrap()]);
    }
}
