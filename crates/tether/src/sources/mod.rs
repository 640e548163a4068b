//! Sources: live streams from outside that Tether relays to topic subscribers without
//! storing them (seed 002's RabbitMQ-fed workflow logs).
//!
//! A source turns each message it receives into an ephemeral topic message through
//! [`Engine::publish`], the same path as `POST /publish/<topic>`, so its lines reach
//! `/ws` topic subscribers (`message`) and `/monorail/<topic>` watchers (`item`) on every
//! node, and nothing about it is special to the engine.
//!
//! Sources are configured with `--source SPEC` (repeatable; `source = [...]` in a config
//! file). Only `amqp://` exists today: see [`amqp`] for the spec and its guarantees. A
//! broken spec stops the server at start with one line; an unreachable broker does not:
//! the server serves everything else and the source keeps reconnecting.

pub mod amqp;

use tether_core::{Error, Result};
use tether_engine::Engine;
use tokio::task::JoinHandle;

/// The running sources; dropping this stops them.
#[derive(Debug, Default)]
pub struct Sources {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Sources {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Checks every spec, then starts one task per broker connection.
pub fn start(specs: &[String], engine: &Engine) -> Result<Sources> {
    let mut parsed = Vec::with_capacity(specs.len());
    for spec in specs {
        if spec.starts_with("amqp://") || spec.starts_with("amqps://") {
            parsed.push(amqp::AmqpSource::parse(spec)?);
        } else {
            return Err(Error::bad_request(format!(
                "--source {:?}: expected amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY=TOPIC",
                amqp::redact(spec)
            )));
        }
    }
    Ok(Sources {
        tasks: amqp::start(parsed, engine),
    })
}
