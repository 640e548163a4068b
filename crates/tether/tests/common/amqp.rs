//! A RabbitMQ publisher on an exchange of its own, for the tests of sources fed by
//! RabbitMQ (`TETHER_TEST_AMQP`).

use super::unique;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// The test's own publisher, on its own exchange.
pub struct Publisher {
    _connection: Connection,
    pub channel: Channel,
    pub exchange: String,
}

impl Publisher {
    pub async fn new(url: &str) -> Publisher {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        let exchange = unique("tt-ex");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Publisher {
            _connection: connection,
            channel,
            exchange,
        }
    }

    pub async fn publish(&self, key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
    }

    pub async fn delete(self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}
