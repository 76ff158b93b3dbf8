//! A [`Log`] shared between tasks, with group commit.
//!
//! Appends write under a short lock; durability is awaited outside it.
//! [`SharedLog::wait_durable`] lets one waiter at a time run `fdatasync` on
//! the active segment while the others queue: when the sync returns, every
//! write that was in the page cache when it started is durable, so each
//! queued waiter whose offset it covered returns without syncing again.
//! Many producers therefore share one fsync.
//!
//! A sync never waits for the log's lock: what to sync (the active
//! segment's file and the log end it covers) is published under the lock
//! by every operation that changes it, and read from a small lock of its
//! own. An append that rolls a segment, or a retention pass deleting
//! files, holds the log's lock through its own fsyncs; a waiter on an async
//! thread must not be held up behind them, and the `fdatasync` itself runs
//! on the blocking pool.
//!
//! The *high watermark* is the end of what is durable as configured: with
//! the default (sync before acknowledging) it only moves after an fsync;
//! with `flush.ms` it moves on write. Readers never see data above it, so a
//! consumer never reads a message that a crash could take back.
//!
//! A replicated partition lowers it further: its replication sets a
//! *replica floor* ([`SharedLog::set_replica_floor`]; on a leader the
//! least durable end among the in-sync followers, on a follower the
//! leader's high watermark), and the high watermark is the lesser of the
//! local durable end and the floor. Producers still wait for the local
//! durable end with [`SharedLog::wait_durable`]; readers see only the high
//! watermark.
//!
//! # Failures and healing
//!
//! A write that fails but is undone ([`LogError::WriteRolledBack`], e.g. a
//! full disk) leaves the log as it was: the next append simply tries again.
//!
//! A failed `fdatasync` (or a write that could not be undone, or a failed
//! roll) *poisons* the log: writes and syncs fail with
//! [`LogError::Poisoned`], because the page cache may hold bytes that will
//! never reach the disk (Linux forgets the dirty pages a failed fsync could
//! not write). The log heals itself without a restart: the next append or
//! sync after the poison (at most once per [`HEAL_RETRY_INTERVAL`], and only
//! when no sync is running) cuts the log back to the *durable end* — the
//! target of the last successful sync, below which everything is on disk
//! — with [`Log::truncate_to`], which syncs the cut. Everything above it
//! was never acknowledged as durable: its writers got (or will get) an
//! error. A writer that appended before the heal and waits afterwards gets
//! [`LogError::Truncated`] when its end offset is inside the cut range,
//! even if new data has filled those offsets since (a spurious failure is
//! safe, a false acknowledgement is not). A follower's truncation (KIP-101)
//! fails its waiters the same way; writes made after a cut are not
//! concerned by it ([`Written::truncations`]). With `flush.ms` the high watermark may
//! have passed the durable end; the heal lowers it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::log::{AppendInfo, Log, Written};
use crate::storage::FileHandle;

/// Told how long each successful `fdatasync` of a log took: the metrics
/// of the node that owns the log, given by whoever creates the
/// [`SharedLog`] (see [`SharedLog::observing_syncs`]), so this crate
/// depends on nobody and two nodes in one process count apart.
///
/// To ensure correctness: [`synced`](SyncObserver::synced) must be cheap
/// and must not block or fail; it runs on the syncing task before the
/// waiters are released.
pub trait SyncObserver: Send + Sync + std::fmt::Debug {
    /// One sync succeeded after `duration`.
    fn synced(&self, duration: Duration);
}

/// Least time between two attempts to heal a poisoned log, so a disk that
/// keeps failing is not hammered.
pub const HEAL_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A partition log safe to use from many tasks. All methods take `&self`.
#[derive(Debug)]
pub struct SharedLog {
    log: Mutex<Log>,
    /// End of what is durable as configured on this node.
    local_end: watch::Sender<u64>,
    /// What readers may see: the lesser of `local_end` and `replica_floor`.
    high_watermark: watch::Sender<u64>,
    /// Set by replication; `u64::MAX` when the log is not replicated.
    replica_floor: AtomicU64,
    /// The log end, published with every change (for a leader holding a
    /// follower's fetch).
    log_end: watch::Sender<u64>,
    /// Held while syncing or healing; holds when the last sync (by a waiter) ended.
    sync_turn: tokio::sync::Mutex<Option<Instant>>,
    poisoned: AtomicBool,
    closed: AtomicBool,
    /// Target of the last successful sync: every offset below is on disk.
    durable_end: AtomicU64,
    heal: Mutex<HealState>,
    /// Told the duration of every successful sync.
    sync_observer: Option<Arc<dyn SyncObserver>>,
    /// What a sync covers now, published under the log's lock.
    sync_target: Mutex<SyncTarget>,
}

/// What syncing makes durable, as of the last change to the log: the
/// active segment's file (sealed segments were synced when rolled), the
/// log end, and the settings that time syncs.
#[derive(Debug, Clone)]
struct SyncTarget {
    file: FileHandle,
    end_offset: u64,
    spacing: Option<Duration>,
    flush_interval: Option<Duration>,
}

impl SyncTarget {
    fn of(log: &Log) -> SyncTarget {
        let (file, end_offset) = log.sync_target();
        SyncTarget {
            file,
            end_offset,
            spacing: log.config().sync_spacing,
            flush_interval: log.config().flush_interval,
        }
    }
}

/// What healing remembers.
#[derive(Debug, Default)]
struct HealState {
    last_attempt: Option<Instant>,
    /// Every truncation that cut something.
    cuts: Vec<Cut>,
    /// Highest log end seen by a heal attempt since the last heal.
    end_before_cut: u64,
}

/// A truncation: a write made before it ([`Written::truncations`] below
/// `truncation`) ending in `from + 1..=to` cannot be confirmed.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// [`Log::truncations`] once it began.
    truncation: u64,
    from: u64,
    to: u64,
}

impl Cut {
    fn lost(&self, written: Written) -> bool {
        written.truncations < self.truncation
            && self.from < written.end_offset
            && written.end_offset <= self.to
    }
}

/// Offsets and sizes of a log at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// First offset stored.
    pub log_start_offset: u64,
    /// End of what is durable and readable.
    pub high_watermark: u64,
    /// Next offset to be written.
    pub log_end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

impl SharedLog {
    /// Wraps an opened log; everything recovered on open counts as durable.
    pub fn new(log: Log) -> SharedLog {
        let end = log.log_end_offset();
        let sync_target = Mutex::new(SyncTarget::of(&log));
        SharedLog {
            sync_target,
            log: Mutex::new(log),
            local_end: watch::Sender::new(end),
            high_watermark: watch::Sender::new(end),
            replica_floor: AtomicU64::new(u64::MAX),
            log_end: watch::Sender::new(end),
            sync_turn: tokio::sync::Mutex::new(None),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            durable_end: AtomicU64::new(end),
            heal: Mutex::new(HealState::default()),
            sync_observer: None,
        }
    }

    /// The same log, telling `observer` how long each successful sync took.
    pub fn observing_syncs<O: SyncObserver + 'static>(mut self, observer: Arc<O>) -> SharedLog {
        self.sync_observer = Some(observer);
        self
    }

    /// Appends batches (see [`Log::append`]) without waiting for durability.
    /// With `flush.ms` set, the high watermark moves at once.
    ///
    /// # Errors
    ///
    /// [`LogError::Poisoned`] (until the log heals) or [`LogError::Closed`];
    /// the errors of [`Log::append`]: [`LogError::WriteRolledBack`] leaves
    /// the log usable, [`LogError::Io`] poisons it.
    pub fn append(
        &self,
        batches: &[(BatchHeader, Bytes)],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let mut log = self.log.lock();
        self.check_writable_or_heal(&mut log)?;
        let result = log.append(batches, leader_epoch, now_ms);
        self.publish(&log);
        self.poison_on_io_error(&log, &result, "write");
        let info = result?;
        if log.config().flush_interval.is_some() {
            self.advance_local_end(info.last_offset + 1);
        }
        Ok(info)
    }

    /// Appends batches a leader sent, as they are: each keeps its base
    /// offset and leader epoch (a follower's log is a copy of its leader's).
    /// Returns the new log end.
    ///
    /// # Errors
    ///
    /// [`LogError::Replica`] when the batches do not start at this log's
    /// end or are malformed; otherwise as [`SharedLog::append`].
    pub fn append_replicated(&self, records: Bytes, now_ms: i64) -> Result<u64> {
        let batches = crate::batch::split_batches(records)
            .map_err(|error| LogError::Replica(error.to_string()))?;
        let mut log = self.log.lock();
        self.check_writable_or_heal(&mut log)?;
        let mut expected = log.log_end_offset();
        for (header, _) in &batches {
            if header.base_offset != expected {
                return Err(LogError::Replica(format!(
                    "a batch at offset {} where the log ends at {expected}",
                    header.base_offset
                )));
            }
            expected = header.last_offset() + 1;
        }
        for run in batches.chunk_by(|a, b| a.0.partition_leader_epoch == b.0.partition_leader_epoch)
        {
            let result = log.append(run, run[0].0.partition_leader_epoch, now_ms);
            self.publish(&log);
            self.poison_on_io_error(&log, &result, "write");
            result?;
        }
        if log.config().flush_interval.is_some() {
            self.advance_local_end(log.log_end_offset());
        }
        Ok(log.log_end_offset())
    }

    /// Cuts the log back to `offset` (a follower removing a suffix its
    /// leader does not have, KIP-101). Waits for a running sync; a producer
    /// waiting for an end offset in the cut range gets
    /// [`LogError::Truncated`].
    ///
    /// # Errors
    ///
    /// As [`Log::truncate_to`]; an I/O error poisons the log.
    pub async fn truncate_to(&self, offset: u64) -> Result<()> {
        self.truncate_to_if(offset, || true).await.map(|_| ())
    }

    /// As [`SharedLog::truncate_to`], if `still_wanted` holds once the log
    /// is locked — when no write can come between it and the cut. A
    /// follower's truncation waits (for a running sync, for its leader's
    /// answer); by then its node may lead and have acknowledged writes
    /// that the cut would take. Returns whether `still_wanted` held.
    ///
    /// # Errors
    ///
    /// As [`SharedLog::truncate_to`].
    pub async fn truncate_to_if(
        &self,
        offset: u64,
        still_wanted: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let _turn = self.sync_turn.lock().await;
        let mut log = self.log.lock();
        if !still_wanted() {
            return Ok(false);
        }
        let end = log.log_end_offset();
        if offset >= end {
            return Ok(true);
        }
        // Readers must not reach what is about to be cut.
        lower(&self.local_end, offset);
        lower(&self.high_watermark, offset);
        let result = log.truncate_to(offset);
        self.publish(&log);
        // Even a failed truncation may have cut part of the range.
        self.heal.lock().cuts.push(Cut {
            truncation: log.truncations(),
            from: offset,
            to: end,
        });
        self.poison_on_io_error(&log, &result, "truncation");
        result?;
        let durable = self
            .durable_end
            .load(Ordering::SeqCst)
            .min(log.log_end_offset());
        self.durable_end.store(durable, Ordering::SeqCst);
        Ok(true)
    }

    /// Empties the log and starts it at `offset` (see [`Log::restart_at`]);
    /// everything below counts as durable and committed.
    ///
    /// # Errors
    ///
    /// As [`Log::restart_at`]; an I/O error poisons the log.
    pub async fn restart_at(&self, offset: u64) -> Result<()> {
        self.restart_at_if(offset, || true).await.map(|_| ())
    }

    /// As [`SharedLog::restart_at`], if `still_wanted` holds once the log
    /// is locked (see [`SharedLog::truncate_to_if`]). Returns whether it held.
    ///
    /// # Errors
    ///
    /// As [`SharedLog::restart_at`].
    pub async fn restart_at_if(
        &self,
        offset: u64,
        still_wanted: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let _turn = self.sync_turn.lock().await;
        let mut log = self.log.lock();
        if !still_wanted() {
            return Ok(false);
        }
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let result = log.restart_at(offset);
        self.publish(&log);
        // Offsets the old log held are not the leader's: a waiter for them
        // must not be confirmed by what arrives at them now.
        self.heal.lock().cuts.push(Cut {
            truncation: log.truncations(),
            from: start.min(end),
            to: end,
        });
        self.poison_on_io_error(&log, &result, "restarting the log");
        result?;
        self.durable_end.store(offset, Ordering::SeqCst);
        for watermark in [&self.local_end, &self.high_watermark] {
            watermark.send_replace(offset);
        }
        Ok(true)
    }

    /// A wait for what the log holds now below `end_offset`: data written
    /// earlier and found again (a producer's retried batch).
    pub fn holding_below(&self, end_offset: u64) -> Written {
        Written {
            end_offset,
            truncations: self.log.lock().truncations(),
        }
    }

    /// Bounds the high watermark by `floor` (see the module docs); the high
    /// watermark never moves back because of it.
    pub fn set_replica_floor(&self, floor: u64) {
        self.replica_floor.store(floor, Ordering::SeqCst);
        self.advance_high_watermark();
    }

    /// Lowers the high watermark to `offset` if it is above. A replicated
    /// log opened after a crash counts everything it recovered as durable,
    /// yet only replication knows how much of it is committed (on every
    /// in-sync replica): its tail may be on no other replica, and a new
    /// leader may have replaced it. Replication raises it again.
    pub fn lower_high_watermark(&self, offset: u64) {
        lower(&self.high_watermark, offset);
    }

    /// The end of what is durable as configured on this node (the high
    /// watermark of an unreplicated log).
    pub fn local_end_offset(&self) -> u64 {
        *self.local_end.borrow()
    }

    /// The latest leader epoch written, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.lock().epochs().latest_epoch()
    }

    /// The largest epoch at or below `epoch` and the offset where it ends in
    /// this log (where the next epoch starts, or the log end): the answer
    /// to a follower's OffsetsForLeaderEpoch. `None` when the log has no
    /// epoch that old.
    pub fn epoch_end(&self, epoch: i32) -> Option<(i32, u64)> {
        let log = self.log.lock();
        log.epochs().end_offset_for(epoch, log.log_end_offset())
    }

    /// Waits until a write is durable as configured (immediately with
    /// `flush.ms`), syncing if nobody else is.
    ///
    /// # Errors
    ///
    /// [`LogError::Poisoned`] when a sync failed (until the log heals);
    /// [`LogError::Truncated`] when a truncation cut the write;
    /// [`LogError::Closed`].
    pub async fn wait_durable(&self, written: Written) -> Result<()> {
        loop {
            self.check_not_cut(written)?;
            if *self.local_end.borrow() >= written.end_offset {
                return Ok(());
            }
            let mut last_sync = self.sync_turn.lock().await;
            self.check_not_cut(written)?;
            if *self.local_end.borrow() >= written.end_offset {
                return Ok(());
            }
            let spacing = self.sync_target.lock().spacing;
            if let (Some(spacing), Some(last)) = (spacing, *last_sync) {
                tokio::time::sleep_until((last + spacing).into()).await;
            }
            self.sync_now().await?;
            *last_sync = Some(Instant::now());
        }
    }

    /// Waits until a write is durable here and below the high watermark
    /// (on a replicated log: on every in-sync replica). Waits as long as it
    /// takes; the caller bounds it.
    ///
    /// # Errors
    ///
    /// As [`SharedLog::wait_durable`]; [`LogError::Truncated`] when the
    /// write was cut (a follower's truncation) before it committed.
    pub async fn wait_committed(&self, written: Written) -> Result<()> {
        self.wait_durable(written).await?;
        let mut high_watermark = self.high_watermark.subscribe();
        loop {
            self.check_not_cut(written)?;
            if *high_watermark.borrow_and_update() >= written.end_offset {
                return Ok(());
            }
            if high_watermark.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    /// Syncs the active segment and moves the high watermark to what was
    /// written when the sync started. Callers hold `sync_turn`, or accept a
    /// redundant sync.
    async fn sync_now(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            // Rare (after a failed sync): the heal cuts the log under its lock.
            let mut log = self.log.lock();
            self.check_writable(&mut log, true)?;
        } else if self.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        let SyncTarget {
            file,
            end_offset: target,
            ..
        } = self.sync_target.lock().clone();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || file.sync_data()).await;
        match outcome {
            Ok(Ok(())) => {
                if let Some(observer) = &self.sync_observer {
                    observer.synced(started.elapsed());
                }
                self.durable_end.fetch_max(target, Ordering::SeqCst);
                self.advance_local_end(target);
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "fdatasync failed; log poisoned until healed");
                self.poisoned.store(true, Ordering::SeqCst);
                Err(LogError::Poisoned)
            }
            Err(join_error) => Err(LogError::Io(std::io::Error::other(join_error))),
        }
    }

    /// Syncs now (the periodic flush of `flush.ms` logs).
    ///
    /// # Errors
    ///
    /// As [`SharedLog::wait_durable`].
    pub async fn flush(&self) -> Result<()> {
        let _last_sync = self.sync_turn.lock().await;
        self.sync_now().await
    }

    /// Publishes what a sync covers; called with the log's lock held after
    /// every change to the active segment or the log end.
    fn publish(&self, log: &Log) {
        *self.sync_target.lock() = SyncTarget::of(log);
        self.log_end.send_if_modified(|end| {
            let changed = *end != log.log_end_offset();
            *end = log.log_end_offset();
            changed
        });
    }

    /// A receiver that sees every change of the log end.
    pub fn watch_log_end(&self) -> watch::Receiver<u64> {
        self.log_end.subscribe()
    }

    /// Whether the log was closed or deleted.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn advance_local_end(&self, offset: u64) {
        self.local_end.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
        self.advance_high_watermark();
    }

    /// Moves the high watermark up to the lesser of the local end and the
    /// replica floor.
    fn advance_high_watermark(&self) {
        let offset = (*self.local_end.borrow()).min(self.replica_floor.load(Ordering::SeqCst));
        self.high_watermark.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
    }

    /// Fails when closed, or when poisoned and not healed now. The caller
    /// holds the log's lock, and `may_heal` only while holding `sync_turn`.
    fn check_writable(&self, log: &mut Log, may_heal: bool) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        if may_heal && self.heal_attempt_due() && self.heal(log) {
            return Ok(());
        }
        Err(LogError::Poisoned)
    }

    /// [`SharedLog::check_writable`] for a caller not holding `sync_turn`:
    /// healing must not race a sync (one running now would confirm what the
    /// heal cuts), so it heals only if no sync runs, rather than wait.
    fn check_writable_or_heal(&self, log: &mut Log) -> Result<()> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return self.check_writable(log, false);
        }
        let turn = self.sync_turn.try_lock().ok();
        self.check_writable(log, turn.is_some())
    }

    fn heal_attempt_due(&self) -> bool {
        let mut heal = self.heal.lock();
        let due = heal
            .last_attempt
            .is_none_or(|last| last.elapsed() >= HEAL_RETRY_INTERVAL);
        if due {
            heal.last_attempt = Some(Instant::now());
        }
        due
    }

    /// Cuts the log back to the durable end and clears the poison; false
    /// when the cut failed (the log stays poisoned).
    fn heal(&self, log: &mut Log) -> bool {
        // With `flush.ms`, retention may have deleted segments above the
        // durable end (they were below the high watermark): nothing to cut there.
        let durable = self
            .durable_end
            .load(Ordering::SeqCst)
            .max(log.log_start_offset());
        self.durable_end.fetch_max(durable, Ordering::SeqCst);
        let size = log.size_bytes();
        // A failed attempt may have cut part of the log already: the cut
        // range reaches the end the log had before the first attempt.
        let end = {
            let mut heal = self.heal.lock();
            heal.end_before_cut = heal.end_before_cut.max(log.log_end_offset());
            heal.end_before_cut
        };
        // Readers must not reach what is about to be cut, even if the cut
        // fails half-way (with `flush.ms` they may have been above it).
        lower(&self.local_end, durable);
        lower(&self.high_watermark, durable);
        if let Err(error) = log.truncate_to(durable) {
            self.publish(log);
            tracing::error!(dir = %log.dir().display(), %error, durable_offset = durable, "healing after a failed sync failed; log stays poisoned");
            return false;
        }
        self.publish(log);
        let bytes_cut = size.saturating_sub(log.size_bytes());
        let mut heal = self.heal.lock();
        heal.last_attempt = None;
        heal.end_before_cut = 0;
        if end > durable {
            heal.cuts.push(Cut {
                truncation: log.truncations(),
                from: durable,
                to: end,
            });
        }
        drop(heal);
        self.poisoned.store(false, Ordering::SeqCst);
        tracing::warn!(
            dir = %log.dir().display(),
            bytes_cut,
            durable_offset = durable,
            cut_log_end_offset = end,
            "healed after a failed sync: cut {bytes_cut} bytes above durable offset {durable}"
        );
        true
    }

    /// Poisons the log after an I/O error of `what` (see the module docs).
    fn poison_on_io_error<T>(&self, log: &Log, result: &Result<T>, what: &str) {
        if let Err(LogError::Io(error)) = result {
            tracing::error!(dir = %log.dir().display(), %error, "{what} failed; log poisoned until healed");
            self.poisoned.store(true, Ordering::SeqCst);
        }
    }

    /// Fails a wait for a write that a truncation cut (see the module docs).
    fn check_not_cut(&self, written: Written) -> Result<()> {
        if self.heal.lock().cuts.iter().any(|cut| cut.lost(written)) {
            return Err(LogError::Truncated {
                end_offset: written.end_offset,
            });
        }
        Ok(())
    }

    /// Heals a poisoned log now, without waiting for the next append or
    /// [`HEAL_RETRY_INTERVAL`]. Returns whether the log is writable.
    pub async fn try_heal(&self) -> bool {
        let _turn = self.sync_turn.lock().await;
        let mut log = self.log.lock();
        if !self.poisoned.load(Ordering::SeqCst) {
            return true;
        }
        self.heal(&mut log)
    }

    /// Every fenced range of the log (see [`Log::corrupt_ranges`]), for a metric.
    pub fn corrupt_ranges(&self) -> Vec<crate::segment::CorruptRange> {
        self.log.lock().corrupt_ranges()
    }

    /// Whether the log refuses writes until it heals.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Offset below which every write is on disk (the last successful sync's target).
    pub fn durable_end_offset(&self) -> u64 {
        self.durable_end.load(Ordering::SeqCst)
    }

    /// Reads whole batches from `offset` up to `max_bytes` (at least one
    /// batch), never past the high watermark. Empty at the high watermark.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] outside `[log_start, log_end]`; I/O errors.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes> {
        self.read_below(offset, max_bytes, u64::MAX)
    }

    /// As [`SharedLog::read`], stopping also before the batch that reaches
    /// `end_offset` (the last stable offset of a read_committed consumer).
    ///
    /// # Errors
    ///
    /// As [`SharedLog::read`].
    pub fn read_below(&self, offset: u64, max_bytes: usize, end_offset: u64) -> Result<Bytes> {
        let end_offset = end_offset.min(*self.high_watermark.borrow());
        let cursor = {
            let log = self.log.lock();
            if offset >= end_offset && offset <= log.log_end_offset() {
                return Ok(Bytes::new());
            }
            log.cursor(offset)?
        };
        match cursor {
            Some(cursor) => self.fence_if_corrupt(cursor.read(max_bytes, end_offset)),
            None => Ok(Bytes::new()),
        }
    }

    /// Reads whole batches from `offset` up to `max_bytes`, including what
    /// is written but not yet durable. For queues, which (like RabbitMQ)
    /// deliver before the sync that confirms to the publisher: a caller must
    /// tolerate such data vanishing after a power loss.
    ///
    /// # Errors
    ///
    /// As [`SharedLog::read`].
    pub fn read_unsynced(&self, offset: u64, max_bytes: usize) -> Result<Bytes> {
        let cursor = {
            let log = self.log.lock();
            if offset == log.log_end_offset() {
                return Ok(Bytes::new());
            }
            log.cursor(offset)?
        };
        match cursor {
            Some(cursor) => self.fence_if_corrupt(cursor.read(max_bytes, u64::MAX)),
            None => Ok(Bytes::new()),
        }
    }

    /// See [`Log::offset_after_damage`].
    pub fn offset_after_damage(&self, offset: u64) -> Option<u64> {
        self.log.lock().offset_after_damage(offset)
    }

    /// Fences damage a read ran into (see [`Log::fence_damage`]), so it is
    /// counted in [`Log::corrupt_ranges`] and later reads of other offsets
    /// step over it. The read's error is returned either way.
    fn fence_if_corrupt(&self, read: Result<Bytes>) -> Result<Bytes> {
        if let Err(LogError::Corrupt {
            segment_base_offset,
            position,
            ..
        }) = &read
        {
            let mut log = self.log.lock();
            if let Err(error) = log.fence_damage(*segment_base_offset, *position) {
                tracing::error!(dir = %log.dir().display(), %error, "could not fence damage found by a read");
            }
        }
        read
    }

    /// Offsets and size now.
    pub fn offsets(&self) -> LogOffsets {
        let high_watermark = *self.high_watermark.borrow();
        let log = self.log.lock();
        LogOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark,
            log_end_offset: log.log_end_offset(),
            size_bytes: log.size_bytes(),
        }
    }

    /// A receiver that sees every move of the high watermark (for long polls).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// The first batch whose max timestamp is `>= timestamp`, if it is below
    /// the high watermark.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn batch_at_or_after_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>> {
        let high_watermark = *self.high_watermark.borrow();
        let batch = self.log.lock().batch_at_or_after_timestamp(timestamp)?;
        Ok(batch.filter(|bytes| {
            BatchHeader::parse(bytes).is_ok_and(|header| header.last_offset() < high_watermark)
        }))
    }

    /// Applies retention (see [`Log::apply_retention`]).
    ///
    /// # Errors
    ///
    /// I/O errors deleting segments.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let high_watermark = *self.high_watermark.borrow();
        let mut log = self.log.lock();
        let result = log.apply_retention(now_ms, high_watermark);
        self.publish(&log);
        result
    }

    /// Seals the active segment and starts a new one (see [`Log::roll`]).
    ///
    /// # Errors
    ///
    /// As [`Log::roll`]; [`LogError::Io`] poisons the log until it heals.
    pub fn roll(&self) -> Result<()> {
        let mut log = self.log.lock();
        self.check_writable_or_heal(&mut log)?;
        let result = log.roll();
        self.publish(&log);
        self.poison_on_io_error(&log, &result, "roll");
        result
    }

    /// Deletes sealed segments that end at or below `offset`, never past
    /// the high watermark (see [`Log::delete_segments_below`]).
    ///
    /// # Errors
    ///
    /// I/O errors deleting files.
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        let high_watermark = *self.high_watermark.borrow();
        self.log
            .lock()
            .delete_segments_below(offset.min(high_watermark))
    }

    /// The current settings.
    pub fn config(&self) -> LogConfig {
        self.log.lock().config().clone()
    }

    /// The `flush.ms` interval, read without waiting for the log's lock
    /// (which a roll or a retention pass may hold through fsyncs).
    pub fn flush_interval(&self) -> Option<Duration> {
        self.sync_target.lock().flush_interval
    }

    /// Replaces the settings; they apply from the next append, sync or
    /// retention pass.
    pub fn set_config(&self, config: LogConfig) {
        let mut log = self.log.lock();
        log.set_config(config);
        self.publish(&log);
    }

    /// Runs `f` with the log locked (tests and tools).
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.log.lock())
    }

    /// Syncs and checkpoints for a clean shutdown; writes fail afterwards.
    ///
    /// # Errors
    ///
    /// I/O errors; the next open then recovers instead of trusting the checkpoint.
    /// [`LogError::Poisoned`] when the log is poisoned and a last attempt to
    /// heal it fails.
    pub fn close(&self) -> Result<()> {
        let mut log = self.log.lock();
        // A last heal, so the checkpoint never vouches for unsynced bytes.
        let writable = self.check_writable_or_heal(&mut log);
        self.closed.store(true, Ordering::SeqCst);
        writable?;
        log.close()
    }

    /// Closes the log and removes its directory.
    ///
    /// # Errors
    ///
    /// I/O errors removing files.
    pub fn delete(&self) -> Result<()> {
        let log = self.log.lock();
        self.closed.store(true, Ordering::SeqCst);
        match log.storage().remove_dir_all(log.dir()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }
}

/// Moves a watermark down to `offset`, never up.
fn lower(watermark: &watch::Sender<u64>, offset: u64) {
    watermark.send_if_modified(|current| {
        let lowered = *current > offset;
        *current = (*current).min(offset);
        lowered
    });
}
