//! Origin checks for WebSocket upgrades (cross-site WebSocket hijacking).
//!
//! Browsers do not apply CORS to WebSockets: any page may open a socket to any server,
//! and the browser sends along whatever it would send anyway (cookies, a client
//! certificate, a localhost server's trust). The `Origin` header is the one thing that
//! says which page is asking, so with `--allow-origin` configured an upgrade whose
//! Origin is not listed is refused with 403 before any session starts.
//!
//! A request without `Origin` is not from a browser page (a service, a CLI) and cannot
//! be a hijack, so it passes. The server's own origin is not implied: allowing it
//! automatically would let a DNS-rebinding page (whose Origin and Host agree) in; list
//! it to use the inspector at `/` with an allow-list on.

use axum::http::{header, HeaderMap};

/// The allow-list. Empty means any origin (no set-up needed).
#[derive(Debug, Clone)]
pub struct Origins {
    allowed: Vec<String>,
    any: bool,
}

impl Default for Origins {
    fn default() -> Self {
        Origins {
            allowed: Vec::new(),
            any: true,
        }
    }
}

impl Origins {
    /// Origins as given on the command line: `scheme://host[:port]`, or `*` for any.
    pub fn parse(list: &[String]) -> Result<Origins, String> {
        let mut origins = Origins {
            allowed: Vec::new(),
            any: list.is_empty(),
        };
        for entry in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if entry == "*" {
                origins.any = true;
                continue;
            }
            let normalized = normalize(entry).ok_or_else(|| {
                format!("--allow-origin {entry:?}: expected scheme://host[:port] (no path), or *")
            })?;
            origins.allowed.push(normalized);
        }
        Ok(origins)
    }

    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// `Err` with the reason when the request's Origin is not allowed.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if self.any {
            return Ok(());
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        match normalize(origin) {
            Some(o) if self.allowed.contains(&o) => Ok(()),
            _ => Err(format!(
                "origin {origin:?} is not allowed to open WebSockets here (--allow-origin)"
            )),
        }
    }
}

/// `scheme://host[:port]` in lower case, or `None` if it is not one (`null`, a path,
/// no scheme).
fn normalize(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let valid_authority = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    (valid_scheme && valid_authority).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            authority.to_ascii_lowercase()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn allow_list() {
        let o = Origins::parse(&[
            "https://App.example.com".into(),
            "http://localhost:3000".into(),
        ])
        .unwrap();
        assert!(o.check(&with_origin("https://app.example.com")).is_ok());
        assert!(o.check(&with_origin("http://localhost:3000")).is_ok());
        assert!(o.check(&with_origin("https://evil.example")).is_err());
        assert!(
            o.check(&with_origin("http://app.example.com")).is_err(),
            "scheme counts"
        );
        assert!(
            o.check(&with_origin("http://localhost:3001")).is_err(),
            "port counts"
        );
        assert!(o.check(&with_origin("null")).is_err());
        assert!(
            o.check(&HeaderMap::new()).is_ok(),
            "no Origin: not a browser page"
        );
    }

    #[test]
    fn defaults_and_bad_entries() {
        assert!(Origins::parse(&[])
            .unwrap()
            .check(&with_origin("https://x"))
            .is_ok());
        assert!(Origins::parse(&["*".into()]).unwrap().allows_any());
        assert!(Origins::parse(&["example.com".into()]).is_err());
        assert!(Origins::parse(&["https://example.com/app".into()]).is_err());
    }
}
