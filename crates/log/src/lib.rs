//! Weir's storage engine.
//!
//! A partition is a directory of segments holding Kafka RecordBatch v2 bytes
//! ([`batch`]), each segment with a sparse offset index and time index
//! ([`index`], [`segment`]); [`Log`] strings segments together, recovers a
//! torn tail after a crash and applies retention; [`SharedLog`] makes a log
//! usable from many tasks and acknowledges writes only once they are
//! durable, sharing one `fdatasync` between concurrent writers.
//!
//! This crate knows nothing of topics, protocols or clients.

pub mod batch;
pub mod checkpoint;
mod config;
pub mod epoch;
mod error;
pub mod index;
mod log;
pub mod segment;
mod shared;
pub mod sim;
pub mod storage;
pub mod verify;

pub use crate::config::LogConfig;
pub use crate::error::{BatchError, LogError, Result};
pub use crate::log::{AppendInfo, Log, ReadCursor};
pub use crate::segment::{CorruptRange, Recovery};
pub use crate::shared::{observe_syncs, LogOffsets, SharedLog, HEAL_RETRY_INTERVAL};
pub use crate::storage::{FileHandle, StdStorage, Storage, StorageFile};
