//! Accepts Kafka connections, one task each, under a connection cap; stops
//! by broadcast and waits for every connection to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
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
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let context = Arc::new(Context { broker, config });
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let context = Arc::clone(&context);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    connection::run(stream, peer, context, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
        connections.abort_all();
    }
}
