//! The AMQP listener: accepts connections (bounded by a semaphore) and runs
//! one task per connection until shutdown is broadcast, in the core's
//! [`serve_connections`] loop shared with Kafka.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_core::connections::Connections;
use weir_core::listener::{serve_connections, Acceptor, ServeLimits};
use weir_core::metrics::{Metrics, Protocol};
use weir_core::queues::VirtualHost;

use crate::connection::Connection;

/// Virtual hosts by name.
pub type VirtualHosts = HashMap<String, Arc<VirtualHost>>;

/// Settings of the AMQP listener.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame the broker accepts and proposes (`frame_max`).
    pub frame_bytes_max: u32,
    /// Channels per connection at most (`channel_max`).
    pub channels_per_connection_max: u16,
    /// Heartbeat interval proposed to clients, in seconds (0 = off).
    pub heartbeat_s: u16,
    /// Largest message body accepted.
    pub message_bytes_max: u64,
    /// Connections served at once.
    pub connections_max: usize,
    /// Users and passwords allowed to log in (RabbitMQ's `guest`/`guest` by default).
    pub users: Vec<(String, String)>,
}

impl Default for AmqpConfig {
    fn default() -> AmqpConfig {
        AmqpConfig {
            frame_bytes_max: 131_072,
            channels_per_connection_max: 2047,
            heartbeat_s: 60,
            message_bytes_max: 128 << 20,
            connections_max: 10_000,
            users: vec![("guest".into(), "guest".into())],
        }
    }
}

/// Serves AMQP connections on `listener` until `stopping` turns true, then waits
/// for every connection task to finish.
/// While `alarm` is true, connections that publish are blocked.
/// Connections are counted in the node's `metrics` and listed in its
/// `connections`.
pub async fn serve(
    listener: TcpListener,
    vhosts: Arc<VirtualHosts>,
    config: AmqpConfig,
    stopping: watch::Receiver<bool>,
    alarm: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    connections: Arc<Connections>,
) {
    let limits = ServeLimits {
        connections_max: config.connections_max,
        // Unbounded, as before: an open connection answers the broadcast
        // with connection.close (CONNECTION_FORCED) and ends; one still in
        // its handshake ends within the handshake timeout.
        drain_timeout: None,
    };
    let config = Arc::new(config);
    let next_id = AtomicU64::new(1);
    let acceptor = Acceptor::new(listener, Protocol::Amqp, &metrics);
    let stop = stopping.clone();
    serve_connections(acceptor, limits, stopping, |socket, peer| {
        let _ = socket.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::new(
            id,
            peer,
            Arc::clone(&vhosts),
            Arc::clone(&config),
            alarm.clone(),
            Arc::clone(&metrics),
            connections.register(Protocol::Amqp, peer),
        );
        connection.run(socket, stop.clone())
    })
    .await;
}
