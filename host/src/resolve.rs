//! Name resolution for outbound requests. The host resolves a name once per
//! connection, checks every address it gets, and hands the client only the
//! addresses it allowed, so the address connected to is the address checked
//! (no DNS rebinding between the check and the connection).
//!
//! An internal address (see [`crate::ssrf`]) is allowed only when an IP or
//! CIDR grant that allows the request itself names it; which grants those are
//! depends on the request, so the gate finds them and the client it sends
//! through resolves with just those ([`GuardedResolver`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

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
        Resolver::new(System)
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// The system's resolver (getaddrinfo), off the async workers.
struct System;

impl Resolve for System {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name, 0)).await?;
            Ok(found.map(|address| address.ip()).collect())
        })
    }
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
/// grants that allow the requests this client sends.
pub(crate) struct GuardedResolver {
    pub(crate) resolver: Resolver,
    pub(crate) exempt: Vec<Grant>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let resolver = self.resolver.clone();
        let exempt = self.exempt.clone();
        Box::pin(async move {
            let resolved = resolver.0.resolve(&host).await?;
            let allowed = allowed_addresses(&host, &resolved, &exempt).map_err(|why| {
                Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>
            })?;
            let addresses = allowed.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addresses) as reqwest::dns::Addrs)
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
}
