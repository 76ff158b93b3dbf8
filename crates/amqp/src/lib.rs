//! Weir's AMQP 0-9-1 front-end: RabbitMQ clients (pika, lapin, amqp-tools,
//! the Java/Go/.NET clients) connect unchanged.
//!
//! [`server`] accepts connections; [`connection`] reads frames (checking
//! `frame_max` from the 7-byte header before buffering a payload), runs the
//! handshake and writes deliveries; one file per method class (`channel`,
//! `exchange`, `queue`, `basic`, `confirm`, `tx`) decodes a method, calls the
//! core's [`weir_core::queues`] and encodes the answer; [`errors`] maps core
//! errors to reply codes. Codec: the `amq-protocol` crate.

mod basic;
mod channel;
mod confirm;
pub mod connection;
pub mod errors;
mod exchange;
mod frames;
mod method_names;
mod queue;
pub mod server;
mod tx;

pub use server::{serve, AmqpConfig, VirtualHosts};
