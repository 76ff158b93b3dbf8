//! Weir's storage engine.
//!
//! A partition is a directory of segments holding Kafka RecordBatch v2 bytes
//! ([`batch`]), each segment with a sparse offset index and time index
//! ([`index`], [`segment`]); [`Log`] strings segments together, recovers
//! after a crash and applies retention; [`SharedLog`] makes a log usable
//! from many tasks and acknowledges writes only once they are durable,
//! sharing one `fdatasync` between concurrent writers.
//!
//! Crash safety, in short:
//!
//! * recovery cuts only a torn tail (bad bytes with nothing valid after
//!   them) and logs every cut; damage followed by valid batches is fenced
//!   ([`CorruptRange`], persisted in `corrupt-ranges`) and reads of it fail
//!   with [`LogError::Corrupt`]; every read checks each batch's CRC;
//! * a failed write is undone ([`LogError::WriteRolledBack`]): a full disk
//!   fails the write, not the log; a failed sync poisons the log until it
//!   heals itself by cutting back to what is durable ([`Log::truncate_to`]);
//! * all file operations go through [`storage::Storage`], so tests run the
//!   log on a simulated disk that fails and loses power ([`sim`]);
//! * [`verify::verify_log_dir`] checks a directory offline, changing nothing.
//!
//! This crate knows nothing of topics, protocols or clients.

pub mod batch;
pub mod checkpoint;
mod config;
pub mod epoch;
mod error;
mod fenced;
pub mod index;
mod log;
pub mod segment;
mod shared;
pub mod sim;
pub mod storage;
mod stored;
pub mod verify;

pub use crate::config::LogConfig;
pub use crate::error::{BatchError, LogError, Result};
pub use crate::log::{AppendInfo, Log, ReadCursor, Written};
pub use crate::segment::{CorruptRange, Recovery};
pub use crate::shared::{LogOffsets, SharedLog, SyncObserver, HEAL_RETRY_INTERVAL};
pub use crate::storage::{FileHandle, StdStorage, Storage, StorageFile};
