//! Authentication: who is calling, from the bearer token of the request.
//!
//! Every endpoint, WebSocket and HTTP alike, finds the token the same way
//! ([`find_token`]), in this order:
//! 1. `Authorization: Bearer <token>`: services, and WebSocket clients that can set
//!    headers.
//! 2. The WebSocket subprotocol: browsers cannot set headers on a WebSocket, but they
//!    can offer subprotocols: `new WebSocket(url, ["bearer", token])` (or the single
//!    entry `bearer.<token>`). The server answers with the `bearer` entry, as a
//!    browser requires when it offered any.
//! 3. The `token` query parameter (`/ws?token=...`): works everywhere, but URLs end up
//!    in logs and proxies; prefer the first two.
//!
//! Without a key configured (no `--jwt-secret`, `--jwt-public-key` or `--auth-config`)
//! there is no authentication and every caller is anonymous, which the open access
//! policy lets do anything. With one, a missing token is `401` unless anonymous access
//! is switched on explicitly, and a bad token (expired, wrong signature) is always
//! `401`: it never falls back to anonymous. What a verified caller may do is the
//! access policy's business (`tether_engine::access`).

pub mod file;
pub mod jwt;

use axum::http::{header, HeaderMap};
use std::sync::Arc;
use tether_core::Result;
use tether_engine::{Access, Identity};

pub use jwt::{unauthorized, Verifier};

/// The subprotocol entry that marks a token in `Sec-WebSocket-Protocol`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// How the server authenticates callers.
#[derive(Debug)]
pub struct Auth {
    /// `None` with `enabled`: rules but no key, so only anonymous callers exist.
    verifier: Option<Verifier>,
    anonymous: bool,
    enabled: bool,
}

/// A caller who passed authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Arc<Identity>,
    /// The subprotocol to answer a WebSocket upgrade with, if the client offered one
    /// to carry its token.
    pub protocol: Option<String>,
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    /// `Some` when it came in the subprotocol list: the entry to answer with.
    pub protocol: Option<String>,
}

impl Auth {
    /// No authentication: everyone is anonymous (and the open policy allows all).
    pub fn disabled() -> Auth {
        Auth {
            verifier: None,
            anonymous: true,
            enabled: false,
        }
    }

    /// Authentication with these keys; `anonymous` lets token-less callers in.
    pub fn new(verifier: Option<Verifier>, anonymous: bool) -> Auth {
        Auth {
            verifier,
            anonymous,
            enabled: true,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The caller of a request with these headers and query string.
    pub fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Authenticated> {
        if !self.enabled {
            // Tokens mean nothing here, and a header meant for someone else (a proxy's
            // Basic auth) must not turn the open server away.
            let found = find_token(headers, query).ok().flatten();
            return Ok(Authenticated {
                identity: Identity::shared_anonymous(),
                protocol: found.and_then(|f| f.protocol),
            });
        }
        let found = find_token(headers, query)?;
        let protocol = found.as_ref().and_then(|f| f.protocol.clone());
        let identity = match (found, &self.verifier) {
            (Some(found), Some(v)) => v.verify(&found.token)?,
            (Some(_), None) => return Err(unauthorized("this server accepts no tokens")),
            (None, _) if self.anonymous => {
                return Ok(Authenticated {
                    identity: Identity::shared_anonymous(),
                    protocol,
                })
            }
            (None, _) => {
                return Err(unauthorized(
                    "a bearer token is required: send `Authorization: Bearer <token>`, the WebSocket subprotocols [\"bearer\", <token>], or ?token=<token>",
                ))
            }
        };
        Ok(Authenticated {
            identity: Arc::new(identity),
            protocol,
        })
    }
}

/// The request's token, if it carries one (see the module docs for the order). A
/// malformed `Authorization` header is an error rather than "no token", so a client
/// that meant to authenticate is told instead of silently becoming anonymous.
pub fn find_token(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Found>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        return Ok(Some(Found {
            token: token.to_owned(),
            protocol: None,
        }));
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        let entries: Vec<&str> = value.split(',').map(str::trim).collect();
        for (i, entry) in entries.iter().enumerate() {
            if let Some(token) = entry.strip_prefix("bearer.").filter(|t| !t.is_empty()) {
                return Ok(Some(Found {
                    token: token.to_owned(),
                    protocol: Some((*entry).to_owned()),
                }));
            }
            if *entry == BEARER_PROTOCOL {
                let token = entries
                    .get(i + 1)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        unauthorized("the subprotocol \"bearer\" must be followed by the token")
                    })?;
                return Ok(Some(Found {
                    token: (*token).to_owned(),
                    protocol: Some(BEARER_PROTOCOL.to_owned()),
                }));
            }
        }
    }
    // JWTs are base64url and dots: nothing in them needs percent-decoding.
    let token = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v);
    Ok(token.filter(|t| !t.is_empty()).map(|t| Found {
        token: t.to_owned(),
        protocol: None,
    }))
}

/// Keys, rules and the anonymous switch, from the flags and the auth file.
pub fn load(
    config: &crate::security::SecurityConfig,
) -> std::result::Result<(Auth, Access), String> {
    let (file, mut keys) = match &config.auth_config {
        Some(path) => {
            let (file, keys) = file::AuthFile::load(path)?;
            (Some(file), keys)
        }
        None => (None, jwt::Keys::default()),
    };
    // Flags win over the file, so one file can serve several deployments.
    if let Some(secret) = &config.jwt_secret {
        keys.secret = Some(secret.clone());
    }
    if let Some(path) = &config.jwt_public_key {
        keys.public_key_pem = Some(
            std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?,
        );
    }
    let verifier = Verifier::new(&keys)?;
    if file.is_none() && verifier.is_none() {
        if config.allow_anonymous {
            return Err(
                "--allow-anonymous needs auth to be configured (--auth-config, --jwt-secret or --jwt-public-key); without it every caller is let in anyway"
                    .into(),
            );
        }
        return Ok((Auth::disabled(), Access::open()));
    }
    let anonymous = config.allow_anonymous || file.as_ref().is_some_and(|f| f.anonymous);
    if verifier.is_none() && !anonymous {
        return Err(
            "the auth file configures no token key ([jwt] secret or public_key) and anonymous access is off: nobody could connect"
                .into(),
        );
    }
    let rules = file.as_ref().map(file::AuthFile::rules).unwrap_or_default();
    if rules.resources.is_empty() && rules.topics.is_empty() && rules.rooms.is_none() {
        tracing::warn!(
            "auth is on but no access rule is configured: every read, write, subscription and room is denied; add rules with --auth-config (docs/security.md)"
        );
    }
    let access = Access::with_rules(rules).map_err(|e| match &config.auth_config {
        Some(path) => format!("{}: {e}", path.display()),
        None => e,
    })?;
    Ok((Auth::new(verifier, anonymous), access))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_token_in_header_subprotocol_or_query() {
        let found = |h: &HeaderMap, q: Option<&str>| find_token(h, q).unwrap();
        let h = headers(&[(header::AUTHORIZATION, "Bearer abc.def.ghi")]);
        assert_eq!(found(&h, None).unwrap().token, "abc.def.ghi");
        let h = headers(&[(header::AUTHORIZATION, "bearer  t ")]);
        assert_eq!(found(&h, Some("token=other")).unwrap().token, "t");
        assert!(find_token(&headers(&[(header::AUTHORIZATION, "Basic x")]), None).is_err());
        assert!(find_token(&headers(&[(header::AUTHORIZATION, "Bearer")]), None).is_err());

        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "bearer, a.b.c")]);
        let f = found(&h, None).unwrap();
        assert_eq!(
            (f.token.as_str(), f.protocol.as_deref()),
            ("a.b.c", Some("bearer"))
        );
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "chat, bearer.a.b.c")]);
        let f = found(&h, None).unwrap();
        assert_eq!(
            (f.token.as_str(), f.protocol.as_deref()),
            ("a.b.c", Some("bearer.a.b.c"))
        );
        assert!(find_token(
            &headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "bearer")]),
            None
        )
        .is_err());
        assert_eq!(
            found(&headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "chat")]), None),
            None
        );

        let none = HeaderMap::new();
        assert_eq!(
            found(&none, Some("a=1&token=x.y.z&b")).unwrap().token,
            "x.y.z"
        );
        assert_eq!(found(&none, Some("token=")), None);
        assert_eq!(found(&none, None), None);
    }

    #[test]
    fn anonymous_only_when_allowed_and_never_for_a_bad_token() {
        let none = HeaderMap::new();
        let bad = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        let off = Auth::disabled();
        assert!(off
            .authenticate(&none, None)
            .unwrap()
            .identity
            .is_anonymous());
        assert!(
            off.authenticate(&bad, None).is_ok(),
            "no auth: tokens are ignored"
        );
        let basic = headers(&[(header::AUTHORIZATION, "Basic dXNlcjpwdw==")]);
        assert!(off.authenticate(&basic, None).is_ok(), "nor other schemes");
        let key = Verifier::new(&jwt::Keys {
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..jwt::Keys::default()
        })
        .unwrap();
        let closed = Auth::new(key, false);
        assert!(closed.authenticate(&none, None).is_err());
        assert!(closed.authenticate(&bad, None).is_err());
        let key = Verifier::new(&jwt::Keys {
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..jwt::Keys::default()
        })
        .unwrap();
        let anon = Auth::new(key, true);
        assert!(anon
            .authenticate(&none, None)
            .unwrap()
            .identity
            .is_anonymous());
        assert!(anon.authenticate(&bad, None).is_err());
    }
}
