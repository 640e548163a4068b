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
//!
//! `--mongo-changes RESOURCE=amqp://...` is the other kind: changes an application
//! announces for its MongoDB-backed resource, logged as changes rather than relayed
//! ([`mongo_changes`]).

pub mod amqp;
pub mod mongo_changes;

use tether_core::{Error, ResourceName, Result};
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

/// Checks every spec, then starts one task per broker connection. `mongo` names the
/// MongoDB-backed resources, the only ones changes may be announced for.
pub fn start(
    specs: &[String],
    changes: &[String],
    mongo: &[ResourceName],
    engine: &Engine,
) -> Result<Sources> {
    let mut parsed = Vec::with_capacity(specs.len() + changes.len());
    for spec in specs {
        parsed.push(parse_source(spec)?);
    }
    for spec in changes {
        let source = amqp::AmqpSource::parse_changes(spec)?;
        if let amqp::Target::Changes(resource) = &source.target {
            if !mongo.contains(resource) {
                return Err(Error::bad_request(format!(
                    "--mongo-changes {resource}=...: {resource} is not a --mongo-resource"
                )));
            }
        }
        parsed.push(source);
    }
    Ok(Sources {
        tasks: amqp::start(parsed, engine),
    })
}

/// Checks one `--source` spec.
pub fn parse_source(spec: &str) -> Result<amqp::AmqpSource> {
    if spec.starts_with("amqp://") || spec.starts_with("amqps://") {
        amqp::AmqpSource::parse(spec)
    } else {
        Err(Error::bad_request(format!(
            "--source {:?}: expected amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY=TOPIC",
            amqp::redact(spec)
        )))
    }
}
