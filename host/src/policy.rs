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
        let plain = path.split('/').skip(1).enumerate().all(|(i, segment)| {
            let last = i + 2 == path.split('/').count();
            !matches!(segment, "." | "..") && (last || !segment.is_empty())
        });
        if !plain || path.contains(['%', ';', '\\']) {
            return Err(fail(
                "write the path prefix plainly, without `.`/`..` or empty segments, `;`, `\\` \
                 or %-escapes",
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
        if self.path_prefix.is_empty() {
            return true;
        }
        // A path a server could read as another path is not compared at all.
        if ambiguity(path).is_some() {
            return false;
        }
        match path.strip_prefix(self.path_prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Whether this grant lets requests reach `asked`, a destination as a
    /// manifest names it: an origin (`https://api.shop.example`) or a bare
    /// host name (read as `https://`). Only scheme, host and port count; a
    /// grant limited to some methods or a path still reaches the host.
    pub fn reaches(&self, asked: &str) -> bool {
        let asked = asked.trim();
        let url = if asked.contains("://") {
            asked.to_owned()
        } else {
            format!("https://{asked}")
        };
        let Ok(destination) = Destination::parse("GET", &url) else {
            return false;
        };
        (destination.url.scheme() == "https") == self.https
            && destination.port() == self.port
            && self.allows_host(&destination.url)
    }

    /// Whether this grant allows only paths under a prefix.
    pub(crate) fn has_path_prefix(&self) -> bool {
        !self.path_prefix.is_empty()
    }
}

/// Why a servers could read `path` (as the URL parser left it: `.` and `..`
/// segments resolved, `\\` turned into `/`) as another path, or `None`.
///
/// Servers differ in what they decode and strip before they route: some
/// decode `%2F` and `%5C` into separators, or decode twice; Tomcat and Jetty
/// drop `;parameters` from each segment, so `..;` is `..` to them; some
/// merge `//`; most stop at a NUL. A path where any of that would change
/// which segments it has cannot be checked against a prefix the way the
/// server will read it, so path-prefix grants refuse it.
pub(crate) fn ambiguity(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i + 1 < segments.len() {
            return Some("an empty segment (`//`)");
        }
        let once = percent_decode(segment.as_bytes());
        let twice = percent_decode(&once);
        for decoded in [&once, &twice] {
            if decoded.contains(&b'/') || decoded.contains(&b'\\') {
                return Some("an encoded `/` or `\\`");
            }
            if decoded.iter().any(|b| b.is_ascii_control()) {
                return Some("an encoded control character");
            }
            let before_parameters = decoded.split(|&b| b == b';').next().unwrap_or_default();
            if matches!(before_parameters, b"." | b"..") {
                return Some("a `.` or `..` segment in disguise (encoded, or with `;`)");
            }
        }
    }
    None
}

/// `bytes` with each `%XX` escape decoded; malformed escapes stay as they are.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
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
    fn paths_a_server_could_read_differently_pass_no_path_prefix() {
        let g = "https://api.shop.example/orders";
        for path in [
            "/orders/..;/admin",
            "/orders/..;jsessionid=1/admin",
            "/orders/.;/x",
            "/orders/..%2Fadmin",
            "/orders/..%2fadmin",
            "/orders/x%5C..%5Cadmin",
            "/orders/%252e%252e/admin",
            "/orders/%252e%252e%252fadmin",
            "/orders/%2e%2e;/admin",
            "/orders//admin",
            "/orders/a%00b",
        ] {
            let url = format!("https://api.shop.example{path}");
            assert!(!allows(g, "GET", &url), "{path}");
        }
        // Without a path prefix there is nothing to escape from.
        assert!(allows(
            "https://api.shop.example",
            "GET",
            "https://api.shop.example/orders/..;/x"
        ));
        // Backslashes are separators to the URL parser, resolved before matching.
        assert!(!allows(
            g,
            "GET",
            "https://api.shop.example/orders\\..\\admin"
        ));
        // Plain paths with ordinary escapes still pass.
        assert!(allows(
            g,
            "GET",
            "https://api.shop.example/orders/a%20b;v=1/"
        ));
        assert!(allows(g, "GET", "https://api.shop.example/orders/"));
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
        assert!(
            why("https://api.example.com/a/../b").contains("without `.`/`..` or empty segments")
        );
        assert!(why("https://api.example.com/a//b").contains("without `.`/`..` or empty segments"));
        assert!(why("https://api.example.com/a;b").contains("`;`"));
        assert!(why("https://").contains("the host is missing"));
    }

    #[test]
    fn a_grant_reaches_the_hosts_a_manifest_names_by_scheme_host_and_port() {
        let shop = grant("GET https://api.shop.example/v1");
        assert!(shop.reaches("https://api.shop.example"));
        assert!(shop.reaches("api.shop.example"), "a bare name is https");
        assert!(shop.reaches("HTTPS://API.shop.example:443/"));
        assert!(!shop.reaches("http://api.shop.example"), "another scheme");
        assert!(
            !shop.reaches("https://api.shop.example:8443"),
            "another port"
        );
        assert!(!shop.reaches("https://evil.example"));
        assert!(!shop.reaches("not a url at all"));
        let suffix = grant("https://*.shop.example");
        assert!(suffix.reaches("https://api.shop.example"));
        assert!(!suffix.reaches("https://shop.example"));
        assert!(grant("http://127.0.0.1:9000").reaches("http://127.0.0.1:9000"));
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

/// Random grants and requests, checked against the rules as written in the
/// module's documentation rather than against the parser's own logic: the
/// model below builds each grant and request from parts and says from the
/// parts alone whether the grant allows it.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum HostRule {
        Name(&'static str),
        Suffix(&'static str),
        Ip(&'static str),
        Cidr(&'static str),
    }

    #[derive(Debug, Clone)]
    struct GrantParts {
        methods: Option<Vec<&'static str>>,
        https: bool,
        host: HostRule,
        port: Option<u16>,
        prefix: Vec<&'static str>,
    }

    impl GrantParts {
        fn text(&self) -> String {
            let methods = self
                .methods
                .as_ref()
                .map_or(String::new(), |m| format!("{} ", m.join(",")));
            let host = match &self.host {
                HostRule::Name(name) => name.to_string(),
                HostRule::Suffix(suffix) => format!("*.{suffix}"),
                HostRule::Ip(ip) => ip.to_string(),
                HostRule::Cidr(net) => format!("[{net}]"),
            };
            let port = self.port.map_or(String::new(), |p| format!(":{p}"));
            let path: String = self.prefix.iter().map(|s| format!("/{s}")).collect();
            let scheme = if self.https { "https" } else { "http" };
            format!("{methods}{scheme}://{host}{port}{path}")
        }
    }

    /// A request host: its text in the URL, and what it is.
    #[derive(Debug, Clone)]
    struct HostParts {
        text: &'static str,
        name: Option<&'static str>,
        ip: Option<std::net::Ipv4Addr>,
    }

    #[derive(Debug, Clone)]
    struct RequestParts {
        method: &'static str,
        https: bool,
        host: HostParts,
        port: Option<u16>,
        segments: Vec<&'static str>,
    }

    impl RequestParts {
        fn url(&self) -> String {
            let scheme = if self.https { "https" } else { "http" };
            let port = self.port.map_or(String::new(), |p| format!(":{p}"));
            format!(
                "{scheme}://{}{port}/{}",
                self.host.text,
                self.segments.join("/")
            )
        }
    }

    /// Segments a request path may have. Dots are resolved by the URL parser
    /// (also written `%2e`); the tricky ones are those a server may read
    /// as another path.
    const SEGMENTS: &[&str] = &[
        "orders",
        "admin",
        "v1",
        ".",
        "..",
        "%2e%2e",
        ".%2E",
        "%2e",
        "",
        "..;",
        ".;",
        "a%2Fb",
        "x%5Cy",
        "%252e%252e",
        "a;v=1",
        "%20",
    ];
    const TRICKY: &[&str] = &["..;", ".;", "a%2Fb", "x%5Cy", "%252e%252e"];

    fn is_dot(segment: &str) -> bool {
        matches!(segment, "." | "%2e")
    }

    fn is_dot_dot(segment: &str) -> bool {
        matches!(segment, ".." | "%2e%2e" | ".%2E")
    }

    /// The path as the URL parser leaves it: dot segments resolved, as the
    /// URL standard says, a final dot segment leaving a trailing slash.
    fn resolved(segments: &[&'static str]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if is_dot_dot(segment) {
                out.pop();
                if last {
                    out.push("");
                }
            } else if is_dot(segment) {
                if last {
                    out.push("");
                }
            } else {
                out.push(segment);
            }
        }
        out
    }

    fn expected(grant: &GrantParts, request: &RequestParts) -> bool {
        let method = match &grant.methods {
            Some(methods) => methods.contains(&request.method),
            None => !matches!(request.method, "TRACE" | "CONNECT"),
        };
        let default = |https: bool| if https { 443 } else { 80 };
        let port = grant.port.unwrap_or(default(grant.https))
            == request.port.unwrap_or(default(request.https));
        let host = match (&grant.host, request.host.name, request.host.ip) {
            (HostRule::Name(name), Some(host), _) => host == *name,
            (HostRule::Suffix(suffix), Some(host), _) => host.ends_with(&format!(".{suffix}")),
            (HostRule::Ip(ip), _, Some(host)) => host == ip.parse::<std::net::Ipv4Addr>().unwrap(),
            (HostRule::Cidr(net), _, Some(host)) => {
                net.parse::<ipnet::Ipv4Net>().unwrap().contains(&host)
            }
            _ => false,
        };
        let path = resolved(&request.segments);
        let path_ok = grant.prefix.is_empty() || {
            let middle_empty = path.iter().rev().skip(1).any(|s| s.is_empty());
            let tricky = path.iter().any(|s| TRICKY.contains(s));
            !middle_empty && !tricky && path.starts_with(&grant.prefix)
        };
        method && grant.https == request.https && port && host && path_ok
    }

    fn grants() -> impl Strategy<Value = GrantParts> {
        let methods = prop_oneof![
            Just(None),
            proptest::sample::subsequence(vec!["GET", "POST", "DELETE"], 1..=3).prop_map(Some),
        ];
        let host = prop_oneof![
            Just(HostRule::Name("api.shop.example")),
            Just(HostRule::Name("shop.example")),
            Just(HostRule::Suffix("shop.example")),
            Just(HostRule::Ip("203.0.113.7")),
            Just(HostRule::Cidr("203.0.113.0/28")),
        ];
        let prefix = proptest::collection::vec(
            proptest::sample::select(vec!["orders", "admin", "v1"]),
            0..=2,
        );
        (
            methods,
            any::<bool>(),
            host,
            proptest::option::of(Just(8443u16)),
            prefix,
        )
            .prop_map(|(methods, https, host, port, prefix)| GrantParts {
                methods,
                https,
                host,
                port,
                prefix,
            })
    }

    fn requests() -> impl Strategy<Value = RequestParts> {
        let ip = |text, ip: [u8; 4]| HostParts {
            text,
            name: None,
            ip: Some(ip.into()),
        };
        let name = |text, name| HostParts {
            text,
            name: Some(name),
            ip: None,
        };
        let host = proptest::sample::select(vec![
            name("api.shop.example", "api.shop.example"),
            name("API.Shop.Example", "api.shop.example"),
            name("shop.example", "shop.example"),
            name("a.api.shop.example", "a.api.shop.example"),
            name(
                "api.shop.example.evil.example",
                "api.shop.example.evil.example",
            ),
            name("evilshop.example", "evilshop.example"),
            ip("203.0.113.7", [203, 0, 113, 7]),
            ip("3405803783", [203, 0, 113, 7]),
            ip("0xcb.0.113.9", [203, 0, 113, 9]),
            ip("203.0.113.200", [203, 0, 113, 200]),
        ]);
        let method = proptest::sample::select(vec!["GET", "POST", "DELETE", "PATCH", "TRACE"]);
        let port = proptest::option::of(proptest::sample::select(vec![80u16, 443, 8443]));
        let segments = proptest::collection::vec(proptest::sample::select(SEGMENTS.to_vec()), 0..5);
        (method, any::<bool>(), host, port, segments).prop_map(
            |(method, https, host, port, segments)| RequestParts {
                method,
                https,
                host,
                port,
                segments,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn a_grant_allows_exactly_what_its_rules_say(grant in grants(), request in requests()) {
            let parsed = Grant::parse(&grant.text()).unwrap();
            let destination = Destination::parse(request.method, &request.url()).unwrap();
            prop_assert_eq!(
                parsed.allows(&destination),
                expected(&grant, &request),
                "{} for {} {} (as {})",
                grant.text(),
                request.method,
                request.url(),
                destination.url
            );
        }

        #[test]
        fn parsing_any_text_never_panics(text in ".{0,80}", method in "[A-Za-z ]{0,8}") {
            let _ = Grant::parse(&text);
            let _ = Destination::parse(&method, &text);
        }
    }
}
