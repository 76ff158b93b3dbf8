//! Accepts Kafka connections, one task each, under a connection cap; stops
//! by broadcast and waits for every connection to finish (the loop is the
//! core's [`serve_connections`], shared with AMQP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_core::listener::{serve_connections, Acceptor, ServeLimits};
use weir_core::metrics::Protocol;
use weir_core::Broker;

use crate::connection;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Host clients are told to connect to (Metadata, DescribeCluster).
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Largest request frame accepted (`socket.request.max.bytes`); larger closes the connection.
    pub request_bytes_max: usize,
    /// Connections served at once; more wait in the accept queue.
    pub connections_max: usize,
    /// Requests of one connection being processed or awaiting their turn to
    /// answer; reading pauses beyond it.
    pub requests_in_flight_max: usize,
}

impl KafkaConfig {
    /// Defaults (as Kafka's) advertising `address`.
    pub fn new(address: SocketAddr) -> KafkaConfig {
        KafkaConfig {
            advertised_host: address.ip().to_string(),
            advertised_port: address.port(),
            request_bytes_max: 100 * 1024 * 1024,
            connections_max: 10_000,
            requests_in_flight_max: 32,
        }
    }
}

/// State every connection shares.
#[derive(Debug)]
pub struct Context {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Listener settings.
    pub config: KafkaConfig,
}

/// How long a clean shutdown waits for connections to finish their answers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves Kafka clients on `listener` until `shutdown` turns true, then waits
/// (up to a bound) for open connections to answer what they have read.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: KafkaConfig,
    shutdown: watch::Receiver<bool>,
) {
    let limits = ServeLimits {
        connections_max: config.connections_max,
        drain_timeout: Some(DRAIN_TIMEOUT),
    };
    let acceptor = Acceptor::new(listener, Protocol::Kafka, broker.metrics());
    let context = Arc::new(Context { broker, config });
    let stopping = shutdown.clone();
    serve_connections(acceptor, limits, shutdown, |stream, peer| {
        connection::run(stream, peer, Arc::clone(&context), stopping.clone())
    })
    .await;
}
