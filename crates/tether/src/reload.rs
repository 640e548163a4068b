//! Live reload of the auth file (`--auth-config`): token keys, the anonymous switch
//! and access rules change without a restart, on SIGHUP or when the file changes.
//!
//! Why it exists: rules change with the product (a new resource, a revoked role) and
//! keys rotate; a restart for either drops every connection at once. A reload checks
//! the new file completely before anything changes: a file that does not parse, names
//! an unreadable key or holds a bad rule is reported and the rules in force stay. A
//! good one replaces keys and rules as a whole. Connections whose subscriptions were
//! filtered by a rule that changed are closed with 1012 so that they resume under the
//! new rule (`Engine::replace_access` says why); every other connection is untouched.
//! Turning auth on or off, like every other flag, still needs a restart.
//!
//! The file is polled (`--auth-reload-interval`, every 2 s by default) rather than
//! watched with inotify: polling also sees a file replaced by a rename or a symlink
//! swap (editors, Kubernetes ConfigMaps), and reading a small file every few seconds
//! costs nothing. Key files the auth file names are read again on every reload, but
//! only a change of the auth file itself (or SIGHUP) triggers one.

use crate::security::{Security, SecurityConfig};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tether_engine::Engine;

/// Reloads the auth file into the running server.
#[derive(Debug)]
pub struct AuthReloader {
    config: SecurityConfig,
    path: PathBuf,
    security: Arc<Security>,
    engine: Engine,
    /// The file's text when it was last applied or rejected, so the poll reacts to a
    /// change once, not on every tick.
    seen: Mutex<Option<Vec<u8>>>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Connections closed with 1012 because a rule their subscriptions depend on changed.
    pub closed_connections: usize,
}

impl AuthReloader {
    /// A reloader for a server started with `config`; `None` without an auth file
    /// (nothing to reload).
    pub fn new(
        config: &SecurityConfig,
        security: Arc<Security>,
        engine: Engine,
    ) -> Option<Arc<AuthReloader>> {
        let path = config.auth_config.clone()?;
        let seen = std::fs::read(&path).ok();
        Some(Arc::new(AuthReloader {
            config: config.clone(),
            path,
            security,
            engine,
            seen: Mutex::new(seen),
        }))
    }

    /// Reads the auth file again and applies it; on any error the settings in force
    /// stay. Counted in `tether_auth_reloads_total{result}` and logged either way.
    pub fn reload(&self) -> Result<Reloaded, String> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = std::fs::read(&self.path).ok();
        let result = crate::auth::load(&self.config).and_then(|(auth, access)| {
            let closed_connections = self.engine.replace_access(access).map_err(|e| e.message)?;
            self.security.replace_auth(auth);
            Ok(Reloaded { closed_connections })
        });
        match &result {
            Ok(done) => {
                metrics::counter!("tether_auth_reloads_total", "result" => "ok").increment(1);
                tracing::info!(
                    file = %self.path.display(),
                    closed_connections = done.closed_connections,
                    "auth file reloaded"
                );
            }
            Err(e) => {
                metrics::counter!("tether_auth_reloads_total", "result" => "error").increment(1);
                tracing::error!(
                    file = %self.path.display(),
                    error = %e,
                    "auth file not reloaded; the rules in force stay"
                );
            }
        }
        result
    }

    /// Reloads if the file's bytes differ from the last ones seen.
    pub fn reload_if_changed(&self) -> Option<Result<Reloaded, String>> {
        let now = std::fs::read(&self.path).ok();
        let changed = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != now;
        changed.then(|| self.reload())
    }

    /// Polls the file every `--auth-reload-interval` until the returned guard is
    /// dropped (with the server).
    pub fn watch(self: &Arc<Self>) -> Option<Watching> {
        let every = self.config.auth_reload_interval;
        if every.is_zero() {
            return None;
        }
        let reloader = self.clone();
        Some(Watching(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = reloader.reload_if_changed();
            }
        })))
    }
}

/// The polling task; stops when dropped.
#[derive(Debug)]
pub struct Watching(tokio::task::JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}
