//! Security settings: authentication and access rules, browser origins, TLS.
//!
//! All of it is off by default, so `tether serve` with no flags is the open,
//! zero-set-up server; docs/security.md says how to turn each part on.

use crate::auth::Auth;
use crate::transport::origin::Origins;
use clap::Args;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tether_engine::Access;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, Args)]
pub struct SecurityConfig {
    /// Auth file (TOML): token keys and per-resource access rules. With it, or with a
    /// key flag below, every request needs a valid token and everything no rule allows
    /// is denied (docs/security.md). Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "TETHER_AUTH_CONFIG", value_name = "FILE")]
    pub auth_config: Option<PathBuf>,

    /// How often the auth file is checked for changes, which are then applied without
    /// a restart (0 turns the check off; SIGHUP still reloads).
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration, env = "TETHER_AUTH_RELOAD_INTERVAL")]
    pub auth_reload_interval: Duration,

    /// HS256 secret for bearer tokens (JWT), at least 32 bytes. Prefer the environment
    /// variable: a flag shows in the process list.
    #[arg(
        long,
        env = "TETHER_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub jwt_secret: Option<String>,

    /// RS256 public key (PEM file) for bearer tokens (JWT).
    #[arg(long, env = "TETHER_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Let requests without a token in as anonymous callers; the access rules decide
    /// what they may do (a rule that needs `token.*` never matches them).
    #[arg(long, env = "TETHER_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Browser origin allowed to open WebSockets (scheme://host[:port]); repeat or
    /// separate with commas. Unset: any origin.
    #[arg(
        long = "allow-origin",
        env = "TETHER_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allow_origins: Vec<String>,

    /// TLS certificate chain (PEM). With --tls-key the server speaks https:// and wss://.
    #[arg(
        long,
        env = "TETHER_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "TETHER_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
}

impl Default for SecurityConfig {
    /// Everything off, as with no flags.
    fn default() -> SecurityConfig {
        SecurityConfig {
            auth_config: None,
            auth_reload_interval: Duration::from_secs(2),
            jwt_secret: None,
            jwt_public_key: None,
            allow_anonymous: false,
            allow_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The security settings in force, shared by every request.
#[derive(Debug)]
pub struct Security {
    /// Replaced whole when the auth file is reloaded (`reload.rs`).
    auth: RwLock<Arc<Auth>>,
    pub origins: Origins,
}

impl Security {
    /// Nothing configured: open.
    pub fn open() -> Security {
        Security::new(Auth::disabled(), Origins::default())
    }

    pub fn new(auth: Auth, origins: Origins) -> Security {
        Security {
            auth: RwLock::new(Arc::new(auth)),
            origins,
        }
    }

    /// How callers are authenticated now.
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn replace_auth(&self, auth: Auth) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(auth);
    }
}

/// What the configuration turns into: the request-side settings, the access policy
/// for the engine, and the TLS acceptor when TLS is on.
pub struct Loaded {
    pub security: Security,
    pub access: Access,
    pub tls: Option<TlsAcceptor>,
}

/// Reads keys, rules and certificates. Errors say which flag or file is wrong.
pub fn load(config: &SecurityConfig) -> Result<Loaded, String> {
    let (auth, access) = crate::auth::load(config)?;
    let origins = Origins::parse(&config.allow_origins)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::transport::tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(Loaded {
        security: Security::new(auth, origins),
        access,
        tls,
    })
}
