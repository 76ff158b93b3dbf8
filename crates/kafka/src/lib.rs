//! Weir's Kafka front-end.
//!
//! Layers, one per file: [`server`] accepts connections; [`connection`]
//! reads length-prefixed frames and writes answers in request order;
//! [`dispatch`] decodes the request header, checks the API version and
//! routes to one file per API under [`api`], each of which decodes the body,
//! calls the core and encodes the answer. [`errors`] maps core errors to
//! Kafka error codes. Only per-connection state lives here.

pub mod api;
pub mod connection;
pub mod dispatch;
pub mod errors;
pub mod server;

pub use crate::server::{serve, KafkaConfig};
