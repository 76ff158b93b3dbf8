//! The registry of live client connections, for the HTTP API's listing and
//! its close action. Each node owns one ([`Broker::connections`](crate::Broker::connections)),
//! never a process global, so several nodes can run in one process.
//!
//! A front-end registers each connection when it accepts it and keeps the
//! returned [`Registration`] for the connection's life; dropping it removes
//! the entry. [`Connections::close`] asks a connection to close: its task
//! selects on [`Registration::close_requested`] next to its socket and
//! closes the protocol's way (AMQP `connection.close` 320, Kafka: the socket).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::broker::now_ms;
use crate::metrics::Protocol;

/// A connection as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Registry id (unique in this node, never reused).
    pub id: u64,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// The client's address.
    pub peer: SocketAddr,
    /// The authenticated user ("" before login or without authentication).
    pub user: String,
    /// The client's own name (Kafka `client.id`, AMQP `product` property).
    pub client: String,
    /// Open channels (AMQP; 0 for Kafka).
    pub channels: u32,
    /// When it was accepted, ms since the epoch.
    pub connected_at_ms: i64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    protocol: Protocol,
    peer: SocketAddr,
    connected_at_ms: i64,
    names: Mutex<(String, String)>,
    channels: AtomicU32,
    close: Notify,
}

impl Entry {
    fn info(&self) -> ConnectionInfo {
        let (user, client) = self.names.lock().clone();
        ConnectionInfo {
            id: self.id,
            protocol: self.protocol,
            peer: self.peer,
            user,
            client,
            channels: self.channels.load(Ordering::Relaxed),
            connected_at_ms: self.connected_at_ms,
        }
    }
}

/// Every live connection.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    live: RwLock<BTreeMap<u64, Arc<Entry>>>,
}

/// A connection's place in the registry; removes it when dropped.
#[derive(Debug)]
pub struct Registration {
    entry: Arc<Entry>,
    registry: Arc<Connections>,
}

impl Connections {
    /// Adds a connection just accepted.
    pub fn register(self: &Arc<Self>, protocol: Protocol, peer: SocketAddr) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            protocol,
            peer,
            connected_at_ms: now_ms(),
            names: Mutex::new((String::new(), String::new())),
            channels: AtomicU32::new(0),
            close: Notify::new(),
        });
        self.live.write().insert(id, Arc::clone(&entry));
        Registration {
            entry,
            registry: Arc::clone(self),
        }
    }

    /// Every live connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.live
            .read()
            .values()
            .map(|entry| entry.info())
            .collect()
    }

    /// One connection.
    pub fn get(&self, id: u64) -> Option<ConnectionInfo> {
        self.live.read().get(&id).map(|entry| entry.info())
    }

    /// Live connections of one protocol.
    pub fn count(&self, protocol: Protocol) -> usize {
        self.live
            .read()
            .values()
            .filter(|entry| entry.protocol == protocol)
            .count()
    }

    /// Asks a connection to close; false when there is no such connection.
    pub fn close(&self, id: u64) -> bool {
        match self.live.read().get(&id) {
            Some(entry) => {
                // notify_one keeps a permit if the task is not waiting right now.
                entry.close.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Registration {
    /// The registry id.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// Records the authenticated user.
    pub fn set_user(&self, user: &str) {
        user.clone_into(&mut self.entry.names.lock().0);
    }

    /// Records the client's name, if it changed.
    pub fn set_client(&self, client: &str) {
        let mut names = self.entry.names.lock();
        if names.1 != client {
            client.clone_into(&mut names.1);
        }
    }

    /// Records how many channels are open.
    pub fn set_channels(&self, channels: usize) {
        let channels = u32::try_from(channels).unwrap_or(u32::MAX);
        self.entry.channels.store(channels, Ordering::Relaxed);
    }

    /// Finishes when an operator asked for the connection to close.
    pub async fn close_requested(&self) {
        self.entry.close.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.live.write().remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registers_closes_and_forgets() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("address");
        let registry = Arc::new(Connections::default());
        let registration = registry.register(Protocol::Amqp, peer);
        registration.set_user("guest");
        registration.set_channels(2);
        let id = registration.id();
        let info = registry.get(id).expect("registered");
        assert_eq!((info.user.as_str(), info.channels), ("guest", 2));
        assert!(registry.close(id));
        // The permit was kept although nobody was waiting.
        registration.close_requested().await;
        drop(registration);
        assert!(registry.get(id).is_none());
        assert!(!registry.close(id));
    }
}
