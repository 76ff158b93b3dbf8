//! Who asks the core for something: a user (or nobody authenticated) and
//! the connection the request came on.
//!
//! Every core operation that reads, writes, creates or deletes takes one, so
//! that authorization (users, Kafka ACLs, AMQP permissions) has one place to
//! go. Nothing checks it yet beyond what AMQP always had: an exclusive
//! queue belongs to its connection.

use std::sync::Arc;

/// A connection's identity in the core (the registry's connection id).
pub type ConnectionId = u64;

/// The connection id of requests that come on no connection of their own:
/// the HTTP API and the broker's own work (dead-lettering, maintenance).
pub const NO_CONNECTION: ConnectionId = 0;

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user: Option<Arc<str>>,
    connection: ConnectionId,
}

impl Principal {
    /// Nobody authenticated, on `connection` (Kafka without SASL today).
    pub fn anonymous(connection: ConnectionId) -> Principal {
        Principal {
            user: None,
            connection,
        }
    }

    /// The authenticated `user` on `connection`.
    pub fn user(user: &str, connection: ConnectionId) -> Principal {
        Principal {
            user: Some(Arc::from(user)),
            connection,
        }
    }

    /// The broker itself, and operators through the HTTP API (which has no
    /// authentication yet).
    pub fn internal() -> Principal {
        Principal::anonymous(NO_CONNECTION)
    }

    /// The user's name; `None` when nobody authenticated.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The connection the request came on.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }
}
