//! Who may use which route: a bearer token per role, compared in constant
//! time, and an extractor per set of roles that a handler names in its
//! arguments, so that the role a route needs is read where the route is.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::borrow::Cow;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::api::error::ApiError;

/// Who may use the API. There is no "partly on": either every role has its
/// token, or auth is off on purpose.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A bearer token per role.
    Tokens(Tokens),
    /// No tokens: anyone who can reach the listener may upload and run code.
    /// For local demos only.
    Off,
}

/// The roles of the API, each with its own bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Grants, secrets and limits: what an action may reach. Every route.
    Operator,
    /// Upload, configure, try and read actions; never what they may reach.
    Designer,
    /// The dialog platform: invoke and the webhooks.
    Invoke,
    /// A metrics scraper: `GET /metrics` only.
    Metrics,
}

impl Role {
    /// The role's name: `operator`, `designer`, `invoke` or `metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Designer => "designer",
            Role::Invoke => "invoke",
            Role::Metrics => "metrics",
        }
    }
}

/// The bearer token of each role. Each must be distinct and at least
/// [`Tokens::MIN_LEN`] characters long, so that no token stands for two roles
/// and none is guessable by trying.
#[derive(Clone)]
pub struct Tokens {
    operator: String,
    designer: String,
    invoke: String,
    metrics: String,
}

impl Tokens {
    /// The shortest token accepted.
    pub const MIN_LEN: usize = 16;

    /// The four tokens, or what is wrong with them.
    pub fn new(
        operator: String,
        designer: String,
        invoke: String,
        metrics: String,
    ) -> Result<Tokens, String> {
        let tokens = Tokens {
            operator,
            designer,
            invoke,
            metrics,
        };
        let all = tokens.by_role();
        for (role, token) in all {
            if token.chars().count() < Tokens::MIN_LEN || token.trim() != token {
                return Err(format!(
                    "the {} token must be at least {} characters, without surrounding spaces",
                    role.name(),
                    Tokens::MIN_LEN
                ));
            }
        }
        for (i, (role, token)) in all.iter().enumerate() {
            if let Some((other, _)) = all[i + 1..].iter().find(|(_, t)| t == token) {
                return Err(format!(
                    "the {} and {} tokens are the same: each role needs its own",
                    role.name(),
                    other.name()
                ));
            }
        }
        Ok(tokens)
    }

    /// A new random token for every role.
    pub fn generate() -> Tokens {
        Tokens {
            operator: random_token(),
            designer: random_token(),
            invoke: random_token(),
            metrics: random_token(),
        }
    }

    /// The token of `role`.
    pub fn of(&self, role: Role) -> &str {
        match role {
            Role::Operator => &self.operator,
            Role::Designer => &self.designer,
            Role::Invoke => &self.invoke,
            Role::Metrics => &self.metrics,
        }
    }

    fn by_role(&self) -> [(Role, &str); 4] {
        [Role::Operator, Role::Designer, Role::Invoke, Role::Metrics]
            .map(|role| (role, self.of(role)))
    }

    /// The role whose token `presented` is, compared in constant time with
    /// every token.
    pub(crate) fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (role, token) in self.by_role() {
            if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(role);
            }
        }
        found
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

/// 256 random bits, as 64 hex digits.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The header a webhook may carry the token in, besides `Authorization`.
pub(crate) const TOKEN_HEADER: &str = "x-action-host-token";

/// Who may use each kind of route.
pub(crate) const OPERATOR: &[Role] = &[Role::Operator];
pub(crate) const DESIGNER: &[Role] = &[Role::Operator, Role::Designer];
pub(crate) const INVOKE: &[Role] = &[Role::Operator, Role::Designer, Role::Invoke];
pub(crate) const METRICS: &[Role] = &[Role::Operator, Role::Metrics];

impl Auth {
    /// The role of the request's bearer token if it is one of `allowed`;
    /// `None` with auth off.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        allowed: &[Role],
    ) -> Result<Option<Role>, ApiError> {
        if let Auth::Off = self {
            return local_only(headers).map(|()| None);
        }
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        self.admit(presented, allowed, || {
            "send `Authorization: Bearer <token>`".into()
        })
    }

    /// Like [`Auth::check`], for a webhook: the token may also come the
    /// ways a platform can send it: in the header [`TOKEN_HEADER`] (for a
    /// platform whose `Authorization` carries its own identity token, as
    /// Dialogflow CX's service agent does), as basic auth's password (any
    /// user name) or, where the platform sends one there, as the query
    /// parameter `query_token` names (the invoke token only: a query is
    /// kept in logs along the way). The query is read here and nowhere
    /// else: the service never logs it.
    pub(crate) fn check_webhook(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        query_token: Option<&str>,
        allowed: &[Role],
    ) -> Result<Option<Role>, ApiError> {
        if let Auth::Off = self {
            return local_only(headers).map(|()| None);
        }
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let basic = || {
            authorization
                .and_then(|value| value.strip_prefix("Basic "))
                .and_then(basic_password)
        };
        let bearer = authorization.and_then(|value| value.strip_prefix("Bearer "));
        let from_query = || {
            query.zip(query_token).and_then(|(query, name)| {
                url::form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            })
        };
        let custom = headers
            .get(TOKEN_HEADER)
            .and_then(|value| value.to_str().ok());
        let in_headers: Option<Cow<str>> = custom
            .or(bearer)
            .map(Cow::Borrowed)
            .or_else(|| basic().map(Cow::Owned));
        if in_headers.is_none()
            && let Some(token) = from_query()
        {
            // A query is kept along the way (the platform's settings, a
            // proxy's access log): only the token that can do least may go there.
            return match self.admit(Some(&token), &[Role::Invoke], String::new) {
                Err(ApiError::Forbidden(_)) => Err(ApiError::Forbidden(
                    "only the invoke token may be sent in the query string; send this one in a \
                     header"
                        .into(),
                )),
                admitted => admitted,
            };
        }
        self.admit(in_headers.as_deref(), allowed, || match query_token {
            Some(name) => format!(
                "send the invoke token as `Authorization: Bearer <token>`, in \
                 `X-Action-Host-Token`, as the basic auth password, or as the query parameter \
                 `{name}`"
            ),
            None => "send the invoke token as `Authorization: Bearer <token>`, in \
                     `X-Action-Host-Token` or as the basic auth password"
                .into(),
        })
    }

    /// The role of the token `presented`, if it is one of `allowed`; `how`
    /// says how to send one when none came (built only then: most requests
    /// carry a token).
    fn admit(
        &self,
        presented: Option<&str>,
        allowed: &[Role],
        how: impl FnOnce() -> String,
    ) -> Result<Option<Role>, ApiError> {
        let Auth::Tokens(tokens) = self else {
            return Ok(None);
        };
        let presented = presented.ok_or_else(|| ApiError::Unauthorized(how()))?;
        let role = tokens
            .role_of(presented)
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))?;
        if allowed.contains(&role) {
            return Ok(Some(role));
        }
        let needed: Vec<&str> = allowed.iter().map(|role| role.name()).collect();
        Err(ApiError::Forbidden(format!(
            "this route needs the {} token; this is the {} token",
            needed.join(" or "),
            role.name()
        )))
    }
}

/// With auth off, refuses what a web page the developer happens to visit
/// could send: a browser posts a page's form or `text/plain` fetch to any
/// address without asking, and a page whose name is made to resolve to
/// loopback (DNS rebinding) counts as the service's own origin. So the
/// service must be named by an address or `localhost` in `Host`, and a
/// browser's request must come from the service's own page (its `Origin`
/// the same host). Clients that are not browsers send no `Origin`.
fn local_only(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = |why: String| {
        Err(ApiError::Forbidden(format!(
            "without tokens (--insecure-no-auth) the service answers {why}"
        )))
    };
    // A header that is there but not text is refused, not taken as absent.
    let text = |name| match headers.get(name).map(|value| value.to_str()) {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text)),
        Some(Err(_)) => Err(()),
    };
    let (Ok(host), Ok(origin)) = (
        text(axum::http::header::HOST),
        text(axum::http::header::ORIGIN),
    ) else {
        return refused("only requests whose Host and Origin are plain text".into());
    };
    if let Some(host) = host {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let by_address =
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok();
        if !by_address {
            return refused(format!(
                "only requests that name it by its address or localhost, not {}",
                crate::api::error::quoted(host)
            ));
        }
    }
    // A browser always says where a request comes from: it must be the
    // service's own page, on the host the request names.
    if let Some(origin) = origin {
        let own = host.is_some_and(|host| {
            ["http://", "https://"]
                .iter()
                .any(|scheme| origin.strip_prefix(scheme) == Some(host))
        });
        if !own {
            return refused(format!(
                "browsers only from its own page, not from {}",
                crate::api::error::quoted(origin)
            ));
        }
    }
    Ok(())
}

/// The password of a basic auth credential (`base64(user:password)`).
fn basic_password(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// Declares an extractor that admits the roles `$roles`, holding the role
/// of the token presented (`None` with auth off).
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $roles:expr) => {
        $(#[$doc])*
        // Not every route asks who called; the upload records it.
        #[allow(dead_code)]
        pub(crate) struct $name(pub(crate) Option<Role>);

        impl FromRequestParts<Arc<AppState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<AppState>,
            ) -> Result<Self, ApiError> {
                state.auth.check(&parts.headers, $roles).map($name)
            }
        }
    };
}

role_extractor!(
    /// The operator: grants, secrets and limits.
    AsOperator,
    OPERATOR
);
role_extractor!(
    /// The operator or a designer: upload, configure, try and read.
    AsDesigner,
    DESIGNER
);
role_extractor!(
    /// Anyone who may invoke: the platform, a designer, the operator.
    AsInvoker,
    INVOKE
);
role_extractor!(
    /// A metrics scraper or the operator.
    AsScraper,
    METRICS
);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Auth {
        Auth::Tokens(
            Tokens::new(
                "operator-token-0123".into(),
                "designer-token-0123".into(),
                "invoke-token-012345".into(),
                "metrics-token-01234".into(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn without_tokens_only_local_hosts_and_the_services_own_page_are_answered() {
        let headers = |pairs: &[(&'static str, &[u8])]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_bytes(value).unwrap());
            }
            headers
        };
        for fine in [
            headers(&[]),
            headers(&[("host", b"127.0.0.1:8080")]),
            headers(&[("host", b"[::1]:8080"), ("origin", b"http://[::1]:8080")]),
            headers(&[
                ("host", b"LocalHost:80"),
                ("origin", b"https://LocalHost:80"),
            ]),
            headers(&[("host", b"10.1.2.3")]),
        ] {
            assert!(local_only(&fine).is_ok(), "{fine:?}");
        }
        for refused in [
            headers(&[("host", b"evil.example:8080")]),
            headers(&[("host", b"localhost.evil.example")]),
            headers(&[
                ("host", b"127.0.0.1:8080"),
                ("origin", b"http://127.0.0.1:9090"),
            ]),
            headers(&[("host", b"127.0.0.1:8080"), ("origin", b"null")]),
            headers(&[("origin", b"http://127.0.0.1:8080")]),
            headers(&[("host", b"127.0.0.1:8080"), ("origin", b"http://caf\xe9")]),
        ] {
            assert!(local_only(&refused).is_err(), "{refused:?}");
        }
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_webhook_token_comes_as_each_platform_sends_it() {
        let auth = tokens();
        let invoke = Ok(Some(Role::Invoke));
        let basic = |credential: &str| {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(credential);
            with("authorization", &format!("Basic {encoded}"))
        };
        let check = |headers: &HeaderMap, query: Option<&str>, in_query: Option<&str>| {
            auth.check_webhook(headers, query, in_query, INVOKE)
                .map_err(|e| e.message())
        };
        assert_eq!(
            check(
                &with("authorization", "Bearer invoke-token-012345"),
                None,
                None
            ),
            invoke
        );
        assert_eq!(
            check(&with(TOKEN_HEADER, "invoke-token-012345"), None, None),
            invoke
        );
        assert_eq!(
            check(&basic("rasa:invoke-token-012345"), None, None),
            invoke
        );
        assert_eq!(
            check(
                &HeaderMap::new(),
                Some("a=1&token=invoke-token-012345"),
                Some("token")
            ),
            invoke
        );
        // Under the name the platform's setting gives, and no other.
        assert_eq!(
            check(
                &HeaderMap::new(),
                Some("auth=invoke-token-012345"),
                Some("auth")
            ),
            invoke
        );
        let renamed = check(
            &HeaderMap::new(),
            Some("token=invoke-token-012345"),
            Some("auth"),
        );
        assert!(
            renamed
                .unwrap_err()
                .ends_with("or as the query parameter `auth`")
        );
        // The custom header wins over an identity token in `Authorization`.
        let mut both = with("authorization", "Bearer eyJ.google.token");
        both.insert(
            TOKEN_HEADER,
            HeaderValue::from_static("invoke-token-012345"),
        );
        assert_eq!(check(&both, None, None), invoke);

        // A query token only where the platform can send nothing else.
        // Only the invoke token: a query is kept in logs along the way.
        for token in ["operator-token-0123", "designer-token-0123"] {
            let sent = check(
                &HeaderMap::new(),
                Some(&format!("token={token}")),
                Some("token"),
            );
            assert!(
                sent.as_ref()
                    .is_err_and(|e| e.contains("only the invoke token may be sent in the query")),
                "{sent:?}"
            );
        }
        let none = check(&HeaderMap::new(), Some("token=invoke-token-012345"), None);
        assert!(none.unwrap_err().contains("X-Action-Host-Token"));
        assert_eq!(
            check(&basic("invoke-token-012345"), None, None).unwrap_err(),
            "send the invoke token as `Authorization: Bearer <token>`, in `X-Action-Host-Token` \
             or as the basic auth password"
        );
        assert_eq!(
            check(&with("authorization", "Basic not*base64"), None, None).unwrap_err(),
            check(&HeaderMap::new(), None, None).unwrap_err()
        );
        assert_eq!(
            check(&basic("rasa:invoke-token-01234"), None, None).unwrap_err(),
            "unknown token"
        );
        // The API's own routes take the bearer header only.
        assert!(
            auth.check(&with(TOKEN_HEADER, "invoke-token-012345"), INVOKE)
                .is_err()
        );
    }
}
