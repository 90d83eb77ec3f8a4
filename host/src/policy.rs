//! Grants: the destinations an operator allows an action to call, parsed once
//! into types and asked with [`Grant::allows`]. Deny by default: the manifest's
//! `hosts` only informs the operator; a request needs a grant.
//!
//! A grant is `[METHOD[,METHOD...] ]scheme://host[:port][/path-prefix]`:
//!
//! - scheme: `http` or `https`; the port defaults to the scheme's (80, 443);
//! - host: a name (`api.shop.example`), a wildcard suffix (`*.shop.example`,
//!   which matches subdomains only), an IP address (`127.0.0.1`, `[::1]`) or a
//!   CIDR in brackets (`[10.0.0.0/8]`, `[fd00::/8]`);
//! - path prefix: matches whole segments (`/orders` allows `/orders` and
//!   `/orders/42`, not `/orders-admin`);
//! - methods: any when omitted, except `TRACE` and `CONNECT`, which only a
//!   grant that names them allows.
//!
//! Names and wildcards never allow private, loopback or other internal
//! addresses (see [`crate::ssrf`]); only a grant that names the IP or CIDR
//! does, and only for the requests it allows itself: a name that resolves to
//! an internal address needs an IP or CIDR grant with the request's scheme,
//! port, method and path.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use url::Url;

use crate::log::clip;

/// Methods a grant allows only when it names them: `TRACE` has the server echo
/// the request back (secret headers included), `CONNECT` opens a tunnel.
pub(crate) const NAMED_ONLY: [&str; 2] = ["TRACE", "CONNECT"];

/// A parsed grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    text: String,
    methods: Option<Vec<String>>,
    https: bool,
    host: HostPattern,
    port: u16,
    /// Without a trailing slash; empty for "everything".
    path_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.shop.example` is stored as `.shop.example`.
    Suffix(String),
    Ip(IpAddr),
    Cidr(IpNet),
}

/// Why a grant could not be parsed, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid grant `{grant}`: {why}")]
pub struct GrantError {
    grant: String,
    why: String,
}

/// Where a request goes, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Destination {
    pub(crate) method: String,
    pub(crate) url: Url,
}

impl Destination {
    /// Parses a request's method and URL. The URL parser normalizes what could
    /// disguise a destination: host case, IDNA, IPv4 written in decimal, hex,
    /// octal or short forms, and `.`/`..` path segments.
    pub fn parse(method: &str, url: &str) -> Result<Destination, String> {
        let method = method.trim();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("invalid method `{}`", clip(method)));
        }
        let url = Url::parse(url).map_err(|e| format!("invalid URL `{}`: {e}", clip(url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "unsupported scheme `{}`: use http or https",
                clip(url.scheme())
            ));
        }
        if url.host().is_none() {
            return Err(format!("URL `{}` has no host", clip(url.as_str())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "URLs with credentials are refused: send them in a header with {{secret:NAME}}"
                    .into(),
            );
        }
        Ok(Destination {
            method: method.to_ascii_uppercase(),
            url,
        })
    }

    /// The destination's IP address when the URL names one.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        }
    }

    fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(0)
    }
}

impl fmt::Display for Destination {
    /// The method and URL as messages show them: a long URL is cut (the
    /// action wrote it, and messages are kept in the host's memory).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", clip(&self.method), clip(self.url.as_str()))
    }
}

impl Grant {
    /// Parses a grant, or says how to fix it.
    pub fn parse(text: &str) -> Result<Grant, GrantError> {
        let fail = |why: &str| GrantError {
            grant: text.to_owned(),
            why: why.to_owned(),
        };
        let trimmed = text.trim();
        let (methods, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((methods, rest)) => (
                Some(parse_methods(methods).map_err(|why| fail(&why))?),
                rest.trim(),
            ),
            None => (None, trimmed),
        };
        let (https, rest) = if let Some(rest) = rest.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = rest.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(fail(
                "start with http:// or https://, for example https://api.example.com",
            ));
        };
        if rest.contains(['?', '#', '@']) {
            return Err(fail(
                "a grant has no query, fragment or credentials: write scheme://host[:port][/path]",
            ));
        }
        // A bracketed host may hold a CIDR's '/', so look for the path after it.
        let authority_end = match rest.strip_prefix('[') {
            Some(inner) => inner
                .find(']')
                .map(|close| close + 2)
                .ok_or_else(|| fail("unclosed `[` in the host"))?,
            None => 0,
        };
        let path_start = rest[authority_end..]
            .find('/')
            .map_or(rest.len(), |i| i + authority_end);
        let (authority, path) = rest.split_at(path_start);
        let (host, port) = split_port(authority).map_err(|why| fail(&why))?;
        let host = parse_host(host).map_err(|why| fail(&why))?;
        let port = match port {
            Some(port) => port,
            None if https => 443,
            None => 80,
        };
        if path.contains("/./")
            || path.contains("/../")
            || path.ends_with("/..")
            || path.contains('%')
        {
            return Err(fail(
                "write the path prefix plainly, without `.`/`..` segments or %-escapes",
            ));
        }
        Ok(Grant {
            text: trimmed.to_owned(),
            methods,
            https,
            host,
            port,
            path_prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The grant as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this grant allows the request.
    pub fn allows(&self, destination: &Destination) -> bool {
        self.allows_but_host(destination) && self.allows_host(&destination.url)
    }

    /// Whether this grant would allow the request if the request went to one
    /// of its hosts: the scheme, port, method and path match.
    pub(crate) fn allows_but_host(&self, destination: &Destination) -> bool {
        let url = &destination.url;
        let scheme_ok = (url.scheme() == "https") == self.https;
        let method_ok = match &self.methods {
            Some(methods) => methods.contains(&destination.method),
            None => !NAMED_ONLY.contains(&destination.method.as_str()),
        };
        scheme_ok && method_ok && destination.port() == self.port && self.allows_path(url.path())
    }

    /// Whether this grant names addresses (an IP or a CIDR) rather than names.
    pub(crate) fn names_addresses(&self) -> bool {
        matches!(self.host, HostPattern::Ip(_) | HostPattern::Cidr(_))
    }

    /// Whether this grant names `ip` explicitly, as an address or a CIDR.
    pub(crate) fn names_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match &self.host {
            HostPattern::Ip(granted) => granted.to_canonical() == ip,
            HostPattern::Cidr(net) => net.contains(&ip),
            HostPattern::Name(_) | HostPattern::Suffix(_) => false,
        }
    }

    fn allows_host(&self, url: &Url) -> bool {
        match (&self.host, url.host()) {
            (HostPattern::Name(name), Some(url::Host::Domain(host))) => host == name,
            (HostPattern::Suffix(suffix), Some(url::Host::Domain(host))) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            (HostPattern::Ip(_) | HostPattern::Cidr(_), Some(url::Host::Ipv4(ip))) => {
                self.names_ip(IpAddr::V4(ip))
            }
            (HostPattern::Ip(_) | HostPattern::Cidr(_), Some(url::Host::Ipv6(ip))) => {
                self.names_ip(IpAddr::V6(ip))
            }
            _ => false,
        }
    }

    fn allows_path(&self, path: &str) -> bool {
        match path.strip_prefix(self.path_prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

fn parse_methods(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(|method| {
            let method = method.trim();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!(
                    "`{method}` is not an HTTP method; list methods like `GET,POST` before the URL"
                ));
            }
            Ok(method.to_ascii_uppercase())
        })
        .collect()
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').unwrap_or(authority.len() - 1);
        let (host, rest) = authority.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err("unexpected text after `]`".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => {
                return Err(format!(
                    "`{port}` is not a port: use a number from 1 to 65535"
                ));
            }
        },
    };
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.contains('/') {
            let net: IpNet = inner
                .parse()
                .map_err(|_| format!("`{inner}` is not a CIDR such as 10.0.0.0/8 or fd00::/8"))?;
            return Ok(HostPattern::Cidr(net.trunc()));
        }
        let ip: IpAddr = inner
            .parse()
            .map_err(|_| format!("`{inner}` is not an IPv6 address"))?;
        return Ok(HostPattern::Ip(ip));
    }
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let host = host.to_ascii_lowercase();
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') || host.starts_with("0x") {
        return host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| HostPattern::Ip(IpAddr::V4(ip)))
            .map_err(|_| {
                format!(
                    "`{host}` is not an IPv4 address: write four decimal numbers, such as 127.0.0.1"
                )
            });
    }
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(suffix) => (HostPattern::Suffix(format!(".{suffix}")), suffix),
        None => (HostPattern::Name(host.clone()), host.as_str()),
    };
    if name.contains('*') {
        return Err("wildcards are allowed only as a leading `*.`, as in *.example.com".into());
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok || name.len() > 253 {
        return Err(format!(
            "`{name}` is not a host name (use ASCII or punycode labels separated by dots)"
        ));
    }
    if matches!(pattern, HostPattern::Suffix(_)) && !name.contains('.') {
        return Err(format!(
            "`*.{name}` is too broad: a wildcard needs at least two labels after it"
        ));
    }
    Ok(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> Grant {
        Grant::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn allows(grant_text: &str, method: &str, url: &str) -> bool {
        grant(grant_text).allows(&Destination::parse(method, url).unwrap())
    }

    #[test]
    fn an_exact_host_allows_only_itself() {
        assert!(allows(
            "https://api.shop.example",
            "GET",
            "https://api.shop.example/orders"
        ));
        assert!(allows(
            "https://api.shop.example",
            "GET",
            "https://API.Shop.Example/orders"
        ));
        assert!(!allows(
            "https://api.shop.example",
            "GET",
            "https://evil.example/orders"
        ));
        assert!(!allows(
            "https://api.shop.example",
            "GET",
            "https://api.shop.example.evil.example/"
        ));
    }

    #[test]
    fn the_scheme_must_match() {
        assert!(!allows(
            "https://api.shop.example",
            "GET",
            "http://api.shop.example/"
        ));
        assert!(!allows(
            "http://api.shop.example",
            "GET",
            "https://api.shop.example/"
        ));
    }

    #[test]
    fn the_port_defaults_to_the_schemes() {
        assert!(allows(
            "https://api.shop.example",
            "GET",
            "https://api.shop.example:443/"
        ));
        assert!(!allows(
            "https://api.shop.example",
            "GET",
            "https://api.shop.example:8443/"
        ));
        assert!(allows(
            "http://api.shop.example:8080",
            "GET",
            "http://api.shop.example:8080/"
        ));
        assert!(!allows(
            "http://api.shop.example:8080",
            "GET",
            "http://api.shop.example/"
        ));
    }

    #[test]
    fn the_path_prefix_matches_whole_segments() {
        let g = "https://api.shop.example/orders/";
        assert!(allows(g, "GET", "https://api.shop.example/orders"));
        assert!(allows(g, "GET", "https://api.shop.example/orders/42?x=1"));
        assert!(!allows(g, "GET", "https://api.shop.example/orders-admin"));
        assert!(!allows(g, "GET", "https://api.shop.example/"));
        // Dot segments are resolved before matching, encoded or not.
        assert!(!allows(
            g,
            "GET",
            "https://api.shop.example/orders/../admin"
        ));
        assert!(!allows(
            g,
            "GET",
            "https://api.shop.example/orders/%2e%2e/admin"
        ));
    }

    #[test]
    fn methods_are_limited_when_listed() {
        let g = "GET,post https://crm.example/leads";
        assert!(allows(g, "GET", "https://crm.example/leads"));
        assert!(allows(g, "POST", "https://crm.example/leads"));
        assert!(allows(g, "post", "https://crm.example/leads"));
        assert!(!allows(g, "DELETE", "https://crm.example/leads"));
        assert!(allows(
            "https://crm.example",
            "DELETE",
            "https://crm.example/leads"
        ));
    }

    #[test]
    fn trace_and_connect_need_a_grant_that_names_them() {
        for method in ["TRACE", "trace", "CONNECT"] {
            assert!(!allows(
                "https://crm.example",
                method,
                "https://crm.example/"
            ));
        }
        assert!(allows(
            "TRACE https://crm.example",
            "TRACE",
            "https://crm.example/"
        ));
        assert!(allows(
            "https://crm.example",
            "PATCH",
            "https://crm.example/"
        ));
    }

    #[test]
    fn a_wildcard_allows_subdomains_only() {
        let g = "https://*.shop.example";
        assert!(allows(g, "GET", "https://api.shop.example/"));
        assert!(allows(g, "GET", "https://a.b.shop.example/"));
        assert!(!allows(g, "GET", "https://shop.example/"));
        assert!(!allows(g, "GET", "https://evilshop.example/"));
    }

    #[test]
    fn ip_and_cidr_grants_match_addresses_in_any_encoding() {
        assert!(allows(
            "http://127.0.0.1:8080",
            "GET",
            "http://127.0.0.1:8080/"
        ));
        assert!(allows(
            "http://127.0.0.1:8080",
            "GET",
            "http://2130706433:8080/"
        ));
        assert!(allows(
            "http://127.0.0.1:8080",
            "GET",
            "http://[::ffff:127.0.0.1]:8080/"
        ));
        assert!(allows("http://[::1]:8080", "GET", "http://[::1]:8080/"));
        assert!(allows("http://[10.0.0.0/8]", "GET", "http://10.1.2.3/"));
        assert!(!allows("http://[10.0.0.0/8]", "GET", "http://11.1.2.3/"));
        assert!(!allows("http://127.0.0.1", "GET", "http://localhost/"));
    }

    #[test]
    fn names_ip_is_true_only_for_ip_and_cidr_grants() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(grant("http://[10.0.0.0/8]").names_ip(ip));
        assert!(grant("http://10.1.2.3").names_ip(ip));
        assert!(!grant("http://internal.example").names_ip(ip));
    }

    #[test]
    fn bad_grants_say_how_to_fix_them() {
        let why = |text: &str| Grant::parse(text).unwrap_err().to_string();
        assert!(why("api.example.com").contains("start with http:// or https://"));
        assert!(why("ftp://api.example.com").contains("start with http:// or https://"));
        assert!(
            why("https://api.*.example").contains("wildcards are allowed only as a leading `*.`")
        );
        assert!(why("https://*.com").contains("too broad"));
        assert!(why("https://api.example.com:99999").contains("is not a port"));
        assert!(why("https://127.1").contains("write four decimal numbers"));
        assert!(why("https://[10.0.0.0/33]").contains("is not a CIDR"));
        assert!(why("G?T https://api.example.com").contains("is not an HTTP method"));
        assert!(why("https://user@api.example.com").contains("no query, fragment or credentials"));
        assert!(why("https://api.example.com/a/../b").contains("without `.`/`..` segments"));
        assert!(why("https://").contains("the host is missing"));
    }

    #[test]
    fn destinations_refuse_other_schemes_and_credentials() {
        assert!(
            Destination::parse("GET", "file:///etc/passwd")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(
            Destination::parse("GET", "https://u:p@api.example.com/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            Destination::parse("GE T", "https://api.example.com/")
                .unwrap_err()
                .contains("invalid method")
        );
        assert!(
            Destination::parse("GET", "not a url")
                .unwrap_err()
                .contains("invalid URL")
        );
    }
}
