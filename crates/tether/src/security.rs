//! Security settings: authentication and access rules, browser origins, TLS.
//!
//! All of it is off by default, so `tether serve` with no flags is the open,
//! zero-set-up server; docs/security.md says how to turn each part on.

use crate::auth::Auth;
use crate::transport::origin::Origins;
use clap::Args;
use std::path::PathBuf;
use tether_engine::Access;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, Default, Args)]
pub struct SecurityConfig {
    /// Auth file (TOML): token keys and per-resource access rules. With it, or with a
    /// key flag below, every request needs a valid token and everything no rule allows
    /// is denied (docs/security.md).
    #[arg(long, env = "TETHER_AUTH_CONFIG", value_name = "FILE")]
    pub auth_config: Option<PathBuf>,

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

/// The security settings in force, shared by every request.
#[derive(Debug)]
pub struct Security {
    pub auth: Auth,
    pub origins: Origins,
}

impl Security {
    /// Nothing configured: open.
    pub fn open() -> Security {
        Security {
            auth: Auth::disabled(),
            origins: Origins::default(),
        }
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
        security: Security { auth, origins },
        access,
        tls,
    })
}
