//! AMQP-style messaging on the log: virtual hosts with exchanges, queues and
//! bindings; queues that are logs plus persisted cursor state; consumers,
//! prefetch, acknowledgements, TTL, length limits and dead-lettering.
//!
//! Message properties are AMQP 0-9-1's basic properties (the `amq-protocol`
//! crate's types): they are the richest header model of the protocols Weir
//! speaks, and keeping them as sent is what lets every property and header
//! table reach a consumer byte for byte. The rules — which queue gets a
//! message, who receives it, when it expires or is dead-lettered — are the
//! core's; the AMQP front-end only translates frames.

pub mod args;
mod consumer;
pub mod dead_letter;
pub mod error;
pub mod exchange;
mod lane;
pub mod message;
pub mod neutral;
mod queue;
pub mod settlement;
mod topic_source;
mod vhost;

pub use consumer::{
    ChannelHandle, ConsumerSpec, Delivery, MessageId, Outbound, StreamStart, UNSENT_DELIVERIES_MAX,
};
pub use error::QueueError;
pub use exchange::ExchangeKind;
pub use message::Message;
pub use queue::{Enqueued, Queue, QueueSpec};
pub use vhost::{
    Binding, DeclaredQueue, Destination, Exchange, Published, Stored, VirtualHost, NAME_BYTES_MAX,
};
