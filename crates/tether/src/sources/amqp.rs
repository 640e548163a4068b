//! RabbitMQ (AMQP 0-9-1) sources: messages published to an exchange with a routing key
//! become topic messages (seed 002: "some resources are backed by RabbitMQ", such as a
//! workflow's log lines).
//!
//! Spec: `amqp://USER:PASS@HOST:PORT/VHOST#EXCHANGE/ROUTING.KEY=TOPIC`, for example
//! `amqp://guest:guest@127.0.0.1:5672/%2f#workflows/logs.42.#=workflow-42`. The part
//! after the first `#` names the exchange (which the publishing application owns and
//! declares), the binding key (AMQP wildcards `*` and `#` allowed) and the topic. A
//! topic named like a channel is what `/monorail/<channel>` watchers receive.
//!
//! How it behaves, and why:
//!
//! - **One consumer across all nodes, so every line is relayed once and in order.**
//!   Each node declares the same queue, named from the store's epoch and the spec,
//!   with `x-single-active-consumer`: RabbitMQ delivers to one node at a time, in
//!   order, and that node publishes each message on the bus to every node. (Each node
//!   consuming its own queue would relay every line once per node.) If that node goes
//!   away, RabbitMQ hands the queue to another. The queue is `auto_delete`: when no
//!   node consumes, it goes, and lines published meanwhile are not kept.
//! - **At most once.** Messages are consumed without acknowledgements, like topic
//!   messages everywhere in Tether: a line in flight when the consuming node dies is
//!   lost rather than shown twice. Logs that must not be lost belong in records.
//! - **Payloads.** A body that is JSON is relayed as that JSON value; anything else as
//!   a string (UTF-8, invalid bytes replaced, one trailing newline removed).
//! - **Reconnects with backoff.** A broker that is down at start, goes away, or
//!   refuses the binding (the exchange does not exist yet) is retried after 0.5 s,
//!   doubling to 30 s, with jitter so nodes do not retry in step; the delay resets
//!   after a connection has stayed up for 30 s. The server serves everything else
//!   meanwhile. `tether_source_connected{topic}` is 1 while consuming.
//!
//! The same connections also carry the changes an application announces for its
//! MongoDB-backed resources (`--mongo-changes`, see [`super::mongo_changes`]). Those
//! differ where records need it: their queue is durable and outlives the nodes, so
//! announcements made while no node runs wait for one, and each message is
//! acknowledged only after its change is logged (at least once; a repeated change is
//! harmless).
//!
//! Not in this build: `amqps://` (TLS).

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tether_core::{Epoch, Error, ErrorCode, ResourceName, Result};
use tether_engine::Engine;
use tokio::task::JoinHandle;

/// First retry delay after a failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the delay to the start.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Closing a connection on the way to a retry may hang on a dead socket; give up then.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One `--source amqp://...#exchange/key=topic` or
/// `--mongo-changes resource=amqp://...#exchange/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpSource {
    /// The broker URL, password included (never logged: see [`redact`]).
    pub url: String,
    pub exchange: String,
    pub routing_key: String,
    pub target: Target,
}

/// Where a source's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Relayed to topic subscribers, not stored.
    Topic(String),
    /// Changes the owning application announces for a MongoDB-backed resource.
    Changes(ResourceName),
}

impl AmqpSource {
    /// Parses a `--source` spec: `amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY=TOPIC`.
    pub fn parse(spec: &str) -> Result<AmqpSource> {
        let bad = |why: &str| Error::bad_request(format!("--source {}: {why}", redact(spec)));
        let form = "expected amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY=TOPIC";
        let Some((binding, topic)) = spec.rsplit_once('=') else {
            return Err(bad(form));
        };
        tether_engine::check_topic(topic).map_err(|e| bad(&e.message))?;
        AmqpSource::bind(binding, Target::Topic(topic.to_owned()), &bad, form)
    }

    /// Parses a `--mongo-changes` spec: `RESOURCE=amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY`.
    pub fn parse_changes(spec: &str) -> Result<AmqpSource> {
        let bad = |why: &str| {
            Error::bad_request(format!("--mongo-changes {}: {why}", redact_after_eq(spec)))
        };
        let form = "expected RESOURCE=amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY";
        let Some((resource, binding)) = spec.split_once('=') else {
            return Err(bad(form));
        };
        let resource = ResourceName::parse(resource).map_err(|e| bad(&e.message))?;
        AmqpSource::bind(binding, Target::Changes(resource), &bad, form)
    }

    /// The `URL#EXCHANGE/ROUTING.KEY` part both specs share.
    fn bind(
        spec: &str,
        target: Target,
        bad: &dyn Fn(&str) -> Error,
        form: &str,
    ) -> Result<AmqpSource> {
        if spec.starts_with("amqps://") {
            return Err(bad("amqps:// (TLS) is not in this build; use amqp://"));
        }
        let Some((url, binding)) = spec.split_once('#') else {
            return Err(bad(form));
        };
        let Some((exchange, routing_key)) = binding.split_once('/') else {
            return Err(bad(form));
        };
        if exchange.is_empty() {
            return Err(bad(
                "the exchange is empty; the default exchange cannot be bound to",
            ));
        }
        if exchange.len() > 255 || routing_key.len() > 255 {
            return Err(bad("exchange names and routing keys are at most 255 bytes"));
        }
        lapin::uri::AMQPUri::from_str(url).map_err(|e| bad(&format!("not an AMQP URL ({e})")))?;
        Ok(AmqpSource {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            target,
        })
    }

    /// The topic, or `mongo-changes:RESOURCE`: for queue names, metrics and logs.
    pub fn label(&self) -> String {
        match &self.target {
            Target::Topic(topic) => topic.clone(),
            Target::Changes(resource) => format!("mongo-changes:{resource}"),
        }
    }

    /// The queue every node of this store shares for this source. The same on every
    /// node and build (so they compete for one queue); at most 255 bytes.
    fn queue_name(&self, epoch: &Epoch) -> String {
        let name = format!(
            "tether.{}.{}.{}.{}",
            epoch.0,
            self.label(),
            self.exchange,
            self.routing_key
        );
        if name.len() <= 255 {
            return name;
        }
        // FNV-1a: stable across Rust versions, unlike std's hasher.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut cut = 230;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}.{hash:016x}", &name[..cut])
    }
}

/// The spec with any password hidden, for logs and errors.
pub fn redact(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_owned();
    };
    let end = rest.find(['/', '#', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => spec.to_owned(),
        },
        None => spec.to_owned(),
    }
}

/// [`redact`] for `NAME=URL...`.
fn redact_after_eq(spec: &str) -> String {
    match spec.split_once('=') {
        Some((name, rest)) => format!("{name}={}", redact(rest)),
        None => redact(spec),
    }
}

/// The relayed value of a message body.
fn payload(body: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice(body) {
        return value;
    }
    let text = String::from_utf8_lossy(body);
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Value::String(text.to_owned())
}

/// Starts one task per broker URL, consuming all of that broker's sources.
pub fn start(sources: Vec<AmqpSource>, engine: &Engine) -> Vec<JoinHandle<()>> {
    let mut by_broker: BTreeMap<String, Vec<AmqpSource>> = BTreeMap::new();
    for source in sources {
        by_broker
            .entry(source.url.clone())
            .or_default()
            .push(source);
    }
    by_broker
        .into_values()
        .map(|group| tokio::spawn(run(group, engine.clone())))
        .collect()
}

/// Connects, consumes until the connection fails, waits, and does it again, forever.
async fn run(sources: Vec<AmqpSource>, engine: Engine) {
    let shown = redact(&sources[0].url);
    let mut delay = BACKOFF_START;
    loop {
        let started = Instant::now();
        let why = consume(&sources, &engine).await;
        for source in &sources {
            metrics::gauge!("tether_source_connected", "topic" => source.label()).set(0.0);
        }
        if started.elapsed() >= STABLE_AFTER {
            delay = BACKOFF_START;
        }
        // Jitter in [0.8, 1.2): nodes that lost the broker together retry apart.
        let wait = delay.mul_f64(0.8 + 0.4 * rand::random::<f64>());
        tracing::warn!(broker = %shown, error = %why, retry_in = ?wait, "RabbitMQ source is down; retrying");
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: returns why it ended.
async fn consume(sources: &[AmqpSource], engine: &Engine) -> String {
    let url = &sources[0].url;
    let properties = ConnectionProperties::default().with_connection_name("tether".into());
    let connection = match Connection::connect(url, properties).await {
        Ok(c) => c,
        Err(e) => return format!("cannot connect: {e}"),
    };
    let why = relay(&connection, sources, engine).await;
    // A refused binding leaves the connection open; close it before the next try.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "reconnecting".into())).await;
    why
}

async fn relay(connection: &Connection, sources: &[AmqpSource], engine: &Engine) -> String {
    let channel = match connection.create_channel().await {
        Ok(c) => c,
        Err(e) => return format!("cannot open a channel: {e}"),
    };
    let mut streams = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let queue = source.queue_name(engine.epoch());
        let mut arguments = FieldTable::default();
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // Announced changes wait in a durable queue while no node consumes; topic
        // lines are not kept (see the module doc).
        let keep = matches!(source.target, Target::Changes(_));
        let declare = QueueDeclareOptions {
            auto_delete: !keep,
            durable: keep,
            ..QueueDeclareOptions::default()
        };
        if let Err(e) = channel
            .queue_declare(queue.as_str().into(), declare, arguments)
            .await
        {
            return format!("cannot declare queue {queue}: {e}");
        }
        if let Err(e) = channel
            .queue_bind(
                queue.as_str().into(),
                source.exchange.as_str().into(),
                source.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            return format!(
                "cannot bind to exchange {:?} with key {:?} (does the exchange exist?): {e}",
                source.exchange, source.routing_key
            );
        }
        let consume = BasicConsumeOptions {
            no_ack: !keep,
            ..BasicConsumeOptions::default()
        };
        match channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                consume,
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => streams.push(consumer.map(move |delivery| (i, delivery))),
            Err(e) => return format!("cannot consume from queue {queue}: {e}"),
        }
        metrics::gauge!("tether_source_connected", "topic" => source.label()).set(1.0);
        tracing::info!(
            broker = %redact(&source.url),
            exchange = %source.exchange,
            key = %source.routing_key,
            topic = %source.label(),
            "RabbitMQ source bound"
        );
    }
    // Each consumer's stream stays in order; merging them keeps that per source.
    let mut all = futures_util::stream::select_all(streams);
    while let Some((i, delivery)) = all.next().await {
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => return format!("the connection failed: {e}"),
        };
        metrics::counter!("tether_source_messages_total", "topic" => sources[i].label())
            .increment(1);
        match &sources[i].target {
            Target::Topic(topic) => {
                if let Err(e) = engine.publish(topic, payload(&delivery.data)).await {
                    tracing::warn!(%topic, error = %e, "could not relay a RabbitMQ message");
                }
            }
            Target::Changes(resource) => {
                match super::mongo_changes::log(engine, resource, &delivery.data).await {
                    // Unacknowledged, the message comes back after the reconnect.
                    Err(e) if e.code == ErrorCode::Unavailable => {
                        return format!("could not log a change to {resource}: {e}")
                    }
                    Err(e) => tracing::warn!(%resource, error = %e, "dropping an announced change"),
                    Ok(()) => {}
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    return format!("the connection failed: {e}");
                }
            }
        }
    }
    "the broker closed the connection".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs() {
        let s =
            AmqpSource::parse("amqp://guest:pw@127.0.0.1:5672/%2f#workflows/logs.42.#=workflow-42")
                .unwrap();
        assert_eq!(s.url, "amqp://guest:pw@127.0.0.1:5672/%2f");
        assert_eq!(
            (s.exchange.as_str(), s.routing_key.as_str(), s.label()),
            ("workflows", "logs.42.#", "workflow-42".to_owned())
        );
        for bad in [
            "amqp://guest:pw@h/%2f",
            "amqp://guest:pw@h/%2f#ex=topic",
            "amqp://guest:pw@h/%2f#/key=topic",
            "amqp://guest:pw@h/%2f#ex/key=bad topic",
            "amqps://guest:pw@h/%2f#ex/key=t",
            "amqp://guest:pw@h:notaport/%2f#ex/key=t",
        ] {
            let e = AmqpSource::parse(bad).unwrap_err();
            assert!(!e.message.contains("pw"), "{}", e.message);
            assert!(e.message.starts_with("--source amqp"), "{}", e.message);
        }
    }

    #[test]
    fn change_specs() {
        let s = AmqpSource::parse_changes("todos=amqp://guest:pw@h:5672/%2f#app/todos.*").unwrap();
        assert_eq!(s.url, "amqp://guest:pw@h:5672/%2f");
        assert_eq!(
            (s.exchange.as_str(), s.routing_key.as_str()),
            ("app", "todos.*")
        );
        assert_eq!(s.label(), "mongo-changes:todos");
        for bad in [
            "amqp://guest:pw@h/%2f#app/k",
            "bad name=amqp://guest:pw@h/%2f#app/k",
            "todos=amqp://guest:pw@h/%2f",
            "todos=amqp://guest:pw@h/%2f#app",
            "todos=amqps://guest:pw@h/%2f#app/k",
        ] {
            let e = AmqpSource::parse_changes(bad).unwrap_err();
            assert!(!e.message.contains("pw"), "{}", e.message);
            assert!(e.message.starts_with("--mongo-changes "), "{}", e.message);
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(payload(br#"{"line": 1}"#), json!({"line": 1}));
        assert_eq!(payload(b"step 3 done\n"), json!("step 3 done"));
        assert_eq!(payload(b"\xff ok"), json!("\u{fffd} ok"));
    }

    #[test]
    fn queue_names_are_stable_and_bounded() {
        let s = AmqpSource::parse("amqp://h/%2f#ex/k.*=t").unwrap();
        let epoch = Epoch("abc".into());
        assert_eq!(s.queue_name(&epoch), "tether.abc.t.ex.k.*");
        let long = AmqpSource {
            routing_key: "k".repeat(255),
            ..s
        };
        let name = long.queue_name(&epoch);
        assert!(name.len() <= 255);
        assert_eq!(name, long.queue_name(&epoch));
    }
}
